//! Who may rule on a request: never the one who asked nor the person an
//! agent acts for (separation of duties), only a member of the request's
//! approver groups, and only if a policy permits `Action::"approve"`.

use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};

use super::Approval;
use crate::policy::{Outcome, PolicyStore};

/// The Cedar action an approver must be permitted.
pub const APPROVE_ACTION: &str = r#"Action::"approve""#;

/// An authenticated approver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub name: String,
    pub groups: Vec<String>,
    pub signed_in: SignedIn,
    /// How callers' tokens name this person, besides `name`.
    pub known_as: KnownAs,
}

impl Approver {
    /// A certificate holder or a configured token's approver: known by
    /// `name` alone.
    pub fn configured(name: String, groups: Vec<String>, method: Method) -> Self {
        Self {
            name,
            groups,
            signed_in: SignedIn {
                method,
                ..SignedIn::default()
            },
            known_as: KnownAs::Name,
        }
    }

    /// The vote this approver casts, as recorded.
    pub fn voter(&self) -> Voter<'_> {
        Voter {
            name: &self.name,
            signed_in: &self.signed_in,
        }
    }
}

/// How an approver proved who they are; recorded with every vote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A client certificate from the configured CA.
    #[default]
    Certificate,
    /// A bearer token from `[[admin.approvers]]`.
    Token,
    /// An ID token from the identity provider of `[admin.oidc]`.
    Oidc,
    /// A click in Slack, from a user `[slack.users]` maps to an approver:
    /// the issuer is the Slack workspace (team id), the subject the user id.
    Slack,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Certificate => "certificate",
            Method::Token => "token",
            Method::Oidc => "oidc",
            Method::Slack => "slack",
        }
    }
}

/// The method, and for an identity provider (or Slack) its issuer and the
/// subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedIn {
    pub method: Method,
    pub issuer: String,
    pub subject: String,
}

/// What callers' principals (the `sub` of their verified JWT, the
/// on-behalf-of claim) would hold for this approver, to keep them from
/// deciding their own calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownAs {
    /// Their approver name, nothing else.
    Name,
    /// Their name, and this value of the configured claim.
    Also(String),
    /// Their identity provider's token lacks the configured claim: they
    /// cannot be compared with a human a call names.
    Unknown { claim: String },
}

/// Who cast a vote, as the store records it.
#[derive(Debug, Clone, Copy)]
pub struct Voter<'a> {
    pub name: &'a str,
    pub signed_in: &'a SignedIn,
}

impl Voter<'_> {
    /// Who this is at the identity provider, whatever name its token gives
    /// today: a second vote under a changed e-mail is the same person's.
    pub fn person(&self) -> Option<String> {
        (self.signed_in.method == Method::Oidc)
            .then(|| format!("oidc:{}#{}", self.signed_in.issuer, self.signed_in.subject))
    }
}

/// Signed in with a certificate: the method of votes cast by name alone
/// (tools, tests).
static BY_NAME: SignedIn = SignedIn {
    method: Method::Certificate,
    issuer: String::new(),
    subject: String::new(),
};

impl<'a> From<&'a str> for Voter<'a> {
    fn from(name: &'a str) -> Self {
        Voter {
            name,
            signed_in: &BY_NAME,
        }
    }
}

/// The rules, with the policies and entity types they read.
#[derive(Debug, Clone)]
pub struct Approvers {
    policies: Arc<PolicyStore>,
    user_type: EntityTypeName,
    group_type: EntityTypeName,
}

impl Approvers {
    /// The rules with the configured user and group entity types.
    pub fn from_config(policies: Arc<PolicyStore>, config: &crate::config::Config) -> Self {
        let identity = &config.mapper.identity;
        Self {
            policies,
            user_type: identity.user_type.clone(),
            group_type: identity.group_type.clone(),
        }
    }

    fn uid(&self, a: &Approver) -> EntityUid {
        EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(&a.name))
    }

    /// Why `approver` may not rule on `a`, if they may not.
    pub fn refusal(&self, approver: &Approver, a: &Approval) -> Option<String> {
        let me = self.uid(approver).to_string();
        // Trimmed and in any case: refusing the same person spelt otherwise
        // is the safe mistake.
        let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
        let is_me = |uid: &str| {
            // By id whatever the type: a workload (`Workload::"spiffe://…"`)
            // whose certificate names it on the admin API is the requester too.
            let id = uid
                .parse::<EntityUid>()
                .map(|u| u.id().unescaped().to_owned());
            uid == me
                || id.as_deref().is_ok_and(|id| {
                    same(id, &approver.name)
                        || matches!(&approver.known_as, KnownAs::Also(v) if same(v, id))
                })
        };
        if is_me(&a.info.principal) {
            return Some(format!(
                "`{me}` asked for this call and cannot decide its approval; another approver must"
            ));
        }
        if let Some(human) = a.info.on_behalf_of.as_deref()
            && is_me(human)
        {
            return Some(format!(
                "this call acts on behalf of `{human}`, who cannot decide its approval; another approver must"
            ));
        }
        if let KnownAs::Unknown { claim } = &approver.known_as {
            // Who the call names cannot be told apart from this approver:
            // refused, never assumed to be someone else.
            let human = a.info.on_behalf_of.as_deref().or_else(|| {
                let p = a.info.principal.parse::<EntityUid>().ok()?;
                (p.type_name() == &self.user_type).then_some(a.info.principal.as_str())
            });
            if let Some(human) = human {
                return Some(format!(
                    "this call names `{human}`, and your sign-in has no `{claim}` claim to tell whether that is you; separation of duties cannot be checked, so another approver must decide (or ask for `{claim}` in your identity provider's tokens)"
                ));
            }
        }
        let groups = &a.info.approver_groups;
        if !groups.is_empty() && !approver.groups.iter().any(|g| groups.contains(g)) {
            return Some(format!(
                "approval `{}` needs an approver in {}; `{}` is in {}",
                a.id,
                quoted(groups),
                approver.name,
                if approver.groups.is_empty() {
                    "no group".to_owned()
                } else {
                    quoted(&approver.groups)
                }
            ));
        }
        if !self.cedar_allows(approver, a) {
            return Some(format!(
                "no policy permits `{me}` to {APPROVE_ACTION} `{}` on `{}`",
                a.info.action, a.info.resource
            ));
        }
        None
    }

    /// Policies decide who may approve what: `Action::"approve"` on the
    /// request's resource, with the request's principal and action in context.
    fn cedar_allows(&self, approver: &Approver, a: &Approval) -> bool {
        let uid = self.uid(approver);
        let parents = approver
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.group_type.clone(), EntityId::new(g)))
            .collect();
        let (Ok(action), Ok(resource)) = (
            EntityUid::from_str(APPROVE_ACTION),
            EntityUid::from_str(&a.info.resource),
        ) else {
            return false;
        };
        let requested = EntityUid::from_str(&a.info.action).map(|u| u.id().unescaped().to_owned());
        let Ok(requested) = requested else {
            return false;
        };
        let context = Context::from_pairs([
            (
                "requester".to_owned(),
                RestrictedExpression::new_string(a.info.principal.clone()),
            ),
            (
                "requested_action".to_owned(),
                RestrictedExpression::new_string(requested),
            ),
        ]);
        let Ok(context) = context else { return false };
        let Ok(request) = Request::new(uid.clone(), action, resource, context, None) else {
            return false;
        };
        let Ok(entities) = Entities::from_entities([Entity::new_no_attrs(uid, parents)], None)
        else {
            return false;
        };
        // A policy in shadow grants nothing and refuses nothing here.
        self.policies.evaluate_enforced(&request, &entities).outcome == Outcome::Allow
    }
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|g| format!("`{g}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
