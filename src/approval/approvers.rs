//! Who may rule on a request: never the one who asked nor the person an
//! agent acts for (separation of duties), only a member of the request's
//! approver groups, and only if a policy permits `Action::"approve"`.

use std::str::FromStr;
use std::sync::Arc;

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
        // By id whatever the type: a workload (`Workload::"spiffe://…"`)
        // whose certificate names it on the admin API is the requester too.
        let requester_id = a
            .info
            .principal
            .parse::<EntityUid>()
            .ok()
            .map(|u| u.id().unescaped().to_owned());
        if me == a.info.principal || requester_id.as_deref() == Some(approver.name.as_str()) {
            return Some(format!(
                "`{me}` asked for this call and cannot decide its approval; another approver must"
            ));
        }
        if a.info.on_behalf_of.as_deref() == Some(me.as_str()) {
            return Some(format!(
                "this call acts on behalf of `{me}`, who cannot decide its approval; another approver must"
            ));
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
