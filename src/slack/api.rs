//! The Slack Web API calls countersign makes with the bot token: post and
//! update a request's message, tell one user something (ephemeral), open
//! the reason modal. Slack answers a refusal with HTTP 200 and
//! `{"ok": false, "error": "..."}`: a failure here like any other.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Secret;
use crate::notifications::ChannelError;

/// Longest one call may take; the outbox retries what fails.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call did not do what it asked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("slack is unreachable: {0}")]
    Unreachable(String),
    #[error("slack answered `{method}` with HTTP status {status}")]
    Status { method: &'static str, status: u16 },
    #[error("slack refused `{method}`: {error}")]
    Refused {
        method: &'static str,
        /// Slack's error code (`invalid_auth`, `channel_not_found`, ...).
        error: String,
    },
}

/// Slack's error codes that may pass if the call is made again later:
/// every other refusal stays (a revoked token, a channel the bot is not
/// in, blocks Slack will not take).
const TRANSIENT: [&str; 6] = [
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

impl ApiError {
    /// Whether Slack no longer has the message to update (deleted): post
    /// it again instead.
    pub fn message_gone(&self) -> bool {
        matches!(self, ApiError::Refused { error, .. }
            if ["message_not_found", "cant_update_message", "edit_window_closed"].contains(&error.as_str()))
    }

    /// For the outbox: a rate limit or an outage is tried again, a refusal
    /// for good is not.
    pub fn into_channel_error(self) -> ChannelError {
        match self {
            ApiError::Unreachable(why) => ChannelError::Unreachable(why),
            ApiError::Status { status, .. } => ChannelError::Refused(status),
            ApiError::Refused { ref error, .. }
                if error == "ratelimited" || error == "rate_limited" =>
            {
                ChannelError::Refused(429)
            }
            ApiError::Refused { ref error, .. } if TRANSIENT.contains(&error.as_str()) => {
                ChannelError::Unreachable(self.to_string())
            }
            e @ ApiError::Refused { .. } => ChannelError::Rejected(e.to_string()),
        }
    }
}

/// Where a posted message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel's id (also when it was named some other way).
    pub channel: String,
    pub ts: String,
}

/// The Web API with the bot token. `Debug` shows the base URL only.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Secret,
    client: reqwest::Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// `base` ends in `/` (`https://slack.com/api/`).
    pub fn new(base: &str, token: Secret) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            base: base.to_owned(),
            token,
            client,
        }
    }

    /// One call; its reply when Slack says `ok`.
    async fn call(
        &self,
        method: &'static str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let reply = self
            .client
            .post(format!("{}{method}", self.base))
            .bearer_auth(self.token.expose())
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))?;
        let status = reply.status();
        if !status.is_success() {
            return Err(ApiError::Status {
                method,
                status: status.as_u16(),
            });
        }
        let reply: Value = reply
            .json()
            .await
            .map_err(|e| ApiError::Unreachable(format!("`{method}` answered: {e}")))?;
        if reply["ok"] != true {
            let error = reply["error"].as_str().unwrap_or("no error given");
            return Err(ApiError::Refused {
                method,
                error: crate::text::shortened(error, 80),
            });
        }
        Ok(reply)
    }

    /// Posts `message` (`text` and `blocks`) to `channel`.
    pub async fn post_message(&self, channel: &str, message: &Value) -> Result<Posted, ApiError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        // Mentions and links only where the message writes them itself.
        body["unfurl_links"] = json!(false);
        body["unfurl_media"] = json!(false);
        let reply = self.call("chat.postMessage", &body, TIMEOUT).await?;
        match (reply["channel"].as_str(), reply["ts"].as_str()) {
            (Some(channel), Some(ts)) => Ok(Posted {
                channel: channel.to_owned(),
                ts: ts.to_owned(),
            }),
            _ => Err(ApiError::Refused {
                method: "chat.postMessage",
                error: "no channel and ts in the reply".into(),
            }),
        }
    }

    /// Replaces the message at `at` with `message`.
    pub async fn update(&self, at: &Posted, message: &Value) -> Result<(), ApiError> {
        let mut body = message.clone();
        body["channel"] = json!(at.channel);
        body["ts"] = json!(at.ts);
        self.call("chat.update", &body, TIMEOUT).await.map(drop)
    }

    /// Tells `user` alone, in `channel`.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), ApiError> {
        let body = json!({"channel": channel, "user": user, "text": text});
        self.call("chat.postEphemeral", &body, TIMEOUT)
            .await
            .map(drop)
    }

    /// Opens `view` for the user whose click gave `trigger_id`, within
    /// `timeout` (a trigger lasts 3 seconds, and Slack waits as long for
    /// the click's answer).
    pub async fn open_view(
        &self,
        trigger_id: &str,
        view: &Value,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let body = json!({"trigger_id": trigger_id, "view": view});
        self.call("views.open", &body, timeout).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(error: &str) -> ApiError {
        ApiError::Refused {
            method: "chat.postMessage",
            error: error.into(),
        }
    }

    #[test]
    fn a_rate_limit_or_outage_is_retried_and_a_refusal_for_good_is_not() {
        assert!(matches!(
            refused("ratelimited").into_channel_error(),
            ChannelError::Refused(429)
        ));
        assert!(refused("internal_error").into_channel_error().retryable());
        for error in [
            "invalid_auth",
            "channel_not_found",
            "not_in_channel",
            "invalid_blocks",
        ] {
            assert!(!refused(error).into_channel_error().retryable(), "{error}");
        }
        let status = ApiError::Status {
            method: "chat.update",
            status: 429,
        };
        assert!(status.into_channel_error().retryable());
        assert!(refused("message_not_found").message_gone());
        assert!(!refused("invalid_auth").message_gone());
    }

    #[test]
    fn debug_shows_no_token() {
        let api = Api::new("https://slack.com/api/", Secret::new("xoxb-t0ken".into()));
        let shown = format!("{api:?}");
        assert!(!shown.contains("xoxb-t0ken"), "{shown}");
    }
}
