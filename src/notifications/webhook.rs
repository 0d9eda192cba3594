//! Webhooks: one POST per notice, in the generic JSON, Slack or Teams
//! format (`payload.rs`), with the Standard Webhooks headers and, when
//! the webhook has secrets, their signatures (`signing.rs`). Retries and
//! queueing are the outbox's.

use std::fmt;
use std::time::Duration;

use super::signing::{self, SigningKey};
use super::{Channel, ChannelError, Notice};
use crate::approval::EventKind;

pub use super::payload::payload;

/// Payload shape of one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The generic JSON payload; may be signed.
    Json,
    /// A Slack incoming webhook's blocks.
    Slack,
    /// An Adaptive Card for a Teams Workflows webhook.
    Teams,
}

impl Format {
    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::Teams => "teams",
        }
    }
}

/// One webhook. `Debug` shows only the URL's scheme and host (a Slack or
/// Teams webhook URL is itself a secret) and how many keys sign.
#[derive(Clone)]
pub struct Webhook {
    /// Logs and metrics name the webhook by this, never by its URL.
    pub name: String,
    pub url: String,
    pub format: Format,
    /// Each signs every delivery; two while a secret is being rotated.
    keys: Vec<SigningKey>,
    client: reqwest::Client,
}

impl PartialEq for Webhook {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.url, self.format, &self.keys)
            == (&other.name, &other.url, other.format, &other.keys)
    }
}

impl Eq for Webhook {}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &origin(&self.url))
            .field("format", &self.format)
            .field("signing_keys", &self.keys.len())
            .finish()
    }
}

/// A webhook's scheme and host (and port): the path and query of a Slack
/// or Teams webhook URL are its credential.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}", u.scheme(), u.host_str().unwrap_or(""))
        }
        Err(_) => "***".to_owned(),
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Webhook {
    /// `name` "" is named from the URL's hash: stable across restarts and
    /// reordered settings, and no secret.
    pub fn new(name: &str, url: &str, format: Format) -> Self {
        use sha2::Digest;
        let name = if name.is_empty() {
            let digest = sha2::Sha256::digest(url.as_bytes());
            format!("webhook-{}", &hex::encode(digest)[..8])
        } else {
            name.to_owned()
        };
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            name,
            url: url.to_owned(),
            format,
            keys: Vec::new(),
            client,
        }
    }

    /// Signs every delivery with each of `keys` (Standard Webhooks).
    pub fn signed_with(mut self, keys: Vec<SigningKey>) -> Self {
        self.keys = keys;
        self
    }
}

#[async_trait::async_trait]
impl Channel for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::Requested | EventKind::Approved | EventKind::Denied | EventKind::Revoked
        )
    }

    async fn deliver(&self, notice: &Notice) -> Result<(), ChannelError> {
        // Serialised once: the bytes signed are the bytes sent.
        let body = serde_json::to_vec(&payload(self.format, notice.kind, &notice.approval))
            .map_err(|e| ChannelError::Rejected(e.to_string()))?;
        // Per attempt, so that a retry is not taken for a replay.
        let timestamp = crate::clock::now_secs();
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &notice.id)
            .header("webhook-timestamp", timestamp);
        if !self.keys.is_empty() {
            let signature = signing::signature(&self.keys, &notice.id, timestamp, &body);
            request = request.header("webhook-signature", signature);
        }
        match request.body(body).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            // The receiver read this notice and will never take it: given
            // up, so that it does not hold back the webhook's next ones. A
            // wrong URL (404) or a receiver in trouble (5xx) is retried.
            Ok(r) if matches!(r.status().as_u16(), 400 | 413 | 422) => Err(ChannelError::Rejected(
                format!("the receiver refused it: HTTP {}", r.status()),
            )),
            Ok(r) => Err(ChannelError::Refused(r.status().as_u16())),
            // Without the URL: it may be a secret.
            Err(e) => Err(ChannelError::Unreachable(e.without_url().to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_a_webhook_path_nor_its_secrets() {
        let hook = Webhook::new(
            "ops",
            "https://hooks.slack.com/services/T0/B0/XyZsecret",
            Format::Slack,
        );
        assert_eq!(
            format!("{hook:?}"),
            r#"Webhook { name: "ops", url: "https://hooks.slack.com", format: Slack, signing_keys: 0 }"#
        );
        let odd = Webhook::new("", "https://u:p/w@hooks.example/x", Format::Json);
        assert!(!format!("{odd:?}").contains("p/w"), "{odd:?}");

        let secret = SigningKey::generate();
        let signed = Webhook::new("audit", "https://hooks.example:8443/in?k=v", Format::Json)
            .signed_with(vec![SigningKey::parse(&secret).unwrap()]);
        let shown = format!("{signed:?}");
        assert_eq!(
            shown,
            r#"Webhook { name: "audit", url: "https://hooks.example:8443", format: Json, signing_keys: 1 }"#
        );
        let key = secret.trim_start_matches(signing::PREFIX);
        assert!(!shown.contains(key) && !format!("{:?}", signed.keys).contains(key));
    }
}
