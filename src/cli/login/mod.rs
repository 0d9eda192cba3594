//! `countersign login`, `logout` and `whoami`: approvers sign in with the
//! identity provider of the admin API's `[admin.oidc]`, and `approvals`
//! presents the ID token cached for that admin address.
//!
//! - this file: the arguments, the three commands, and the cached sign-in
//!   that `approvals` uses (renewed when it is about to expire).
//! - `flows.rs`: the authorization code with PKCE and a loopback redirect,
//!   and the device authorization grant.
//! - `oauth.rs`: the provider's metadata and endpoints, tokens, renewal,
//!   revocation.
//! - `cache.rs`: one file per admin address, for the user alone.

mod cache;
mod flows;
mod oauth;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::approvals::Output;
use super::approvals::connect::{Connection, Server, connect, connect_with, explain};
use crate::admin::pb;
use crate::idp::discovery::DiscoveryError;
use crate::text::printable;
pub use cache::CacheError;
use cache::{Cache, SignIn};
use oauth::Provider;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign login
  countersign login --device
  countersign login --admin https://admin.example.com:9192 --ca ca.pem --idp-ca corp-ca.pem

The admin API names its identity provider (`[admin.oidc]` in the sidecar's configuration).
By default a browser signs you in: the URL to open is printed on stderr, on a line of its own,
and the browser is started for you when stdout is a terminal (not with --no-browser). The
provider sends the browser back to a listener on 127.0.0.1 that this command opens for the
sign-in. With --device, open the printed URL on any device and enter the printed code.

The ID token (and a refresh token, if the provider gives one) is kept for this --admin in
<cache dir>/countersign/tokens/ ($COUNTERSIGN_CACHE_DIR/tokens/ if set), readable by you
alone; `countersign approvals` and `countersign whoami` use it when given neither --cert/--key
nor --token, renewing it when it is about to expire. `countersign logout` removes it.")]
pub struct LoginArgs {
    #[command(flatten)]
    server: Server,
    /// Sign in with a code entered on any device (RFC 8628), instead of a browser redirect here.
    #[arg(long)]
    device: bool,
    /// Print the URL to open, but do not start a browser.
    #[arg(long)]
    no_browser: bool,
    /// How long to wait for the sign-in, e.g. `90s`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign logout
  countersign logout --admin https://admin.example.com:9192

Removes the sign-in that `countersign login` cached for --admin and, if the identity provider
has a revocation endpoint, revokes its refresh token there (best effort: logging out succeeds
even when the provider cannot be reached). Not signed in is not an error.")]
pub struct LogoutArgs {
    #[command(flatten)]
    server: Server,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign whoami
  countersign whoami --output json
  countersign whoami --cert dev-certs/dora.pem --key dev-certs/dora-key.pem

Asks the admin API who you are with the credentials `countersign approvals` would present:
--cert/--key, else --token, else the sign-in cached by `countersign login`.")]
pub struct WhoamiArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Why a sign-in, a sign-out or a cached sign-in failed. No message holds
/// a token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The admin API could not be reached or refused a call; the text says
    /// what to do.
    #[error("{0}")]
    Admin(String),
    #[error("cannot sign in to `{admin}` with an identity provider: {message}")]
    NoIdentityProvider { admin: String, message: String },
    #[error(
        "the identity provider's {field} `{url}` is not an https URL: tokens must travel over TLS (plain http only to 127.0.0.1 or localhost)"
    )]
    Insecure { field: &'static str, url: String },
    #[error("--idp-ca (or COUNTERSIGN_IDP_CA) `{}` cannot be read: {source}", .path.display())]
    IdpCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the identity provider's metadata: {0}{hint}", hint = idp_ca_hint(.0))]
    Discovery(DiscoveryError),
    #[error("the identity provider `{issuer}` has no `{field}` in its metadata{}", missing_hint(.field))]
    MissingEndpoint { issuer: String, field: &'static str },
    #[error("the identity provider's metadata cannot be used: {0}")]
    Metadata(String),
    #[error("cannot listen on 127.0.0.1 for the browser's redirect ({0}): use --device")]
    Listen(std::io::Error),
    #[error("no sign-in within {waited} (--timeout): run `countersign login{}` again", device_flag(*.device))]
    Timeout { waited: String, device: bool },
    #[error(
        "the identity provider refused the sign-in ({0}): run `countersign login` to try again"
    )]
    Refused(String),
    #[error(
        "the code expired before the sign-in was completed: run `countersign login --device` again"
    )]
    Expired,
    #[error("the identity provider's endpoint `{url}` {why}")]
    Token { url: String, why: String },
    #[error(
        "the identity provider returned no ID token: is `openid` among the scopes? (`admin.oidc.scopes` in the sidecar's configuration)"
    )]
    NoIdToken,
    #[error("the identity provider's ID token has no readable `exp` claim")]
    NoExpiry,
    #[error("the admin API at `{admin}` does not accept the sign-in ({why}); nothing was saved")]
    NotAccepted { admin: String, why: String },
    #[error(
        "not signed in to `{admin}`{why}: run `countersign login` (or give --cert/--key or --token)"
    )]
    NotSignedIn { admin: String, why: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A hint for metadata that could not be had over TLS.
fn idp_ca_hint(e: &DiscoveryError) -> &'static str {
    let text = e.to_string().to_ascii_lowercase();
    if ["certificate", "unknownissuer", "unknown issuer"]
        .iter()
        .any(|t| text.contains(t))
    {
        ": if a private CA signed its certificate, give it with --idp-ca (or COUNTERSIGN_IDP_CA)"
    } else {
        ""
    }
}

fn device_flag(device: bool) -> &'static str {
    if device { " --device" } else { "" }
}

fn missing_hint(field: &str) -> &'static str {
    match field {
        "authorization_endpoint" => ": it cannot sign in a browser; try --device",
        "device_authorization_endpoint" => {
            ": it does not offer the device flow; sign in without --device"
        }
        _ => "",
    }
}

pub fn run_login(args: LoginArgs) -> ExitCode {
    run(login(args))
}

pub fn run_logout(args: LogoutArgs) -> ExitCode {
    run(logout(args))
}

pub fn run_whoami(args: WhoamiArgs) -> ExitCode {
    run(whoami(args))
}

fn run(work: impl Future<Output = Result<(), LoginError>>) -> ExitCode {
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn login(args: LoginArgs) -> Result<(), LoginError> {
    let admin = args.server.address();
    // Before the sign-in, so a cache that cannot be written fails first.
    let cache = Cache::from_env()?;
    let mut anonymous = connect_with(&args.server, None)
        .await
        .map_err(LoginError::Admin)?;
    let offer = anonymous
        .sign_in(pb::SignInRequest {})
        .await
        .map_err(|s| match s.code() {
            tonic::Code::FailedPrecondition => LoginError::NoIdentityProvider {
                admin: admin.clone(),
                message: s.message().to_owned(),
            },
            _ => LoginError::Admin(explain(s, None)),
        })?
        .into_inner();
    let idp = Provider::discover(
        &offer.issuer,
        &offer.client_id,
        args.server.idp_ca.as_deref(),
    )
    .await?;
    let prompt = flows::Prompt {
        timeout: args.timeout,
        browser: !args.no_browser,
    };
    let got = if args.device {
        flows::device(&idp, &offer.scopes, prompt).await?
    } else {
        flows::code(&idp, &offer.scopes, prompt).await?
    };
    // Cached only once the admin API accepts it: a token it refuses would
    // fail every later command instead of this one.
    let mut client = connect_with(&args.server, Some(got.id_token.expose()))
        .await
        .map_err(LoginError::Admin)?;
    let me = client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(|s| LoginError::NotAccepted {
            admin: admin.clone(),
            why: printable(s.message()).into_owned(),
        })?
        .into_inner();
    cache.store(&SignIn {
        admin: admin.clone(),
        issuer: offer.issuer.clone(),
        client_id: offer.client_id,
        id_token: got.id_token,
        refresh_token: got.refresh_token,
        expires_at: got.expires_at,
    })?;
    println!(
        "Signed in to {admin} as {} (groups: {}) via {}",
        printable(&me.name),
        groups(&me.groups),
        printable(&offer.issuer)
    );
    Ok(())
}

async fn logout(args: LogoutArgs) -> Result<(), LoginError> {
    let admin = args.server.address();
    let cache = Cache::from_env()?;
    // A file that cannot be read is removed all the same.
    let signed_in = cache.load(&admin).ok().flatten();
    let Some(path) = cache.remove(&admin)? else {
        println!("Not signed in to {admin}: nothing to do");
        return Ok(());
    };
    println!("Signed out of {admin}: removed {}", path.display());
    let Some(s) = signed_in else { return Ok(()) };
    let Some(refresh) = &s.refresh_token else {
        return Ok(());
    };
    // Best effort: the local sign-in is gone whatever the provider says.
    let revoked =
        match Provider::discover(&s.issuer, &s.client_id, args.server.idp_ca.as_deref()).await {
            Ok(idp) => idp.revoke(refresh).await,
            Err(e) => Err(e),
        };
    match revoked {
        Ok(true) => println!("Revoked the refresh token at {}", s.issuer),
        Ok(false) => println!(
            "{} has no revocation endpoint: the refresh token stays valid until it expires",
            s.issuer
        ),
        Err(e) => eprintln!("countersign: could not revoke the refresh token: {e}"),
    }
    Ok(())
}

async fn whoami(args: WhoamiArgs) -> Result<(), LoginError> {
    let mut client = connect(&args.conn).await.map_err(LoginError::Admin)?;
    let me = client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(|s| LoginError::Admin(explain(s, None)))?
        .into_inner();
    let oidc = me.method == "oidc";
    match args.output {
        Output::Json => {
            let opt = |v: &str| if oidc { json!(v) } else { json!(null) };
            println!(
                "{}",
                json!({
                    "name": me.name,
                    "groups": me.groups,
                    "method": me.method,
                    "issuer": opt(&me.issuer),
                    "subject": opt(&me.subject),
                })
            );
        }
        Output::Table => {
            println!("name     {}", printable(&me.name));
            println!("groups   {}", groups(&me.groups));
            println!("method   {}", printable(&me.method));
            if oidc {
                println!("issuer   {}", printable(&me.issuer));
                println!("subject  {}", printable(&me.subject));
            }
        }
    }
    Ok(())
}

/// `a, b`, or `none`.
fn groups(g: &[String]) -> String {
    if g.is_empty() {
        return "none".to_owned();
    }
    g.iter()
        .map(|s| printable(s).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ID token cached for `server`'s admin address, renewed first if it
/// expires within 30 s; for `approvals` and `whoami` given no other
/// credentials.
pub(crate) async fn signed_in(server: &Server) -> Result<String, LoginError> {
    let admin = server.address();
    let cache = Cache::from_env()?;
    let not_signed_in = |why: String| LoginError::NotSignedIn {
        admin: admin.clone(),
        why,
    };
    let Some(mut s) = cache.load(&admin)? else {
        return Err(not_signed_in(String::new()));
    };
    if !s.needs_refresh(cache::now()) {
        return Ok(s.id_token.expose().to_owned());
    }
    let Some(refresh) = s.refresh_token.clone() else {
        return Err(not_signed_in(" (the sign-in has expired)".to_owned()));
    };
    let renewed = match Provider::discover(&s.issuer, &s.client_id, server.idp_ca.as_deref()).await
    {
        Ok(idp) => idp.refresh(&refresh).await,
        Err(e) => Err(e),
    };
    let got = renewed.map_err(|e| {
        not_signed_in(format!(
            " (the sign-in has expired and could not be renewed: {e})"
        ))
    })?;
    s.id_token = got.id_token;
    s.refresh_token = got.refresh_token;
    s.expires_at = got.expires_at;
    cache.store(&s)?;
    Ok(s.id_token.expose().to_owned())
}
