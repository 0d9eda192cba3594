//! Validation of what notifies people: `approvals.webhooks` and the
//! delivery settings of `[notifications]`.

use serde::Deserialize;

use super::ConfigError;
use super::env::Origins;
use super::validate::duration;
use crate::notifications::outbox::Settings;
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
) -> Result<Vec<Webhook>, ConfigError> {
    let mut webhooks: Vec<Webhook> = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
            return Err(o.invalid(
                &format!("approvals.webhooks[{i}].url"),
                &format!("expected an http:// or https:// URL, got `{}`", w.url),
            ));
        }
        let hook = Webhook::new(&w.name, &w.url, w.format);
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
