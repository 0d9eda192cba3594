//! The policy set cut by action, so that a check meets only the policies
//! its action can match.

use std::collections::{HashMap, HashSet};

use cedar_policy::{ActionConstraint, Entity, EntityUid, Policy, PolicySet, Schema};

/// The set cut by action scope. Cedar evaluates every policy it is handed, so
/// a check on one action would pay for every other action's policies; a
/// policy whose scope excludes the action can neither apply nor fail, so
/// leaving it out gives the same decision.
#[derive(Debug, Default)]
pub struct Slices {
    by_action: HashMap<EntityUid, PolicySet>,
    /// Declared actions that belong to action groups, with their ancestors:
    /// requests carry no action entities, and without these `action in
    /// Action::"group"` would never match (a group `forbid` would not apply).
    grouped: HashMap<EntityUid, Entity>,
}

impl Slices {
    /// The slice of a declared action.
    pub fn get(&self, action: &EntityUid) -> Option<&PolicySet> {
        self.by_action.get(action)
    }

    /// Whether `action` is declared (has a slice).
    pub fn contains(&self, action: &EntityUid) -> bool {
        self.by_action.contains_key(action)
    }

    /// `action` with its action-group ancestors, when it has any.
    pub fn grouped(&self, action: &EntityUid) -> Option<&Entity> {
        self.grouped.get(action)
    }

    /// Each policy is dealt to the actions its scope can match, so the cost
    /// grows with the set plus the slices, not with actions times policies
    /// (2,000 actions by 10,000 policies took seconds).
    pub(super) fn of(set: &PolicySet, schema: &Schema) -> Self {
        let mut out = Self::default();
        let members = schema.action_entities().ok();
        let actions: Vec<&EntityUid> = schema.actions().collect();
        let ancestors: HashMap<&EntityUid, HashSet<EntityUid>> = actions
            .iter()
            .map(|&a| {
                let up = members
                    .as_ref()
                    .and_then(|m| m.ancestors(a))
                    .map(|up| up.cloned().collect())
                    .unwrap_or_default();
                (a, up)
            })
            .collect();
        // `action in G` matches G itself and every action below it.
        let mut under: HashMap<&EntityUid, Vec<&EntityUid>> = HashMap::new();
        for (&a, up) in &ancestors {
            under.entry(a).or_default().push(a);
            for g in up {
                under.entry(g).or_default().push(a);
            }
        }
        let mut dealt: HashMap<&EntityUid, Vec<&Policy>> = HashMap::new();
        for p in set.policies() {
            match p.action_constraint() {
                ActionConstraint::Any => {
                    for &a in &actions {
                        dealt.entry(a).or_default().push(p);
                    }
                }
                ActionConstraint::Eq(uid) => {
                    if let Some((&a, _)) = ancestors.get_key_value(&uid) {
                        dealt.entry(a).or_default().push(p);
                    }
                }
                ActionConstraint::In(groups) => {
                    let matched: HashSet<&EntityUid> = groups
                        .iter()
                        .filter_map(|g| under.get(g))
                        .flatten()
                        .copied()
                        .collect();
                    for a in matched {
                        dealt.entry(a).or_default().push(p);
                    }
                }
            }
        }
        for action in actions {
            let mut slice = PolicySet::new();
            let complete = dealt
                .get(action)
                .into_iter()
                .flatten()
                .all(|&p| slice.add(p.clone()).is_ok());
            // A slice that could not be built is left out: the whole set
            // then decides, which is slower but the same.
            if complete {
                out.by_action.insert(action.clone(), slice);
            }
            let up = &ancestors[action];
            if !up.is_empty() {
                out.grouped.insert(
                    action.clone(),
                    Entity::new_no_attrs(action.clone(), up.clone()),
                );
            }
        }
        out
    }
}
