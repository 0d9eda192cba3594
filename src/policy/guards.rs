//! Guarded policies: which actions they cover, and the routes whose bodies
//! an approver could not see.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cedar_policy::{ActionConstraint, EntityUid, PolicyId, PolicySet, Schema};

use super::Probe;
use super::load::{Problem, Source};
use crate::approval::ApprovalParams;

/// The actions named in guarded policies' scopes.
#[derive(Debug, Default)]
pub struct GuardedActions {
    /// A guarded policy constrains no action: every action is guarded.
    pub all: bool,
    pub actions: HashSet<EntityUid>,
}

impl GuardedActions {
    pub fn contains(&self, action: &EntityUid) -> bool {
        self.all || self.actions.contains(action)
    }

    /// From the guarded policies' action scopes; `action in [group]` covers
    /// the group's member actions as the schema declares them.
    pub(super) fn of(
        set: &PolicySet,
        guards: &HashMap<String, ApprovalParams>,
        schema: &Schema,
    ) -> Self {
        let mut out = Self::default();
        let members = schema.action_entities().ok();
        // By id, not by a pass over the set: called once per guard too.
        for policy in guards
            .keys()
            .filter_map(|id| set.policy(&PolicyId::new(id)))
        {
            match policy.action_constraint() {
                ActionConstraint::Any => out.all = true,
                ActionConstraint::Eq(uid) => {
                    out.actions.insert(uid);
                }
                ActionConstraint::In(groups) => {
                    for action in schema.actions() {
                        let inside = groups.contains(action)
                            || members.as_ref().is_some_and(|m| {
                                m.ancestors(action)
                                    .is_some_and(|mut a| a.any(|g| groups.contains(g)))
                            });
                        if inside {
                            out.actions.insert(action.clone());
                        }
                    }
                    out.actions.extend(groups);
                }
            }
        }
        out
    }
}

/// Refuses a guard on an action whose route takes a body it does not
/// read: the approval would bind a body no approver could see.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_unread_bodies(
    set: &PolicySet,
    guards: &HashMap<String, ApprovalParams>,
    schema: &Schema,
    probes: &[Probe],
    owner: &HashMap<PolicyId, usize>,
    sources: &[Source],
    dir: &Path,
    problems: &mut Vec<Problem>,
) {
    let mut unread: Vec<(&str, &EntityUid)> = probes
        .iter()
        .filter(|p| p.unread_body)
        .map(|p| (p.label.as_str(), &p.action))
        .collect();
    unread.dedup();
    if unread.is_empty() {
        return;
    }
    let mut ids: Vec<&String> = guards.keys().collect();
    ids.sort();
    for id in ids {
        let one = HashMap::from([(id.clone(), guards[id].clone())]);
        let covers = GuardedActions::of(set, &one, schema);
        for (label, action) in unread.iter().filter(|(_, a)| covers.contains(a)) {
            let policy_id = PolicyId::new(id);
            let file = owner
                .get(&policy_id)
                .map_or_else(|| dir.to_owned(), |&i| sources[i].path.clone());
            problems.push(Problem {
                file,
                line: None,
                policy: Some(id.clone()),
                message: format!(
                    "guards {action}, but {label} does not read the request body: approvers could not see what they approve. Set `body = true` on the route (and `with_request_body` in Envoy), or narrow the policy's scope"
                ),
            });
        }
    }
}
