//! What each kind of request is, and what it must get with Redis up and
//! with Redis down.

use std::time::Instant;

use serde_json::{Value, json};

/// What a request is, and so what it must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Read,
    Health,
    Anonymous,
    WrongGroup,
    DeniedExport,
    Malformed,
    OwnerExport,
    AgentExport,
    Open,
    EarlyToken,
    Approve,
    ApproveLost,
    Use,
    Replay,
    LostToken,
    Toggle,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Read,
        Kind::Health,
        Kind::Anonymous,
        Kind::WrongGroup,
        Kind::DeniedExport,
        Kind::Malformed,
        Kind::OwnerExport,
        Kind::AgentExport,
        Kind::Open,
        Kind::EarlyToken,
        Kind::Approve,
        Kind::ApproveLost,
        Kind::Use,
        Kind::Replay,
        Kind::LostToken,
        Kind::Toggle,
    ];

    /// What it is, and what it must get with Redis up / down.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Kind::Read => ("read, alice (analysts)", "200 / 200"),
            Kind::Health => ("/healthz, anonymous", "200 / 200"),
            Kind::Anonymous => ("read, anonymous", "403 `anonymous-denied` / same"),
            Kind::WrongGroup => ("read, carol (marketing)", "403 no permit / same"),
            Kind::DeniedExport => ("export, alice (guarded action, denied)", "403 / 403"),
            Kind::Malformed => ("export, malformed body", "400 / 400"),
            Kind::OwnerExport => ("export, dora (data-owners)", "200 / 503 audit"),
            Kind::AgentExport => (
                "export, agent (needs approval)",
                "403 approval_required / 503",
            ),
            Kind::Open => ("approval flow: open", "403 approval_required + token / 503"),
            Kind::EarlyToken => ("approval flow: token before approval", "403 pending / 503"),
            Kind::Approve => ("approval flow: `approvals approve` (exit code)", "0 / ≠0"),
            Kind::ApproveLost => ("approve an approval lost with Redis (exit code)", "≠0"),
            Kind::Use => ("approval flow: retry with token", "200 / 503"),
            Kind::Replay => (
                "approval flow: replay of a used token",
                "403 consumed / 503",
            ),
            Kind::LostToken => ("token issued before a Redis restart", "403 not valid / 503"),
            Kind::Toggle => (
                "reload probe, carol on the toggled dataset",
                "follows the file",
            ),
        }
    }

    /// Needs Redis: 503 while it is unreachable.
    pub fn guarded(self) -> bool {
        matches!(
            self,
            Kind::OwnerExport
                | Kind::AgentExport
                | Kind::Open
                | Kind::EarlyToken
                | Kind::Use
                | Kind::Replay
                | Kind::LostToken
        )
    }

    /// Must never be 200: no valid approval token comes with it.
    pub fn never_allowed(self) -> bool {
        matches!(
            self,
            Kind::AgentExport | Kind::Open | Kind::EarlyToken | Kind::Replay | Kind::LostToken
        )
    }

    /// An approval-token request, by where its approval stands when it is
    /// sent: `opened_in` is the Redis generation that holds the approval.
    pub fn token_use(opened_in: u64, approved: bool, used: bool) -> impl FnOnce(u64) -> Kind {
        move |now| {
            if now != opened_in {
                Kind::LostToken
            } else if used {
                Kind::Replay
            } else if approved {
                Kind::Use
            } else {
                Kind::EarlyToken
            }
        }
    }
}

/// One answer: an HTTP status, or the approvals CLI's exit code; -1 for none.
pub struct Answer {
    pub kind: Kind,
    pub status: i32,
    pub body: Value,
    pub started: Instant,
    pub ended: Instant,
    /// The Redis generation when it was sent.
    pub generation: u64,
}

impl Answer {
    fn text(&self, key: &str) -> &str {
        self.body[key].as_str().unwrap_or_default()
    }

    pub fn denied(&self, reason: &str) -> bool {
        self.status == 403
            && self.text("decision") == "deny"
            && self.text("reason").contains(reason)
    }

    fn approval_required(&self) -> bool {
        self.status == 403
            && self.text("decision") == "approval_required"
            && self.text("status") == "pending"
    }

    /// countersign's own 503, not Envoy's for a check that missed its timeout.
    pub fn countersign_503(&self) -> bool {
        self.status == 503
            && (self.text("reason").starts_with("approvals are unavailable")
                || self
                    .text("reason")
                    .starts_with("the audit trail cannot be written"))
    }

    pub fn as_expected_with_redis_up(&self) -> bool {
        match self.kind {
            Kind::Read => self.status == 200 && self.body == "hello from the upstream\n",
            Kind::Health | Kind::OwnerExport | Kind::Use => self.status == 200,
            Kind::Anonymous => {
                self.status == 403 && self.body["policies"] == json!(["anonymous-denied"])
            }
            Kind::WrongGroup | Kind::DeniedExport => self.denied("no policy permits this request"),
            Kind::Malformed => {
                self.status == 400 && self.text("reason").starts_with("bad request:")
            }
            Kind::AgentExport | Kind::Open => {
                self.approval_required() && self.text("approval_token").len() == 64
            }
            Kind::EarlyToken => self.approval_required(),
            Kind::Approve => self.status == 0,
            Kind::ApproveLost => self.status != 0,
            Kind::Replay => self.denied("is consumed"),
            Kind::LostToken => self.denied("the approval token is not valid"),
            Kind::Toggle => self.status == 200 || self.status == 403,
        }
    }

    pub fn as_expected_with_redis_down(&self) -> bool {
        match self.kind {
            Kind::Approve | Kind::ApproveLost => self.status != 0,
            k if k.guarded() => self.countersign_503(),
            _ => self.as_expected_with_redis_up(),
        }
    }
}
