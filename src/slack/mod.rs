//! Approvals in Slack: each request is posted, with Approve and Deny
//! buttons, to its approver groups' channels, and its message kept up to
//! date as it is decided (`channel`, a channel of the notification
//! outbox); the buttons come back to the interactivity endpoint
//! (`interact`), which checks that Slack sent them (`verify`) and rules
//! through the same lifecycle as the admin API.
//!
//! - `api.rs`: the Web API calls, with the bot token.
//! - `message.rs`: the Block Kit message and the reason modal (escaped).
//! - `channel.rs`: posts and updates messages; remembers where they are.
//! - `verify.rs`: the request signature and its time window.
//! - `interact.rs`: the endpoint (axum): clicks and modal submissions.

pub mod api;
pub mod channel;
pub mod interact;
pub mod message;
pub mod verify;

use std::sync::Arc;

pub use channel::SlackChannel;
pub use interact::Interactivity;

use crate::approval::{ApprovalStore, Lifecycle};
use crate::config::SlackConfig;

/// The Slack channel for the outbox, posting with `config`'s bot token; its
/// notes kept as long as the store keeps requests (`retention`).
pub fn channel(
    config: &SlackConfig,
    store: Arc<dyn ApprovalStore>,
    retention: std::time::Duration,
) -> Arc<SlackChannel> {
    let api = api::Api::new(&config.api_url, config.bot_token.clone());
    Arc::new(SlackChannel::new(config, api, store, retention))
}

/// The interactivity endpoint, ruling through `approvals` and updating
/// messages through `channel`.
pub fn endpoint(
    config: &SlackConfig,
    approvals: Lifecycle,
    channel: Arc<SlackChannel>,
) -> Interactivity {
    Interactivity::new(config.clone(), approvals, channel)
}
