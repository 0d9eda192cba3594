//! Notifications: people are told when an approval request opens and when
//! it is decided, through channels (webhooks: generic JSON, Slack, Teams).
//! Each channel takes one [`Notice`] at a time; [`outbox`] feeds them and
//! retries, so a slow or dead channel never delays a check.

pub mod outbox;
mod payload;
pub mod signing;
mod teams;
pub mod webhook;

/// What every channel says of a shadow request.
pub(crate) use payload::SHADOW_NOTE;

/// A request to describe, for the tests of every channel's messages.
#[cfg(test)]
pub(crate) use payload::tests::shadow_request;

use crate::approval::{Approval, EventKind};

/// One event to tell a channel of.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Unique per event and the same on every redelivery: receivers drop
    /// duplicates by it (Standard Webhooks' `webhook-id`).
    pub id: String,
    pub kind: EventKind,
    /// The request as read when the notice is delivered (it may have moved
    /// on since the event).
    pub approval: Approval,
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("refused with HTTP status {0}")]
    Refused(u16),
    /// Trying again cannot help (the receiver rejects this notice for good).
    #[error("rejected for good: {0}")]
    Rejected(String),
}

impl ChannelError {
    pub fn retryable(&self) -> bool {
        !matches!(self, ChannelError::Rejected(_))
    }
}

/// Somewhere notices go.
#[async_trait::async_trait]
pub trait Channel: Send + Sync + std::fmt::Debug {
    /// Stable across restarts and reordered settings: it names the channel
    /// in logs and metrics, and its delivery progress in the store.
    fn name(&self) -> &str;

    /// Whether this channel is told of `kind`.
    fn wants(&self, kind: EventKind) -> bool;

    /// One attempt; the outbox retries a failure.
    async fn deliver(&self, notice: &Notice) -> Result<(), ChannelError>;
}
