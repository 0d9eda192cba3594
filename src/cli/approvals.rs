//! `countersign approvals ...`: the approvers' client for the admin API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::table::{Cell, Colour, Column, Layout, Table, ellipsize, paint};
use crate::admin::pb::{self, approvals_client::ApprovalsClient};
use crate::clock::rfc3339;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign approvals list
  countersign approvals approve ap-5f1c2e9a0b7d4c31 --reason 'quarterly report, ticket OPS-42'
  countersign approvals list --admin https://127.0.0.1:9192 --ca dev-certs/ca.pem \\
      --cert dev-certs/dora.pem --key dev-certs/dora-key.pem

Connection flags may be set once in the environment instead (COUNTERSIGN_ADMIN_ADDR,
COUNTERSIGN_ADMIN_CA, COUNTERSIGN_ADMIN_CERT, COUNTERSIGN_ADMIN_KEY, COUNTERSIGN_ADMIN_TOKEN);
`countersign dev-certs` prints them for its certificates.

Tables fit the terminal: when stdout is a terminal, no line is longer than its width
(or COLUMNS, if set), the widest free-text cells ending in `…`. When stdout is not a
terminal, cells are cut only if COLUMNS is set. Colour only on a terminal, and not when
NO_COLOR is set. `--output json` is never cut nor coloured: use it in scripts.")]
pub struct ApprovalsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Debug, Args)]
struct Connection {
    /// Admin API address.
    #[arg(
        long,
        global = true,
        env = "COUNTERSIGN_ADMIN_ADDR",
        default_value = "https://127.0.0.1:9192"
    )]
    admin: String,
    /// CA certificate (PEM) that signed the admin API's certificate.
    #[arg(long, global = true, env = "COUNTERSIGN_ADMIN_CA", value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Your client certificate (PEM); your approver name is its CN.
    #[arg(
        long,
        global = true,
        env = "COUNTERSIGN_ADMIN_CERT",
        value_name = "PEM"
    )]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, env = "COUNTERSIGN_ADMIN_KEY", value_name = "PEM")]
    key: Option<PathBuf>,
    /// A bearer token from the server's configuration, instead of a certificate.
    #[arg(
        long,
        global = true,
        env = "COUNTERSIGN_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Output format: `table` for people, `json` for scripts (never cut, never coloured).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// List approval requests, newest first.
    #[command(after_help = r#"Examples:
  countersign approvals list
  countersign approvals list --status all --action 'Action::"export"' --output json
  COLUMNS=100 countersign approvals list --principal 'User::"agent-7"' | less

The table fits the terminal's width (COLUMNS overrides it); piped, it is cut only if
COLUMNS is set. Use --output json for scripts."#)]
    List {
        /// pending, approved, denied, revoked, consumed, expired or all.
        #[arg(
            long,
            default_value = "pending",
            value_parser = ["pending", "approved", "denied", "revoked", "consumed", "expired", "all"]
        )]
        status: String,
        /// Only this principal, e.g. 'User::"agent-7"'.
        #[arg(long)]
        principal: Option<String>,
        /// Only this action, e.g. 'Action::"export"'.
        #[arg(long)]
        action: Option<String>,
        /// At most this many requests.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one request in full.
    #[command(after_help = "Examples:
  countersign approvals show ap-5f1c2e9a0b7d4c31
  countersign approvals show ap-5f1c2e9a0b7d4c31 --output json

Every value is printed in full, whatever the width.")]
    Show {
        /// The request's id, as `countersign approvals list` shows it.
        id: String,
    },
    /// Approve a request (counts towards its quorum).
    #[command(after_help = "Examples:
  countersign approvals approve ap-5f1c2e9a0b7d4c31 --reason 'quarterly report, ticket OPS-42'
  countersign approvals approve ap-5f1c2e9a0b7d4c31 --token \"$APPROVER_TOKEN\"")]
    Approve {
        /// The request's id, as `countersign approvals list` shows it.
        id: String,
        /// Why; required when the guarding policy says so.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a request; one deny ends it.
    #[command(after_help = "Examples:
  countersign approvals deny ap-5f1c2e9a0b7d4c31 --reason 'not during the freeze'
  countersign approvals deny ap-5f1c2e9a0b7d4c31 --reason 'wrong dataset' --output json")]
    Deny {
        /// The request's id, as `countersign approvals list` shows it.
        id: String,
        /// Why; shown to the requester and kept in the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw an approved request that still has uses left.
    #[command(after_help = "Examples:
  countersign approvals revoke ap-5f1c2e9a0b7d4c31 --reason 'approved by mistake'
  countersign approvals list --status approved")]
    Revoke {
        /// The request's id, as `countersign approvals list --status approved` shows it.
        id: String,
        /// Why; kept in the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print requests and decisions as they happen.
    #[command(after_help = "Examples:
  countersign approvals watch
  countersign approvals watch --output json

On a terminal each line fits its width (COLUMNS overrides it), the request's
principal, action and resource ending in `…` when cut.")]
    Watch,
}

pub fn run(args: ApprovalsArgs) -> ExitCode {
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Adds the bearer token, if any, to every call.
type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Client =
    ApprovalsClient<tonic::service::interceptor::InterceptedService<Channel, Interceptor>>;

/// Where to fix a connection setting: the flag and its environment variable.
const ADMIN: &str = "--admin (or COUNTERSIGN_ADMIN_ADDR)";
const CA: &str = "--ca (or COUNTERSIGN_ADMIN_CA)";
const CERT: &str = "--cert (or COUNTERSIGN_ADMIN_CERT)";
const KEY: &str = "--key (or COUNTERSIGN_ADMIN_KEY)";
const TOKEN: &str = "--token (or COUNTERSIGN_ADMIN_TOKEN)";

async fn connect(c: &Connection) -> Result<Client, String> {
    // A bare `host:port` (as `admin.listen` is written) means TLS.
    let addr = if c.admin.contains("://") {
        c.admin.clone()
    } else {
        format!("https://{}", c.admin)
    };
    let mut endpoint = Channel::from_shared(addr.clone()).map_err(|_| {
        format!(
            "--admin `{}` is not an address: give `host:port` or `https://host:port` (it may come from COUNTERSIGN_ADMIN_ADDR)",
            c.admin
        )
    })?;
    if addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match &c.ca {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, Pem::Ca)?)),
            None => {
                return Err(format!(
                    "the admin API's certificate cannot be trusted without its CA: give {CA} with the CA certificate that signed `admin.tls_cert` (`ca.pem` from `countersign dev-certs`)"
                ));
            }
        }
        match (&c.cert, &c.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read_pem(cert, Pem::Cert)?,
                    read_pem(key, Pem::Key)?,
                ));
            }
            (Some(_), None) => {
                return Err(format!("--cert needs its private key: give {KEY} as well"));
            }
            (None, Some(_)) => {
                return Err(format!("--key needs its certificate: give {CERT} as well"));
            }
            (None, None) => {}
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| {
            format!(
                "cannot set up TLS for the admin API ({}): check the files given with {CA}, {CERT} and {KEY}",
                causes(&e)
            )
        })?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| cannot_reach(&c.admin, c.ca.as_deref(), &causes(&e)))?;
    let bearer = match &c.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<tonic::metadata::MetadataValue<_>>()
                .map_err(|_| {
                    format!(
                        "{TOKEN} holds characters an HTTP header cannot carry (a line break?): copy the token again"
                    )
                })?,
        ),
        None => None,
    };
    let interceptor: Interceptor = Box::new(move |mut req: tonic::Request<()>| {
        if let Some(b) = &bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    });
    Ok(ApprovalsClient::with_interceptor(channel, interceptor))
}

/// An error and its sources as one line, each cause once.
fn causes(e: &dyn std::error::Error) -> String {
    with_causes(e.to_string(), e.source())
}

/// `text`, then each of `cause` and its sources that it does not already
/// say.
fn with_causes(mut text: String, mut cause: Option<&dyn std::error::Error>) -> String {
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(&format!(": {c_text}"));
        }
        cause = c.source();
    }
    text
}

/// Why the admin API at `admin` could not be reached, and what to check.
fn cannot_reach(admin: &str, ca: Option<&std::path::Path>, cause: &str) -> String {
    let lower = cause.to_ascii_lowercase();
    let ca = ca.map_or_else(String::new, |p| format!(" `{}`", p.display()));
    let what = if lower.contains("connection refused") {
        format!(
            "nothing listens there: start `countersign serve` with `admin.listen` set (or COUNTERSIGN_ADMIN_LISTEN), or point {ADMIN} at where it listens"
        )
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("badsignature")
    {
        format!(
            "its certificate is not signed by --ca{ca}: give {CA} with the CA that signed the sidecar's `admin.tls_cert`"
        )
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        format!(
            "its certificate does not name the host in --admin `{admin}`: connect by a name or address the certificate carries (`countersign dev-certs` issues it for `localhost` and `127.0.0.1`), or reissue `admin.tls_cert` for this one"
        )
    } else if lower.contains("expired") || lower.contains("notvalidyet") {
        "its certificate is expired or not yet valid: renew the sidecar's `admin.tls_cert` (or check this machine's clock)".to_owned()
    } else if lower.contains("invalidcontenttype")
        || lower.contains("corrupt message")
        || lower.contains("wrong version number")
    {
        format!(
            "it does not speak TLS there: check that {ADMIN} names the admin API (`admin.listen`), not the ext_authz or metrics port"
        )
    } else if lower.contains("failed to lookup")
        || lower.contains("name or service not known")
        || lower.contains("dns error")
    {
        format!("its host name does not resolve: check {ADMIN}")
    } else if lower.contains("timed out") {
        format!("no answer in time: check {ADMIN} and any firewall in between")
    } else {
        format!(
            "check that `countersign serve` runs with `admin.listen` set and that {ADMIN} points at it"
        )
    };
    format!("cannot reach the admin API at `{admin}` ({cause}): {what}")
}

/// What a PEM file given on the command line must hold.
#[derive(Debug, Clone, Copy)]
enum Pem {
    Ca,
    Cert,
    Key,
}

impl Pem {
    fn flag(self) -> &'static str {
        match self {
            Pem::Ca => CA,
            Pem::Cert => CERT,
            Pem::Key => KEY,
        }
    }
}

/// The file, checked to hold what the flag expects, so that a swapped or
/// empty file is named here rather than as a failed handshake.
fn read_pem(path: &std::path::Path, kind: Pem) -> Result<Vec<u8>, String> {
    let flag = kind.flag();
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_owned(),
            std::io::ErrorKind::PermissionDenied => {
                "is not readable by you (permission denied)".to_owned()
            }
            std::io::ErrorKind::IsADirectory => "is a directory, not a PEM file".to_owned(),
            _ => format!("cannot be read ({e})"),
        };
        format!("{flag}: `{shown}` {why}: check the path")
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let ok = match kind {
        Pem::Ca | Pem::Cert => text.contains("-----BEGIN CERTIFICATE-----"),
        Pem::Key => text.contains("PRIVATE KEY-----"),
    };
    if !ok {
        let hint = match kind {
            Pem::Ca => {
                "the CA certificate that signed the admin API's certificate, e.g. `ca.pem` from `countersign dev-certs`"
            }
            Pem::Cert => {
                "your client certificate, e.g. `dora.pem` from `countersign dev-certs --approver dora`"
            }
            Pem::Key => {
                "the private key of --cert, e.g. `dora-key.pem` from `countersign dev-certs --approver dora`"
            }
        };
        let holds = match kind {
            Pem::Ca | Pem::Cert => "no PEM certificate",
            Pem::Key => "no PEM private key",
        };
        return Err(format!("{flag}: `{shown}` holds {holds}: give {hint}"));
    }
    Ok(bytes)
}

/// A gRPC error as a sentence that says what to do. `id` is the request
/// the call was about, if any.
fn explain(s: tonic::Status, id: Option<&str>) -> String {
    use tonic::Code;
    let what = match s.code() {
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::FailedPrecondition => "cannot do that now",
        Code::AlreadyExists => "already done",
        Code::InvalidArgument => "invalid request",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "no answer in time",
        _ => "error",
    };
    // A failed connection surfaces as "transport error"; what is known of
    // the cause is only in the source chain.
    let mut text = with_causes(
        format!("{what}: {}", s.message()),
        std::error::Error::source(&s),
    );
    let show = id.map_or_else(
        || "`countersign approvals list --status all`".to_owned(),
        |id| format!("`countersign approvals show {id}`"),
    );
    let hint = if text.contains("h2 protocol error") {
        // A plaintext client talking to the TLS port.
        Some(format!(
            "the admin API speaks TLS: give {ADMIN} as `https://host:port` or `host:port`"
        ))
    } else if text.contains("transport error") {
        // A server that refuses a client certificate under TLS 1.3 just
        // closes the connection, so the client cannot say more than this.
        Some(format!(
            "check that {ADMIN} is the admin API, that {CA} is the CA of its certificate, and that {CERT} is signed by the CA in its `admin.client_ca`"
        ))
    } else if text.contains("--") {
        // The server's message already names the flag to use.
        None
    } else {
        match s.code() {
            Code::Unauthenticated if s.message().contains("bearer token") => Some(format!(
                "check {TOKEN} against the `token_sha256` of your entry in the sidecar's `admin.approvers`, or use --cert and --key"
            )),
            Code::Unauthenticated => Some(format!(
                "authenticate with {CERT} and {KEY}, a certificate whose CN is your approver name, or with {TOKEN}"
            )),
            Code::PermissionDenied => Some(format!(
                "ask an approver who may decide it: {show} names the groups; who is in which group is set in the sidecar's `admin.approvers`, who may approve what by policies on `Action::\"approve\"`"
            )),
            Code::NotFound => Some(
                "check the id: `countersign approvals list --status all` shows the requests still kept"
                    .to_owned(),
            ),
            Code::FailedPrecondition | Code::AlreadyExists => {
                Some(format!("see where it stands with {show}"))
            }
            Code::InvalidArgument => {
                Some("see `countersign approvals --help` for the arguments".to_owned())
            }
            Code::Unavailable => Some(
                "the sidecar cannot reach its approval store: check that Redis is up and the sidecar's `redis.url`, then try again"
                    .to_owned(),
            ),
            Code::DeadlineExceeded => {
                Some("try again; if it persists, check the sidecar's log".to_owned())
            }
            _ => None,
        }
    };
    if let Some(h) = hint {
        text.push_str("; ");
        text.push_str(&h);
    }
    text
}

async fn execute(args: ApprovalsArgs) -> Result<(), String> {
    let out = args.conn.output;
    // Tables and lines for people; JSON is never cut nor coloured.
    let layout = match out {
        Output::Table => Layout::stdout(),
        Output::Json => Layout::PLAIN,
    };
    let mut client = connect(&args.conn).await?;
    match args.command {
        ApprovalsCommand::List {
            status,
            principal,
            action,
            limit,
        } => {
            let req = pb::ListRequest {
                status,
                principal: principal.unwrap_or_default(),
                action: action.unwrap_or_default(),
                limit,
            };
            let list = client
                .list(req)
                .await
                .map_err(|s| explain(s, None))?
                .into_inner()
                .approvals;
            match out {
                Output::Json => println!("{}", Value::Array(list.iter().map(to_json).collect())),
                Output::Table => print_table(&list, layout),
            }
        }
        ApprovalsCommand::Show { id } => {
            let a = client
                .get(pb::GetRequest { id: id.clone() })
                .await
                .map_err(|s| explain(s, Some(&id)))?
                .into_inner();
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Approve { id, reason } => {
            let a = client
                .approve(pb::DecideRequest {
                    id: id.clone(),
                    reason,
                })
                .await
                .map_err(|s| explain(s, Some(&id)))?
                .into_inner();
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Deny { id, reason } => {
            let a = client
                .deny(pb::DecideRequest {
                    id: id.clone(),
                    reason,
                })
                .await
                .map_err(|s| explain(s, Some(&id)))?
                .into_inner();
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Revoke { id, reason } => {
            let a = client
                .revoke(pb::DecideRequest {
                    id: id.clone(),
                    reason,
                })
                .await
                .map_err(|s| explain(s, Some(&id)))?
                .into_inner();
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Watch => {
            let mut stream = client
                .watch(pb::WatchRequest {})
                .await
                .map_err(|s| explain(s, None))?
                .into_inner();
            while let Some(ev) = stream.message().await.map_err(|s| explain(s, None))? {
                let Some(a) = ev.approval else { continue };
                match out {
                    Output::Json => {
                        println!("{}", json!({"event": ev.kind, "approval": to_json(&a)}))
                    }
                    Output::Table => println!("{}", watch_line(&ev.kind, &a, layout)),
                }
            }
        }
    }
    Ok(())
}

/// The colour of a status on a terminal.
fn status_colour(status: &str) -> Option<Colour> {
    match status {
        "pending" => Some(Colour::Yellow),
        "approved" => Some(Colour::Green),
        "denied" | "revoked" => Some(Colour::Red),
        "consumed" | "expired" => Some(Colour::Dim),
        _ => None,
    }
}

/// One event of `watch`: event, id and status whole; the rest (principal,
/// action, resource) cut to the width, if one applies.
fn watch_line(kind: &str, a: &pb::Approval, layout: Layout) -> String {
    let head = format!("{kind:<10} {}  ", a.id);
    let tail = format!("  {} {} on {}", a.principal, a.action, a.resource);
    let fixed = head.chars().count() + a.status.chars().count();
    match layout.width {
        // Not even the id fits: the whole line, cut, without colour.
        Some(w) if fixed + 2 > w => ellipsize(&format!("{head}{}{tail}", a.status), w),
        Some(w) => format!(
            "{head}{}{}",
            paint(&a.status, status_colour(&a.status), layout),
            ellipsize(&tail, w - fixed)
        ),
        None => format!(
            "{head}{}{tail}",
            paint(&a.status, status_colour(&a.status), layout)
        ),
    }
}

/// One request, every value in full: an approver decides on these details.
fn print_one(a: &pb::Approval, out: Output, layout: Layout) {
    if out == Output::Json {
        println!("{}", to_json(a));
        return;
    }
    let row = |k: &str, v: &str| println!("{k:<15} {v}");
    row("id", &a.id);
    row(
        "status",
        &paint(&a.status, status_colour(&a.status), layout),
    );
    row("principal", &a.principal);
    if !a.on_behalf_of.is_empty() {
        row("on behalf of", &a.on_behalf_of);
    }
    row("action", &a.action);
    row("resource", &a.resource);
    row(
        "request",
        &format!(
            "{} {} (host {}, from {})",
            a.method, a.path, a.host, a.source_address
        ),
    );
    for (k, v) in &a.parameters {
        row("parameter", &format!("{k} = {v}"));
    }
    row("policies", &a.policies.join(", "));
    let groups = if a.approver_groups.is_empty() {
        "any permitted approver".to_owned()
    } else {
        a.approver_groups.join(", ")
    };
    row(
        "approvers",
        &format!(
            "{} of {groups}{}",
            a.quorum,
            if a.reason_required {
                " (reason required)"
            } else {
                ""
            }
        ),
    );
    row("mode", &a.mode);
    row("created", &rfc3339(a.created_at));
    row("expires", &rfc3339(a.expires_at));
    if a.use_until > 0 {
        row(
            "usable until",
            &format!("{} ({} use(s) left)", rfc3339(a.use_until), a.uses_left),
        );
    }
    for v in &a.votes {
        let why = if v.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", v.reason)
        };
        row(
            "decision",
            &format!("{} by {} at {}{why}", v.verdict, v.approver, rfc3339(v.at)),
        );
    }
}

fn print_table(list: &[pb::Approval], layout: Layout) {
    if list.is_empty() {
        println!("no approval requests");
        return;
    }
    let column = |title, free_text| Column { title, free_text };
    // Ids and statuses stay whole (an id is what the next command needs);
    // the entities give way when the width is short.
    let mut table = Table::new(vec![
        column("ID", false),
        column("STATUS", false),
        column("PRINCIPAL", true),
        column("ACTION", true),
        column("RESOURCE", true),
        column("APPROVALS", false),
    ]);
    for a in list {
        let votes = a.votes.iter().filter(|v| v.verdict == "approve").count();
        table.push(vec![
            a.id.clone().into(),
            Cell {
                text: a.status.clone(),
                colour: status_colour(&a.status),
            },
            a.principal.clone().into(),
            a.action.clone().into(),
            a.resource.clone().into(),
            format!("{votes}/{}", a.quorum).into(),
        ]);
    }
    let mut out = std::io::stdout().lock();
    for line in table.render(layout) {
        if writeln!(out, "{line}").is_err() {
            return; // stdout closed (| head): done.
        }
    }
}

fn to_json(a: &pb::Approval) -> Value {
    json!({
        "id": a.id, "status": a.status, "principal": a.principal,
        "on_behalf_of": (!a.on_behalf_of.is_empty()).then_some(&a.on_behalf_of),
        "action": a.action, "resource": a.resource, "method": a.method, "path": a.path,
        "host": a.host, "source_address": a.source_address, "policies": a.policies,
        "parameters": a.parameters, "created_at": rfc3339(a.created_at), "expires_at": rfc3339(a.expires_at),
        "use_until": (a.use_until > 0).then(|| rfc3339(a.use_until)), "uses_left": a.uses_left,
        "quorum": a.quorum, "approver_groups": a.approver_groups, "reason_required": a.reason_required,
        "mode": a.mode,
        "votes": a.votes.iter().map(|v| json!({"approver": v.approver, "verdict": v.verdict, "reason": v.reason, "at": rfc3339(v.at)})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval() -> pb::Approval {
        pb::Approval {
            id: "ap-5f1c2e9a0b7d4c31".into(),
            status: "pending".into(),
            principal: r#"User::"agent-7""#.into(),
            action: r#"Action::"export""#.into(),
            resource: r#"Dataset::"quarterly-sales""#.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_line_is_unchanged_without_a_width_and_fits_one() {
        let a = approval();
        assert_eq!(
            watch_line("opened", &a, Layout::PLAIN),
            format!(
                "{:<10} {}  {}  {} {} on {}",
                "opened", a.id, a.status, a.principal, a.action, a.resource
            )
        );
        for width in [10, 30, 45, 60] {
            let layout = Layout {
                width: Some(width),
                colour: false,
            };
            let line = watch_line("opened", &a, layout);
            assert!(line.chars().count() <= width, "{width}: {line}");
            assert!(line.ends_with('…'), "{width}: {line}");
            if width >= 45 {
                assert!(line.contains("ap-5f1c2e9a0b7d4c31  pending"), "{line}");
            }
        }
        let coloured = Layout {
            width: Some(60),
            colour: true,
        };
        assert!(watch_line("opened", &a, coloured).contains("\x1b[33mpending\x1b[0m"));
    }
}
