//! Slack's interactivity endpoint: the Approve and Deny buttons, and the
//! reason modal. A request is believed only when signed with the app's
//! signing secret, recent, never seen before, and from the configured
//! workspace and app; the clicker must be a Slack user `[slack.users]`
//! maps to an approver, and is then judged by [`Lifecycle::rule`] like an
//! approver on the admin API. Whatever is refused is told to the clicker;
//! nothing is recorded on any error.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::channel::SlackChannel;
use super::message::{self, APPROVE, DENY, REASON_BLOCK, REASON_INPUT, REASON_VIEW};
use super::verify::{self, SIGNATURE, TIMESTAMP};
use crate::approval::approvers::{Approver, KnownAs, Method, SignedIn};
use crate::approval::lifecycle::RuleError;
use crate::approval::{Lifecycle, Ruling, StoreError};
use crate::config::SlackConfig;
use crate::text::mrkdwn;

/// How long a signature is remembered against replays: the window a
/// timestamp is accepted in spans twice [`verify::WINDOW_SECS`] (before
/// and after this clock), and a minute more covers the rounding of
/// timestamps to seconds; a replay is refused by one or the other.
const REPLAY_MEMORY: Duration = Duration::from_secs(2 * verify::WINDOW_SECS as u64 + 60);
/// Slack waits 3 seconds for an answer (and a click's `trigger_id` lasts
/// as long): opening the modal must end this long after the request came,
/// however long the store took before it, with room for the answer.
const VIEW_DEADLINE: Duration = Duration::from_millis(2500);
/// Less time than this left: the modal is not asked for.
const VIEW_LEAST: Duration = Duration::from_millis(200);
/// Slack's payloads carry the whole message clicked: a few hundred KiB at
/// most.
const MAX_BODY: usize = 1024 * 1024;

/// The endpoint's state. Cheap to clone.
#[derive(Clone)]
pub struct Interactivity {
    inner: Arc<Inner>,
}

struct Inner {
    config: SlackConfig,
    approvals: Lifecycle,
    channel: Arc<SlackChannel>,
}

/// An interactivity payload: the parts used.
#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    team: Option<Id>,
    #[serde(default)]
    api_app_id: String,
    user: Option<Id>,
    #[serde(default)]
    trigger_id: String,
    channel: Option<Id>,
    #[serde(default)]
    actions: Vec<Action>,
    view: Option<View>,
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct View {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    #[serde(default)]
    state: ViewState,
}

#[derive(Default, Deserialize)]
struct ViewState {
    #[serde(default)]
    values: BTreeMap<String, BTreeMap<String, Input>>,
}

#[derive(Deserialize)]
struct Input {
    value: Option<String>,
}

impl Interactivity {
    pub fn new(config: SlackConfig, approvals: Lifecycle, channel: Arc<SlackChannel>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                approvals,
                channel,
            }),
        }
    }

    /// The endpoint at `[slack] path`.
    pub fn router(self) -> axum::Router {
        let path = self.inner.config.path.clone();
        axum::Router::new()
            .route(&path, axum::routing::post(handle))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }
}

/// Serves the endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    endpoint: Interactivity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, endpoint.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// A plain refusal of the request itself (not of a ruling).
fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

async fn handle(State(s): State<Interactivity>, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = Instant::now();
    let (result, response) = s.answer(&headers, &body, arrived).await;
    s.inner.approvals.sink().metrics().slack_request(result);
    response
}

/// What came of one request (the metric's `result`), and its answer.
type Answer = (&'static str, Response);

impl Interactivity {
    async fn answer(&self, headers: &HeaderMap, body: &[u8], arrived: Instant) -> Answer {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let cfg = &self.inner.config;
        let secret = cfg.signing_secret.expose().as_bytes();
        let now = crate::clock::now_secs();
        let signature =
            match verify::verify(secret, header(TIMESTAMP), header(SIGNATURE), body, now) {
                Ok(signature) => signature,
                Err(e) => {
                    tracing::warn!("slack interactivity request refused: {e}");
                    return (
                        "unverified",
                        refuse(StatusCode::UNAUTHORIZED, "not signed by Slack"),
                    );
                }
            };
        let payload = form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .and_then(|(_, v)| serde_json::from_str::<Payload>(&v).ok());
        let Some(payload) = payload else {
            let why = "expected a `payload` form field holding JSON";
            return ("invalid", refuse(StatusCode::BAD_REQUEST, why));
        };
        let team = payload.team.as_ref().map(|t| t.id.as_str());
        if team != Some(cfg.team_id.as_str()) || payload.api_app_id != cfg.api_app_id {
            // Signed, so Slack sent it: the signing secret is shared with
            // another app or workspace.
            tracing::warn!(
                team = team.unwrap_or(""),
                app = %payload.api_app_id,
                "slack interactivity request refused: not from the configured workspace (slack.team_id) and app (slack.api_app_id)"
            );
            let why = "not from the configured workspace and app";
            return ("foreign", refuse(StatusCode::FORBIDDEN, why));
        }
        // `verify` ran first: only Slack's own requests take a key here,
        // their signature as `verify` spells it (a replay with the hex in
        // other case is the same request).
        let seen = format!("slack:sig:{signature}");
        let store = self.inner.approvals.store();
        match store.first_sight(&seen, REPLAY_MEMORY).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("slack interactivity request refused: replayed");
                return ("replayed", refuse(StatusCode::UNAUTHORIZED, "replayed"));
            }
            Err(e) => {
                tracing::warn!("slack interactivity request refused: {e}");
                let why = "approvals are unavailable";
                return ("unavailable", refuse(StatusCode::SERVICE_UNAVAILABLE, why));
            }
        }
        let Some(user) = payload.user.as_ref().map(|u| u.id.clone()) else {
            return (
                "invalid",
                refuse(StatusCode::BAD_REQUEST, "expected `user.id`"),
            );
        };
        match payload.kind.as_str() {
            "block_actions" => self.block_actions(&payload, &user, arrived).await,
            "view_submission" => self.view_submission(&payload, &user).await,
            // Other interactions (a closed modal, a shortcut): nothing to do.
            _ => ("ignored", StatusCode::OK.into_response()),
        }
    }
}

impl Interactivity {
    /// The approver Slack user `user` is, if `[slack.users]` maps them.
    fn approver(&self, user: &str) -> Option<Approver> {
        let cfg = &self.inner.config;
        let a = cfg.users.get(user)?;
        Some(Approver {
            name: a.name.clone(),
            groups: a.groups.clone(),
            signed_in: SignedIn {
                method: Method::Slack,
                issuer: cfg.team_id.clone(),
                subject: user.to_owned(),
            },
            // Compared with callers' principals by the mapped name: the
            // same name a certificate or token of theirs would carry.
            known_as: KnownAs::Name,
        })
    }

    /// An Approve or Deny button: ruled on at once, or after a reason
    /// asked in a modal when the request requires one.
    async fn block_actions(&self, p: &Payload, user: &str, arrived: Instant) -> Answer {
        let Some((ruling, id)) = p.actions.iter().find_map(|a| match a.action_id.as_str() {
            APPROVE => Some((Ruling::Approve, a.value.as_str())),
            DENY => Some((Ruling::Deny, a.value.as_str())),
            _ => None,
        }) else {
            return ("ignored", StatusCode::OK.into_response());
        };
        let channel = p.channel.as_ref().map(|c| c.id.clone());
        let Some(approver) = self.approver(user) else {
            tracing::info!(slack_user = %user, approval = %id, "slack click refused: user not in slack.users");
            self.tell(channel, user, &unmapped(user));
            return ("refused", StatusCode::OK.into_response());
        };
        // Authorised first (as on the admin API): a reason is asked only
        // of someone who may rule.
        let result = match self.inner.approvals.rule(&approver, id, ruling, "").await {
            Ok(a) => {
                tracing::info!(approver = %approver.name, slack_user = %user, approval = %id, %ruling, status = %a.status, "ruling recorded from slack");
                self.refresh(id);
                "ruled"
            }
            Err(RuleError::ReasonRequired(_)) => {
                let opened = match self.inner.approvals.get(id).await {
                    Ok(a) => {
                        let view = message::reason_view(&a, ruling);
                        let api = self.inner.channel.api();
                        // What is left of Slack's 3 seconds after the
                        // store's calls.
                        match VIEW_DEADLINE.checked_sub(arrived.elapsed()) {
                            Some(left) if left >= VIEW_LEAST => api
                                .open_view(&p.trigger_id, &view, left)
                                .await
                                .map_err(|e| e.to_string()),
                            _ => Err("the approval store answered too slowly".to_owned()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = opened {
                    tracing::warn!(approval = %id, "slack reason dialog not opened: {e}");
                    let text = format!(
                        "Nothing was recorded: this request needs a reason, and the dialog asking for it could not be opened ({}). Try again, or use `countersign approvals {ruling} {} --reason …`.",
                        mrkdwn(&e),
                        mrkdwn(id)
                    );
                    self.tell(channel, user, &text);
                    "refused"
                } else {
                    "reason_asked"
                }
            }
            Err(e) => {
                tracing::info!(approver = %approver.name, slack_user = %user, approval = %id, "slack click refused: {e}");
                self.tell(
                    channel,
                    user,
                    &format!("Nothing was recorded: {}", mrkdwn(&refusal(&e))),
                );
                "refused"
            }
        };
        (result, StatusCode::OK.into_response())
    }

    /// The reason modal's submission: the ruling with its reason, or the
    /// refusal shown in the modal.
    async fn view_submission(&self, p: &Payload, user: &str) -> Answer {
        let Some(view) = p.view.as_ref().filter(|v| v.callback_id == REASON_VIEW) else {
            return ("ignored", StatusCode::OK.into_response());
        };
        let Some((ruling, id)) = message::parse_metadata(&view.private_metadata) else {
            let why = "this dialog names no request: nothing was recorded";
            return ("invalid", modal_error(why));
        };
        let Some(approver) = self.approver(user) else {
            tracing::info!(slack_user = %user, approval = %id, "slack reason refused: user not in slack.users");
            return ("refused", modal_error(&unmapped(user)));
        };
        let reason = view
            .state
            .values
            .get(REASON_BLOCK)
            .and_then(|b| b.get(REASON_INPUT))
            .and_then(|i| i.value.as_deref())
            .unwrap_or_default();
        match self
            .inner
            .approvals
            .rule(&approver, id, ruling, reason)
            .await
        {
            Ok(a) => {
                tracing::info!(approver = %approver.name, slack_user = %user, approval = %id, %ruling, status = %a.status, "ruling recorded from slack");
                self.refresh(id);
                // An empty answer closes the modal.
                ("ruled", StatusCode::OK.into_response())
            }
            Err(e) => {
                tracing::info!(approver = %approver.name, slack_user = %user, approval = %id, "slack reason refused: {e}");
                ("refused", modal_error(&refusal(&e)))
            }
        }
    }

    /// Tells `user` alone, in the background (the click is answered now).
    fn tell(&self, channel: Option<String>, user: &str, text: &str) {
        let Some(channel) = channel else {
            tracing::warn!(slack_user = %user, "slack refusal not told: the click names no channel");
            return;
        };
        let (api, user, text) = (
            self.inner.channel.api().clone(),
            user.to_owned(),
            text.to_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = api.post_ephemeral(&channel, &user, &text).await {
                tracing::warn!(slack_user = %user, "slack refusal not told: {e}");
            }
        });
    }

    /// Brings the request's messages up to date, in the background. Read
    /// again first: a ruling made meanwhile elsewhere is shown, not undone
    /// (the outbox updates them too, from the audit stream).
    fn refresh(&self, id: &str) {
        let (approvals, channel, id) = (
            self.inner.approvals.clone(),
            self.inner.channel.clone(),
            id.to_owned(),
        );
        tokio::spawn(async move {
            let shown = match approvals.get(&id).await {
                Ok(a) => channel.show(&a).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = shown {
                tracing::debug!(approval = %id, "slack message not updated after a click (the outbox will): {e}");
            }
        });
    }
}

fn unmapped(user: &str) -> String {
    format!(
        "Nothing was recorded: your Slack user ({}) is not mapped to an approver. Ask countersign's operators to add it to [slack.users].",
        mrkdwn(user)
    )
}

/// A refused ruling in words for the clicker.
fn refusal(e: &RuleError) -> String {
    match e {
        RuleError::NotPermitted(why) => why.clone(),
        RuleError::ReasonRequired(_) => "this request requires a reason".into(),
        RuleError::Store(StoreError::AlreadyVoted { id, .. }) => {
            format!("you have already decided approval `{id}`")
        }
        RuleError::Store(e) => e.to_string(),
    }
}

/// The modal stays open, `why` under the reason.
fn modal_error(why: &str) -> Response {
    let why: String = crate::text::printable(why).chars().take(500).collect();
    let body = json!({"response_action": "errors", "errors": {REASON_BLOCK: why}});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
