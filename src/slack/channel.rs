//! The Slack channel of the notification outbox: a request's message is
//! posted when it opens, to the channel of each of its approver groups
//! (else the default one), and updated on every later event, whoever
//! caused it (a click on any sidecar, the CLI, the expiry sweep). Where
//! each message is, is kept in the store as the request's channel note.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::{Api, ApiError, Posted};
use super::message;
use crate::approval::{Approval, ApprovalStore, EventKind};
use crate::config::SlackConfig;
use crate::notifications::{Channel, ChannelError, Notice};

/// The channel's name: its delivery progress and its notes are kept under
/// it.
pub const NAME: &str = "slack";

/// Where a request's messages are: per configured destination (a channel
/// id or name), the message posted there.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Note {
    #[serde(default)]
    posted: BTreeMap<String, Spot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spot {
    channel: String,
    ts: String,
}

impl From<Posted> for Spot {
    fn from(p: Posted) -> Self {
        Spot {
            channel: p.channel,
            ts: p.ts,
        }
    }
}

impl From<&Spot> for Posted {
    fn from(s: &Spot) -> Self {
        Posted {
            channel: s.channel.clone(),
            ts: s.ts.clone(),
        }
    }
}

/// Why a request's messages could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] crate::approval::StoreError),
}

impl ShowError {
    pub fn into_channel_error(self) -> ChannelError {
        match self {
            ShowError::Api(e) => e.into_channel_error(),
            ShowError::Store(e) => ChannelError::Unreachable(e.to_string()),
        }
    }
}

/// Posts and updates requests' messages.
#[derive(Debug)]
pub struct SlackChannel {
    api: Api,
    store: Arc<dyn ApprovalStore>,
    default_channel: Option<String>,
    channels: BTreeMap<String, String>,
    /// How long a note is kept: as long as the store keeps the request.
    note_ttl: Duration,
}

impl SlackChannel {
    pub fn new(
        config: &SlackConfig,
        api: Api,
        store: Arc<dyn ApprovalStore>,
        note_ttl: Duration,
    ) -> Self {
        Self {
            api,
            store,
            default_channel: config.default_channel.clone(),
            channels: config.channels.clone(),
            note_ttl,
        }
    }

    /// Where `a` is posted: its approver groups' channels, else the default.
    fn destinations(&self, a: &Approval) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for group in &a.info.approver_groups {
            let to = self.channels.get(group).or(self.default_channel.as_ref());
            if let Some(to) = to
                && !out.contains(to)
            {
                out.push(to.clone());
            }
        }
        if a.info.approver_groups.is_empty()
            && let Some(to) = &self.default_channel
        {
            out.push(to.clone());
        }
        out
    }

    /// Makes every message of `a` show it as it is now: posted where it is
    /// not yet (the note says), updated where it is. Every destination is
    /// tried; the first failure is returned, and a retry posts only what is
    /// still missing.
    pub async fn show(&self, a: &Approval) -> Result<(), ShowError> {
        let msg = message::message(a);
        let mut note: Note = match self.store.channel_note(&a.id, NAME).await? {
            // An unreadable note is treated as none: a message posted
            // twice is better than one never updated.
            Some(text) => serde_json::from_str(&text).unwrap_or_default(),
            None => Note::default(),
        };
        let mut first_error = None;
        // Where it belongs now, and wherever it was posted before (the
        // configuration may have changed since).
        let mut destinations = self.destinations(a);
        for to in note.posted.keys() {
            if !destinations.contains(to) {
                destinations.push(to.clone());
            }
        }
        if destinations.is_empty() {
            tracing::warn!(approval = %a.id, groups = ?a.info.approver_groups, "not posted to Slack: no channel for its approver groups in [slack.channels], and no slack.default_channel");
            return Ok(());
        }
        for to in destinations {
            let result = match note.posted.get(&to) {
                Some(spot) => match self.api.update(&Posted::from(spot), &msg).await {
                    Err(e) if e.message_gone() => self.api.post_message(&to, &msg).await.map(Some),
                    other => other.map(|()| None),
                },
                None => self.api.post_message(&to, &msg).await.map(Some),
            };
            match result {
                Ok(Some(posted)) => {
                    note.posted.insert(to, posted.into());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(approval = %a.id, to = %to, "slack message not brought up to date: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if !note.posted.is_empty() {
            // Kept (again) at every event, as long as the request can
            // still change and `note_ttl` after. A note lost here means a
            // message posted again on the retry.
            let now = crate::clock::now_secs();
            let open_for = a.expires_at.max(a.use_until).saturating_sub(now).max(0);
            let ttl = self.note_ttl + Duration::from_secs(open_for.unsigned_abs());
            let text = serde_json::to_string(&note).unwrap_or_default();
            self.store.set_channel_note(&a.id, NAME, &text, ttl).await?;
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    pub fn api(&self) -> &Api {
        &self.api
    }
}

#[async_trait::async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &str {
        NAME
    }

    fn wants(&self, kind: EventKind) -> bool {
        // Not `consumed`: the message said `approved`, and a use changes
        // nothing an approver acts on.
        kind != EventKind::Consumed
    }

    async fn deliver(&self, notice: &Notice) -> Result<(), ChannelError> {
        // The request as it is now (the notice read it at delivery): a
        // redelivered or late event shows the current state, never an
        // older one.
        self.show(&notice.approval)
            .await
            .map_err(ShowError::into_channel_error)
    }
}
