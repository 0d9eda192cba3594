//! Configuration: the embedded default or a TOML file, environment
//! overrides, and validation of all of it before a port is bound.
//!
//! - `schema.rs`: the file as written, with its defaults.
//! - `env.rs`: which environment variable overrides which field.
//! - `validate.rs`: checks every field into the typed [`Config`].
//!
//! `Debug` never shows a secret: the Redis password, webhook URLs and
//! signing secrets, the admin key, approvers' token hashes and Slack's bot
//! token and signing secret are left out or redacted.

mod admin;
mod authzen;
mod env;
mod notifications;
mod oidc;
mod schema;
mod slack;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use authzen::{AuthzenClient, AuthzenConfig, Explain};
pub use env::{Env, ProcessEnv, overrides};
pub use oidc::OidcConfig;
pub use slack::{SlackApprover, SlackConfig};

use crate::request::Mapper;

/// The configuration used when no file is given.
pub const EMBEDDED: &str = include_str!("../default-config.toml");
/// [`Config::origin`] of the embedded default.
pub const EMBEDDED_ORIGIN: &str = "embedded default config";

/// A configuration that cannot be used. Each message names where the value
/// came from, the field, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{col}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{origin}: field `{field}`: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// A validated configuration. Its `Debug` is safe to log: the store and
/// webhooks redact their URLs, the admin settings their key and tokens.
#[derive(Debug)]
pub struct Config {
    /// `embedded default config` or the file path.
    pub origin: String,
    pub listen: SocketAddr,
    pub shutdown_grace: Duration,
    pub log: String,
    pub log_format: LogFormat,
    /// `/metrics`, `/healthz`, `/readyz`; `None` when switched off.
    pub metrics_listen: Option<SocketAddr>,
    pub policy_dir: PathBuf,
    pub watch_policies: bool,
    /// `policy.enforcement`: the default of every route.
    pub enforcement: Enforcement,
    pub jwt_metadata_key: String,
    /// Header naming the principal to the upstream; `None` when disabled.
    pub principal_header: Option<String>,
    pub mapper: Mapper,
    pub store: crate::approval::StoreConfig,
    pub token_header: String,
    pub hold_max: Duration,
    /// Longest the approval store may take on one check (outside a hold).
    pub store_budget: Duration,
    pub webhooks: Vec<crate::notifications::webhook::Webhook>,
    /// How hard notifications are delivered (`[notifications]`).
    pub notifications: crate::notifications::outbox::Settings,
    /// `None` when no TLS certificate is configured: the admin API is off.
    pub admin: Option<AdminConfig>,
    /// The AuthZEN PDP; `None` unless `[authzen]` is present.
    pub authzen: Option<AuthzenConfig>,
    /// Approvals in Slack; `None` unless `[slack]` is present.
    pub slack: Option<SlackConfig>,
    /// Capture mode: set by `serve --record`, never by the file.
    pub record: Option<crate::audit::record::RecordConfig>,
}

/// Whether decisions are enforced, or only decided and recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Refusals refuse (the default).
    Enforce,
    /// Every call is let through unless an `@enforce("always")` forbid
    /// refuses it; what would have been refused is recorded as a shadow
    /// decision, and guarded calls open shadow approval requests.
    Shadow,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The approvers' API: TLS material (read at start-up) and approvers.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// CA for client certificates; without it only bearer tokens work.
    pub client_ca_pem: Option<Vec<u8>>,
    pub approvers: Vec<ApproverConfig>,
    /// The identity provider approvers may sign in with.
    pub oidc: Option<OidcConfig>,
}

impl std::fmt::Debug for AdminConfig {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("approvers", &self.approvers)
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

/// A known approver: the name a client certificate or token maps to.
#[derive(Clone, PartialEq, Eq)]
pub struct ApproverConfig {
    pub name: String,
    pub groups: Vec<String>,
    /// SHA-256 (hex) of the approver's bearer token; the token itself is
    /// never stored.
    pub token_sha256: Option<String>,
}

impl std::fmt::Debug for ApproverConfig {
    // Whether a token is set, not its hash: an unsalted hash of a short
    // token can be reversed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproverConfig")
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("token_sha256", &self.token_sha256.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A credential read from a file or the environment: `Debug` shows `***`,
/// and only [`Secret::expose`] gives the value, where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Config {
    /// Loads from `--config` (or `COUNTERSIGN_CONFIG`, or the embedded
    /// default), applies the environment's overrides (such as
    /// `COUNTERSIGN_LISTEN`, `COUNTERSIGN_POLICY_DIR` and `COUNTERSIGN_LOG`;
    /// the full table is in `config/env.rs`), and validates everything.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_owned)
            .or_else(|| env.var("COUNTERSIGN_CONFIG").map(PathBuf::from));
        let (origin, text, base) = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                let base = p.parent().map(Path::to_owned).unwrap_or_default();
                (p.display().to_string(), text, base)
            }
            None => (
                EMBEDDED_ORIGIN.to_owned(),
                EMBEDDED.to_owned(),
                PathBuf::new(),
            ),
        };
        let mut raw: schema::Raw = toml::from_str(&text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start);
            let (line, col) = crate::location::line_col(&text, start);
            // toml names the expected type but not the key: quote the
            // line, without its value, which may be a secret written where
            // it does not belong (`bot_token = "xoxb-…"`, a misspelt key).
            let source = text.lines().nth(line - 1).unwrap_or_default().trim();
            let source = match source.split_once('=') {
                Some((key, _)) => format!("{} = …", key.trim_end()),
                None => source.to_owned(),
            };
            let message = format!("{} (in `{source}`)", e.message().trim_end());
            ConfigError::Syntax {
                origin: origin.clone(),
                line,
                col,
                message,
            }
        })?;
        raw.resolve_paths(&base);
        let origins = env::Origins::apply(&mut raw, env, origin)?;
        validate::validate(raw, &origins, env)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod webhook_tests;
