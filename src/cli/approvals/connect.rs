//! Reaching the admin API: the connection flags every client command
//! shares, TLS from them, the PEM files checked before a handshake, which
//! credentials to present, and errors that say which flag to fix.

use std::path::{Path, PathBuf};

use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::admin::pb::approvals_client::ApprovalsClient;

/// Where the admin API is and how to trust it, and the CA of its identity
/// provider: what `login`, `logout`, `whoami` and `approvals` share.
#[derive(Debug, Clone, Args)]
pub(crate) struct Server {
    /// Admin API address.
    #[arg(
        long,
        global = true,
        env = "COUNTERSIGN_ADMIN_ADDR",
        default_value = "https://127.0.0.1:9192"
    )]
    pub(crate) admin: String,
    /// CA certificate (PEM) that signed the admin API's certificate.
    #[arg(long, global = true, env = "COUNTERSIGN_ADMIN_CA", value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
    /// CA certificate (PEM) of the identity provider's TLS, if a private CA signed it.
    #[arg(long, global = true, env = "COUNTERSIGN_IDP_CA", value_name = "PEM")]
    pub(crate) idp_ca: Option<PathBuf>,
}

impl Server {
    /// The admin address as connections and the sign-in cache know it: a
    /// bare `host:port` (as `admin.listen` is written) means TLS.
    pub(crate) fn address(&self) -> String {
        let a = self.admin.trim_end_matches('/');
        if a.contains("://") {
            a.to_owned()
        } else {
            format!("https://{a}")
        }
    }
}

/// The server and who to present to it: `approvals` and `whoami`.
#[derive(Debug, Clone, Args)]
pub(crate) struct Connection {
    #[command(flatten)]
    pub(crate) server: Server,
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
}

/// Adds the bearer token, if any, to every call.
type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
pub(crate) type Client =
    ApprovalsClient<tonic::service::interceptor::InterceptedService<Channel, Interceptor>>;

/// Where to fix a connection setting: the flag and its environment variable.
const ADMIN: &str = "--admin (or COUNTERSIGN_ADMIN_ADDR)";
const CA: &str = "--ca (or COUNTERSIGN_ADMIN_CA)";
const CERT: &str = "--cert (or COUNTERSIGN_ADMIN_CERT)";
const KEY: &str = "--key (or COUNTERSIGN_ADMIN_KEY)";
const TOKEN: &str = "--token (or COUNTERSIGN_ADMIN_TOKEN)";

/// A client presenting, first that is given: --cert/--key, --token, the
/// sign-in `countersign login` cached for this admin address (renewed if
/// it is about to expire).
pub(crate) async fn connect(c: &Connection) -> Result<Client, String> {
    let identity = match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    let endpoint = endpoint(&c.server, c.cert.as_deref(), c.key.as_deref())?;
    // After the TLS checks, so a missing --ca is named before a missing
    // sign-in.
    let bearer = match (&c.token, identity) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(
            crate::cli::login::signed_in(&c.server)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    finish(endpoint, &c.server, bearer.as_deref()).await
}

/// A client presenting `bearer`, if any, and no certificate: `login` asks
/// without credentials, then with the ID token it got.
pub(crate) async fn connect_with(server: &Server, bearer: Option<&str>) -> Result<Client, String> {
    finish(endpoint(server, None, None)?, server, bearer).await
}

/// The admin API's endpoint with TLS set up from the flags.
fn endpoint(server: &Server, cert: Option<&Path>, key: Option<&Path>) -> Result<Endpoint, String> {
    let addr = server.address();
    let mut endpoint = Channel::from_shared(addr.clone()).map_err(|_| {
        format!(
            "--admin `{}` is not an address: give `host:port` or `https://host:port` (it may come from COUNTERSIGN_ADMIN_ADDR)",
            server.admin
        )
    })?;
    if addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match &server.ca {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, Pem::Ca)?)),
            None => {
                return Err(format!(
                    "the admin API's certificate cannot be trusted without its CA: give {CA} with the CA certificate that signed `admin.tls_cert` (`ca.pem` from `countersign dev-certs`)"
                ));
            }
        }
        match (cert, key) {
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
                crate::text::causes(&e)
            )
        })?;
    }
    Ok(endpoint)
}

/// Connects to `endpoint` and adds `bearer` to every call.
async fn finish(
    endpoint: Endpoint,
    server: &Server,
    bearer: Option<&str>,
) -> Result<Client, String> {
    let channel = endpoint.connect().await.map_err(|e| {
        cannot_reach(
            &server.admin,
            server.ca.as_deref(),
            &crate::text::causes(&e),
        )
    })?;
    let bearer = match bearer {
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

/// Why the admin API at `admin` could not be reached, and what to check.
fn cannot_reach(admin: &str, ca: Option<&Path>, cause: &str) -> String {
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
fn read_pem(path: &Path, kind: Pem) -> Result<Vec<u8>, String> {
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
pub(crate) fn explain(s: tonic::Status, id: Option<&str>) -> String {
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
    let mut text = crate::text::with_causes(
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
                "sign in with `countersign login`, or authenticate with {CERT} and {KEY}, a certificate whose CN is your approver name, or with {TOKEN}"
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
