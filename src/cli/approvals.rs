//! `countersign approvals ...`: the approvers' client for the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::admin::pb::{self, approvals_client::ApprovalsClient};
use crate::authz::rfc3339;

#[derive(Debug, Args)]
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
    /// Output format.
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
    #[command(
        after_help = "Examples:\n  countersign approvals list\n  countersign approvals list --status all --action 'Action::\"export\"' --output json"
    )]
    List {
        /// pending, approved, denied, revoked, consumed, expired or all.
        #[arg(long, default_value = "pending")]
        status: String,
        /// Only this principal, e.g. 'User::"agent-7"'.
        #[arg(long)]
        principal: Option<String>,
        /// Only this action, e.g. 'Action::"export"'.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one request in full.
    #[command(after_help = "Example:\n  countersign approvals show ap-5f1c2e9a0b7d4c31")]
    Show { id: String },
    /// Approve a request (counts towards its quorum).
    #[command(
        after_help = "Example:\n  countersign approvals approve ap-5f1c2e9a0b7d4c31 --reason 'quarterly report, ticket OPS-42'"
    )]
    Approve {
        id: String,
        /// Why; required when the guarding policy says so.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a request; one deny ends it.
    #[command(
        after_help = "Example:\n  countersign approvals deny ap-5f1c2e9a0b7d4c31 --reason 'not during the freeze'"
    )]
    Deny {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw an approved request that still has uses left.
    #[command(
        after_help = "Example:\n  countersign approvals revoke ap-5f1c2e9a0b7d4c31 --reason 'approved by mistake'"
    )]
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print requests and decisions as they happen.
    #[command(after_help = "Example:\n  countersign approvals watch --output json")]
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

async fn connect(c: &Connection) -> Result<Client, String> {
    // A bare `host:port` (as `admin.listen` is written) means TLS.
    let addr = if c.admin.contains("://") {
        c.admin.clone()
    } else {
        format!("https://{}", c.admin)
    };
    let mut endpoint =
        Channel::from_shared(addr.clone()).map_err(|e| format!("--admin `{}`: {e}", c.admin))?;
    if addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match &c.ca {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--ca")?)),
            None => {
                return Err(
                    "--ca (or COUNTERSIGN_ADMIN_CA) is needed to trust the admin API's certificate"
                        .into(),
                );
            }
        }
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--cert")?,
                read(key, "--key")?,
            ));
        } else if c.cert.is_some() || c.key.is_some() {
            return Err("--cert and --key go together".into());
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the admin API at {}: {e} (is `countersign serve` running with admin TLS configured?)", c.admin))?;
    let bearer = match &c.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<tonic::metadata::MetadataValue<_>>()
                .map_err(|_| "--token holds characters a header cannot carry".to_owned())?,
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

fn read(p: &PathBuf, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{flag} `{}`: {e}", p.display()))
}

/// A gRPC error as a sentence that says what to do.
fn explain(s: tonic::Status) -> String {
    use tonic::Code;
    let what = match s.code() {
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::FailedPrecondition => "cannot do that now",
        Code::AlreadyExists => "already done",
        Code::InvalidArgument => "invalid request",
        Code::Unavailable => "unavailable",
        _ => "error",
    };
    // A failed connection surfaces as "transport error"; what is known of
    // the cause is only in the source chain.
    let mut text = format!("{what}: {}", s.message());
    let mut cause = std::error::Error::source(&s);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(&format!(": {c_text}"));
        }
        cause = c.source();
    }
    // A server that refuses a client certificate under TLS 1.3 just closes
    // the connection, so the client cannot say more than this.
    if text.contains("transport error") {
        text.push_str(
            " (is the admin API at --admin, is --ca the CA of its certificate, and is --cert signed by the CA in its admin.client_ca?)",
        );
    }
    text
}

async fn execute(args: ApprovalsArgs) -> Result<(), String> {
    let out = args.conn.output;
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
                .map_err(explain)?
                .into_inner()
                .approvals;
            match out {
                Output::Json => println!("{}", Value::Array(list.iter().map(to_json).collect())),
                Output::Table => print_table(&list),
            }
        }
        ApprovalsCommand::Show { id } => {
            let a = client
                .get(pb::GetRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            print_one(&a, out);
        }
        ApprovalsCommand::Approve { id, reason } => {
            let a = client
                .approve(pb::DecideRequest { id, reason })
                .await
                .map_err(explain)?
                .into_inner();
            print_one(&a, out);
        }
        ApprovalsCommand::Deny { id, reason } => {
            let a = client
                .deny(pb::DecideRequest { id, reason })
                .await
                .map_err(explain)?
                .into_inner();
            print_one(&a, out);
        }
        ApprovalsCommand::Revoke { id, reason } => {
            let a = client
                .revoke(pb::DecideRequest { id, reason })
                .await
                .map_err(explain)?
                .into_inner();
            print_one(&a, out);
        }
        ApprovalsCommand::Watch => {
            let mut stream = client
                .watch(pb::WatchRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            while let Some(ev) = stream.message().await.map_err(explain)? {
                let Some(a) = ev.approval else { continue };
                match out {
                    Output::Json => {
                        println!("{}", json!({"event": ev.kind, "approval": to_json(&a)}))
                    }
                    Output::Table => println!(
                        "{:<10} {}  {}  {} {} on {}",
                        ev.kind, a.id, a.status, a.principal, a.action, a.resource
                    ),
                }
            }
        }
    }
    Ok(())
}

fn print_one(a: &pb::Approval, out: Output) {
    if out == Output::Json {
        println!("{}", to_json(a));
        return;
    }
    let row = |k: &str, v: &str| println!("{k:<15} {v}");
    row("id", &a.id);
    row("status", &a.status);
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

fn print_table(list: &[pb::Approval]) {
    if list.is_empty() {
        println!("no approval requests");
        return;
    }
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|a| {
            let votes = a.votes.iter().filter(|v| v.verdict == "approve").count();
            [
                a.id.clone(),
                a.status.clone(),
                a.principal.clone(),
                a.action.clone(),
                a.resource.clone(),
                format!("{votes}/{}", a.quorum),
            ]
        })
        .collect();
    let head = [
        "ID",
        "STATUS",
        "PRINCIPAL",
        "ACTION",
        "RESOURCE",
        "APPROVALS",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
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
