//! Validation of what notifies people: `approvals.webhooks` and the
//! delivery settings of `[notifications]`.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use super::env::{Env, Origins};
use super::validate::duration;
use crate::notifications::outbox::Settings;
use crate::notifications::signing::SigningKey;
use crate::notifications::webhook::{Format, Webhook};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    /// Names the webhook in logs and metrics (default: from the URL's
    /// hash); renaming one starts its delivery afresh.
    #[serde(default)]
    pub name: String,
    pub url: String,
    #[serde(default = "json_format")]
    pub format: Format,
    /// A file holding the signing secret (`whsec_…`), or two, one a line,
    /// while rotating; relative to the config file.
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret(s), separated by spaces.
    pub secret_env: Option<String>,
    /// Refused with its own message: a secret written here would sit in
    /// the file (and toml's own error would quote its line).
    pub secret: Option<toml::Value>,
}

fn json_format() -> Format {
    Format::Json
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNotifications {
    pub retry_after: String,
    pub give_up_after: String,
}

impl Default for RawNotifications {
    fn default() -> Self {
        Self {
            retry_after: "30s".into(),
            give_up_after: "24h".into(),
        }
    }
}

pub(super) fn validate_webhooks(
    raw: &[RawWebhook],
    o: &Origins,
    env: &dyn Env,
) -> Result<Vec<Webhook>, ConfigError> {
    let mut webhooks: Vec<Webhook> = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
            return Err(o.invalid(
                &format!("approvals.webhooks[{i}].url"),
                // Not the URL itself: a Slack or Teams URL is a credential.
                &format!(
                    "expected an http:// or https:// URL, got one that starts `{}`",
                    crate::text::shortened(w.url.split("//").next().unwrap_or(""), 12)
                ),
            ));
        }
        let keys = signing_keys(w, &|n| format!("approvals.webhooks[{i}].{n}"), o, env)?;
        let hook = Webhook::new(&w.name, &w.url, w.format).signed_with(keys);
        // The name keys the webhook's delivery progress: two sharing one
        // would share it, and each would get half the events.
        if webhooks.iter().any(|h| h.name == hook.name) {
            return Err(o.invalid(
                &format!("approvals.webhooks[{i}].name"),
                &format!(
                    "expected a name no other webhook has, got `{}` twice (two webhooks with one URL need names)",
                    hook.name
                ),
            ));
        }
        webhooks.push(hook);
    }
    Ok(webhooks)
}

/// At most this many secrets: the current one and, while rotating, the
/// next (or the previous).
const MAX_SECRETS: usize = 2;

/// The keys that sign `w`'s deliveries: none, or those of `secret_file`
/// or `secret_env`. No error quotes a secret.
fn signing_keys(
    w: &RawWebhook,
    field: &dyn Fn(&str) -> String,
    o: &Origins,
    env: &dyn Env,
) -> Result<Vec<SigningKey>, ConfigError> {
    if w.secret.is_some() {
        return Err(o.invalid(
            &field("secret"),
            "a secret is not written in the config file: put it in a file named by `secret_file`, or an environment variable named by `secret_env`",
        ));
    }
    let name = match (&w.secret_file, &w.secret_env) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some(_)) => {
            return Err(o.invalid(
                &field("secret_env"),
                "expected `secret_file` or `secret_env`, not both",
            ));
        }
        (Some(_), None) => field("secret_file"),
        (None, Some(_)) => field("secret_env"),
    };
    if w.format != Format::Json {
        return Err(o.invalid(
            &name,
            &format!(
                "expected no secret for format `{}`: Slack and Teams check no signature (their URL is the credential); signing is for `json`",
                w.format.as_str()
            ),
        ));
    }
    let (text, from) = match (&w.secret_file, &w.secret_env) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| o.invalid(&name, &format!("cannot read `{}`: {e}", path.display())))?;
            (text, format!("`{}`", path.display()))
        }
        (None, var) => {
            let var = var.as_deref().unwrap_or_default();
            let text = env.var(var).ok_or_else(|| {
                o.invalid(&name, &format!("environment variable `{var}` is not set"))
            })?;
            (text, format!("environment variable `{var}`"))
        }
    };
    let secrets: Vec<&str> = text.split_whitespace().collect();
    if secrets.is_empty() || secrets.len() > MAX_SECRETS {
        return Err(o.invalid(
            &name,
            &format!(
                "expected one secret in {from}, or two while rotating (separated by a space or a line break), got {}",
                secrets.len()
            ),
        ));
    }
    let mut keys: Vec<SigningKey> = Vec::new();
    for (n, secret) in secrets.iter().enumerate() {
        let key = SigningKey::parse(secret).map_err(|e| {
            o.invalid(
                &name,
                &format!(
                    "secret {} of {} in {from}: {e} (make one with `echo \"whsec_$(head -c 32 /dev/urandom | base64)\"`)",
                    n + 1,
                    secrets.len()
                ),
            )
        })?;
        if keys.contains(&key) {
            return Err(o.invalid(&name, &format!("the same secret twice in {from}")));
        }
        keys.push(key);
    }
    Ok(keys)
}

pub(super) fn validate_notifications(
    raw: &RawNotifications,
    o: &Origins,
) -> Result<Settings, ConfigError> {
    let retry_after = duration(o, "notifications.retry_after", &raw.retry_after)?;
    let give_up_after = duration(o, "notifications.give_up_after", &raw.give_up_after)?;
    if retry_after.is_zero() || give_up_after < retry_after {
        return Err(o.invalid(
            "notifications.give_up_after",
            &format!(
                "expected a notifications.retry_after above zero and a give_up_after at least as long, got {} and {}",
                raw.retry_after, raw.give_up_after
            ),
        ));
    }
    Ok(Settings {
        retry_after,
        give_up_after,
    })
}
