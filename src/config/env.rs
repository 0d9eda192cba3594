//! Environment overrides: one table of variable -> field, applied over the
//! file, which also records where each value came from so that an error
//! names the variable rather than the file.

use std::collections::HashMap;
use std::path::PathBuf;

use super::ConfigError;
use super::LogFormat;
use super::schema::{Raw, RawApprover};

/// Where configuration values are read from the environment. Tests pass a
/// map instead of touching the process environment.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// A field the environment can set, by the kind of value it takes.
enum Slot<'a> {
    /// Taken as written.
    Text(&'a mut String),
    /// A directory, relative to the working directory as given.
    Dir(&'a mut PathBuf),
    /// A file, made absolute against the working directory.
    File(&'a mut Option<PathBuf>),
    /// `name=group+group,name=group`.
    Approvers(&'a mut Vec<RawApprover>),
    LogFormat(&'a mut LogFormat),
}

impl Slot<'_> {
    /// Puts `v` in place, or says what was expected instead.
    fn set(self, v: String) -> Result<(), String> {
        match self {
            Slot::Text(slot) => *slot = v,
            Slot::Dir(_) if v.is_empty() => {
                return Err("expected a directory path, got an empty string".into());
            }
            Slot::Dir(slot) => *slot = PathBuf::from(v),
            Slot::File(slot) => *slot = Some(std::env::current_dir().unwrap_or_default().join(v)),
            Slot::Approvers(slot) => *slot = parse_approvers(&v)?,
            Slot::LogFormat(slot) => {
                *slot = match v.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(format!("expected `text` or `json`, got `{other}`")),
                }
            }
        }
        Ok(())
    }
}

/// An environment variable, the field it replaces, and where that field is.
type Override = (&'static str, &'static str, fn(&mut Raw) -> Slot<'_>);

/// Every override, in the order applied: of several bad values, the first
/// here is the one reported.
const OVERRIDES: &[Override] = &[
    ("COUNTERSIGN_LISTEN", "server.listen", |r| {
        Slot::Text(&mut r.server.listen)
    }),
    ("COUNTERSIGN_POLICY_DIR", "policy.dir", |r| {
        Slot::Dir(&mut r.policy.dir)
    }),
    ("COUNTERSIGN_REDIS_URL", "redis.url", |r| {
        Slot::Text(&mut r.redis.url)
    }),
    ("COUNTERSIGN_ADMIN_LISTEN", "admin.listen", |r| {
        Slot::Text(&mut r.admin.listen)
    }),
    // TLS files and approvers, for containers and quick starts.
    ("COUNTERSIGN_ADMIN_TLS_CERT", "admin.tls_cert", |r| {
        Slot::File(&mut r.admin.tls_cert)
    }),
    ("COUNTERSIGN_ADMIN_TLS_KEY", "admin.tls_key", |r| {
        Slot::File(&mut r.admin.tls_key)
    }),
    ("COUNTERSIGN_ADMIN_CLIENT_CA", "admin.client_ca", |r| {
        Slot::File(&mut r.admin.client_ca)
    }),
    ("COUNTERSIGN_ADMIN_APPROVERS", "admin.approvers", |r| {
        Slot::Approvers(&mut r.admin.approvers)
    }),
    ("COUNTERSIGN_METRICS_LISTEN", "server.metrics_listen", |r| {
        Slot::Text(&mut r.server.metrics_listen)
    }),
    ("COUNTERSIGN_LOG_FORMAT", "server.log_format", |r| {
        Slot::LogFormat(&mut r.server.log_format)
    }),
    ("COUNTERSIGN_LOG", "server.log", |r| {
        Slot::Text(&mut r.server.log)
    }),
];

/// Every variable that overrides a field, and that field, in the order
/// applied (for `serve --help`, so that it cannot fall out of step).
pub fn overrides() -> impl Iterator<Item = (&'static str, &'static str)> {
    OVERRIDES.iter().map(|&(var, field, _)| (var, field))
}

/// Where each value came from: the file (or the embedded default), unless
/// an environment variable replaced it.
pub(super) struct Origins {
    /// `embedded default config` or the file path.
    pub file: String,
    /// (variable, field) of each override that was applied.
    from_env: Vec<(&'static str, &'static str)>,
}

impl Origins {
    /// Applies every override set in `env` to `raw`, which came from `file`.
    pub fn apply(raw: &mut Raw, env: &dyn Env, file: String) -> Result<Self, ConfigError> {
        let mut origins = Self {
            file,
            from_env: Vec::new(),
        };
        for &(var, field, slot) in OVERRIDES {
            let Some(v) = env.var(var) else { continue };
            origins.from_env.push((var, field));
            slot(raw)
                .set(v)
                .map_err(|message| origins.invalid(field, &message))?;
        }
        Ok(origins)
    }

    /// Where `field` (such as `admin.listen` or `admin.approvers[0].name`)
    /// came from.
    pub fn of(&self, field: &str) -> String {
        let within = |(_, set): &&(&str, &str)| {
            field
                .strip_prefix(set)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        match self.from_env.iter().find(within) {
            Some((var, _)) => format!("environment variable {var}"),
            None => self.file.clone(),
        }
    }

    /// `field` cannot be used: the error names where it came from.
    pub fn invalid(&self, field: &str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.of(field),
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// `name=group+group,name=group`: approvers and their groups (`name=` for
/// none). An entry without `=` is refused rather than taken for an approver
/// without groups: it is most often a group written after a `,` instead of
/// a `+`, which would make a group name an approver.
fn parse_approvers(v: &str) -> Result<Vec<RawApprover>, String> {
    let expected = "expected `name=group+group,name=group` (approvers separated by `,`, an approver's groups by `+`)";
    v.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let Some((name, groups)) = entry.split_once('=') else {
                return Err(format!(
                    "{expected}, got `{entry}` without `=` in `{v}`: if it is a group, join it to the one before with `+`"
                ));
            };
            if name.trim().is_empty() || groups.contains(['=', ';']) {
                return Err(format!("{expected}, got `{entry}`"));
            }
            Ok(RawApprover {
                name: name.trim().to_owned(),
                groups: groups
                    .split('+')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect(),
                token_sha256: None,
            })
        })
        .collect()
}
