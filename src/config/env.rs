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

/// An environment variable that replaces one field of the file.
struct Override {
    var: &'static str,
    field: &'static str,
    /// Puts the value in place, or says what was expected instead.
    apply: fn(&mut Raw, String) -> Result<(), String>,
}

/// Every override, in the order applied: of several bad values, the first
/// here is the one reported. Paths are relative to the working directory,
/// not to the file.
const OVERRIDES: &[Override] = &[
    Override {
        var: "COUNTERSIGN_LISTEN",
        field: "server.listen",
        apply: |raw, v| {
            raw.server.listen = v;
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_POLICY_DIR",
        field: "policy.dir",
        apply: |raw, v| {
            if v.is_empty() {
                return Err("expected a directory path, got an empty string".into());
            }
            raw.policy.dir = PathBuf::from(v);
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_REDIS_URL",
        field: "redis.url",
        apply: |raw, v| {
            raw.redis.url = v;
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_ADMIN_LISTEN",
        field: "admin.listen",
        apply: |raw, v| {
            raw.admin.listen = v;
            Ok(())
        },
    },
    // TLS files and approvers, for containers and quick starts.
    Override {
        var: "COUNTERSIGN_ADMIN_TLS_CERT",
        field: "admin.tls_cert",
        apply: |raw, v| {
            raw.admin.tls_cert = Some(from_working_dir(v));
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_ADMIN_TLS_KEY",
        field: "admin.tls_key",
        apply: |raw, v| {
            raw.admin.tls_key = Some(from_working_dir(v));
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_ADMIN_CLIENT_CA",
        field: "admin.client_ca",
        apply: |raw, v| {
            raw.admin.client_ca = Some(from_working_dir(v));
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_ADMIN_APPROVERS",
        field: "admin.approvers",
        apply: |raw, v| {
            raw.admin.approvers = parse_approvers(&v)?;
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_METRICS_LISTEN",
        field: "server.metrics_listen",
        apply: |raw, v| {
            raw.server.metrics_listen = v;
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_LOG_FORMAT",
        field: "server.log_format",
        apply: |raw, v| {
            raw.server.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(format!("expected `text` or `json`, got `{other}`")),
            };
            Ok(())
        },
    },
    Override {
        var: "COUNTERSIGN_LOG",
        field: "server.log",
        apply: |raw, v| {
            raw.server.log = v;
            Ok(())
        },
    },
];

/// Where each value came from: the file (or the embedded default), unless
/// an environment variable replaced it.
pub(super) struct Origins {
    /// `embedded default config` or the file path.
    pub file: String,
    /// The overrides that were applied.
    from_env: Vec<&'static Override>,
}

impl Origins {
    /// Applies every override set in `env` to `raw`, which came from `file`.
    pub fn apply(raw: &mut Raw, env: &dyn Env, file: String) -> Result<Self, ConfigError> {
        let mut origins = Self {
            file,
            from_env: Vec::new(),
        };
        for o in OVERRIDES {
            let Some(v) = env.var(o.var) else { continue };
            origins.from_env.push(o);
            (o.apply)(raw, v).map_err(|message| origins.invalid(o.field, &message))?;
        }
        Ok(origins)
    }

    /// Where `field` (such as `admin.listen` or `admin.approvers[0].name`)
    /// came from.
    pub fn of(&self, field: &str) -> String {
        let within = |o: &&&Override| {
            field
                .strip_prefix(o.field)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        match self.from_env.iter().find(within) {
            Some(o) => format!("environment variable {}", o.var),
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

fn from_working_dir(v: String) -> PathBuf {
    std::env::current_dir().unwrap_or_default().join(v)
}

/// `name=group+group,name=group`: approvers and their groups.
fn parse_approvers(v: &str) -> Result<Vec<RawApprover>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (name, groups) = entry.split_once('=').unwrap_or((entry, ""));
            if name.trim().is_empty() {
                return Err(format!("expected `name=group+group,...`, got `{entry}`"));
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
