//! Strict validation of a policy set, policy by policy: each against only
//! the actions its scope can match, and a policy already validated against
//! the same schema is not validated again.
//!
//! Why this gives Cedar's answer. Cedar's `Validator::validate` checks each
//! policy on its own (the names it uses, then a typecheck under every
//! request environment the schema declares: every action × principal type ×
//! resource type); nothing in it looks across policies. So a set's errors
//! are the union of its policies' errors, and the checks across policies
//! (duplicate ids) are ours and stay on the whole set. The typecheck is what
//! grew: 10,000 policies over 2,000 actions meant 10,000 × 6,000
//! environments, each scanning all 2,000 actions for `in`.
//!
//! A policy's condition is `principal-scope && (action-scope && ...)`, and
//! Cedar types `&&` without its right side when the left is `false`. Under
//! an action the scope excludes, the action scope types `false`, so only
//! the principal scope is typechecked there, and that is one of
//! `principal`, `principal == E`, `principal in E`, `principal is T [in E]`,
//! which raise no error once `E` and `T` are declared (Cedar checks names
//! apart from the typecheck). Those environments add neither errors nor a
//! non-`false` type, so leaving them out changes neither errors nor
//! warnings ("impossible policy" is about all of them being `false`).
//!
//! So a batch of policies is first validated against a narrowed schema
//! (`narrow`): every entity and common type, the actions the batch's scopes
//! can match as declared, their ancestors, and a few actions that keep
//! Cedar's view of which action types can be in which; nothing else. What
//! narrowing removes is environments the scopes exclude, and names: a
//! policy that uses a removed name fails Cedar's name check there. So a
//! policy that passes there passes Cedar's own validation on the whole
//! schema; one that does not is validated again on the whole schema, and
//! only that result is reported: errors are always Cedar's, with Cedar's
//! locations. The tests compare the two on every combination of scope forms
//! and conditions that can fail.

use std::collections::{BTreeMap, HashMap, HashSet};

use cedar_policy::{
    EntityUid, Policy, PolicySet, Schema, ValidationError, ValidationMode, Validator,
};

mod narrow;

use narrow::{Hierarchy, Narrow};

/// How many actions a narrowed schema keeps for its batch. Each batch costs
/// a schema build, and each policy is typechecked under every action its
/// batch keeps: this balances the two.
const BATCH_ACTIONS: usize = 16;

/// Policies validated clean against one schema: what a reload reuses.
#[derive(Default)]
pub struct Validated {
    /// The schema files' text the entries hold for. Another schema clears
    /// every entry.
    schema: Vec<String>,
    /// By policy id and text (the policy as written, annotations
    /// included), the warnings Cedar gave.
    clean: HashMap<(String, String), Vec<String>>,
}

impl std::fmt::Debug for Validated {
    // The policies' text would drown any log or panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validated")
            .field("policies", &self.clean.len())
            .finish()
    }
}

/// The schema a set is validated against, and what narrowing it needs.
pub(super) struct Against<'a> {
    pub schema: &'a Schema,
    /// Each schema file, as Cedar's JSON schema format.
    pub fragments: &'a [serde_json::Value],
    /// Each schema file's text, in order.
    pub texts: Vec<String>,
}

/// What Cedar's validator says of a set.
pub(super) struct Outcome {
    /// Errors from validating the failing policies against the whole schema,
    /// in the set's order.
    pub errors: Vec<ValidationError>,
    pub warnings: Vec<String>,
    /// Policies validated this time (not found in `Validated`).
    pub checked: usize,
}

/// Validates `policies` (the set, in its order) strictly against
/// `against.schema`, reusing and then replacing `cache`.
pub(super) fn validate(against: &Against, policies: &[&Policy], cache: &mut Validated) -> Outcome {
    if cache.schema != against.texts {
        cache.schema.clone_from(&against.texts);
        cache.clean.clear();
    }
    // The id and the text as written (annotations included) are the key,
    // not a digest of them: no collision can pass a policy that was not
    // validated.
    let keys: Vec<(String, String)> = policies
        .iter()
        .map(|p| (p.id().to_string(), p.to_string()))
        .collect();
    let mut kept = HashMap::with_capacity(policies.len());
    let mut fresh = Vec::new();
    for (&p, key) in policies.iter().zip(&keys) {
        match cache.clean.remove_entry(key) {
            Some((key, warnings)) => {
                kept.insert(key, warnings);
            }
            None => fresh.push((p, key)),
        }
    }
    let checked = fresh.len();
    let found = validate_fresh(against, &fresh.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    let mut failing = Vec::new();
    for (p, key) in fresh {
        if found.failed.contains(&key.0) {
            failing.push((p, key));
        } else {
            let warnings = found.warnings.get(&key.0).cloned().unwrap_or_default();
            kept.insert(key.clone(), warnings);
        }
    }
    // The errors, and the failing policies' warnings, are Cedar's own on
    // the whole schema.
    let mut errors = Vec::new();
    let mut failed_warnings: HashMap<String, Vec<String>> = HashMap::new();
    if !failing.is_empty() {
        let whole = Validator::new(against.schema.clone()).validate(
            &set_of(failing.iter().map(|(p, _)| *p)),
            ValidationMode::Strict,
        );
        for w in whole.validation_warnings() {
            failed_warnings
                .entry(w.policy_id().to_string())
                .or_default()
                .push(w.to_string());
        }
        errors.extend(whole.validation_errors().cloned());
        // One that failed only narrowed (it names an action its scope
        // excludes) is clean: kept like the others.
        let erring: HashSet<String> = errors.iter().map(|e| e.policy_id().to_string()).collect();
        for (_, key) in failing.iter().filter(|(_, key)| !erring.contains(&key.0)) {
            let warnings = failed_warnings.remove(&key.0).unwrap_or_default();
            kept.insert((*key).clone(), warnings);
        }
    }
    let mut warnings = Vec::new();
    for key in &keys {
        let mine = match kept.get(key) {
            Some(w) => w.as_slice(),
            None => failed_warnings.get(&key.0).map_or(&[][..], Vec::as_slice),
        };
        warnings.extend(mine.iter().cloned());
    }
    // Only the policies of this set stay: a policy edited away, or a
    // schema replaced, leaves nothing behind.
    cache.clean = kept;
    Outcome {
        errors,
        warnings,
        checked,
    }
}

/// What the narrowed validations found.
#[derive(Default)]
struct Found {
    /// Policies with any error: validated again on the whole schema.
    failed: HashSet<String>,
    warnings: HashMap<String, Vec<String>>,
}

/// Validates `policies` in batches, each against its narrowed schema.
fn validate_fresh(against: &Against, policies: &[&Policy]) -> Found {
    let mut found = Found::default();
    if policies.is_empty() {
        return found;
    }
    let hierarchy = narrowable(against)
        .then(|| Hierarchy::of(against.schema))
        .flatten();
    let narrow = hierarchy
        .as_ref()
        .and_then(|h| Narrow::new(against.schema, against.fragments, h));
    let batches = match (&hierarchy, &narrow) {
        (Some(h), Some(_)) => batches(h, policies),
        _ => vec![(None, policies.to_vec())],
    };
    for (keep, members) in batches {
        let schema = keep
            .zip(narrow.as_ref())
            .and_then(|(keep, narrow)| narrow.to(&keep))
            .unwrap_or_else(|| against.schema.clone());
        let result = Validator::new(schema).validate(&set_of(members), ValidationMode::Strict);
        for e in result.validation_errors() {
            found.failed.insert(e.policy_id().to_string());
        }
        for w in result.validation_warnings() {
            found
                .warnings
                .entry(w.policy_id().to_string())
                .or_default()
                .push(w.to_string());
        }
    }
    found
}

/// A schema with incomplete parts (`external` declarations) fails every
/// policy in Cedar's validator: that is left to Cedar, on the whole schema.
/// So is a schema file without a JSON form to narrow.
fn narrowable(against: &Against) -> bool {
    against.schema.is_complete() && against.fragments.len() == against.texts.len()
}

/// `policies` in batches of the policies whose scopes match the same
/// actions, each batch with the actions to keep (`None`: the whole schema).
fn batches<'p>(
    hierarchy: &Hierarchy,
    policies: &[&'p Policy],
) -> Vec<(Option<HashSet<EntityUid>>, Vec<&'p Policy>)> {
    // In a stable order; `None`: any action, so the whole schema.
    let mut by_scope: BTreeMap<Option<Vec<EntityUid>>, Vec<&Policy>> = BTreeMap::new();
    for &p in policies {
        by_scope.entry(hierarchy.actions_of(p)).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut keep: HashSet<EntityUid> = HashSet::new();
    let mut members: Vec<&Policy> = Vec::new();
    for (scope, group) in by_scope {
        let Some(actions) = scope else {
            out.push((None, group));
            continue;
        };
        let grown = actions.iter().filter(|a| !keep.contains(*a)).count();
        if !members.is_empty() && keep.len() + grown > BATCH_ACTIONS {
            out.push((
                Some(std::mem::take(&mut keep)),
                std::mem::take(&mut members),
            ));
        }
        keep.extend(actions);
        members.extend(group);
    }
    if !members.is_empty() {
        out.push((Some(keep), members));
    }
    out
}

fn set_of<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> PolicySet {
    let mut set = PolicySet::new();
    for p in policies {
        // INVARIANT: these are policies of one loaded set, which took each
        // of them (static, with an id of its own): a part of it adds alike.
        if set.add(p.clone()).is_err() {
            unreachable!("policy `{}` is static and its id unique", p.id());
        }
    }
    set
}

#[cfg(test)]
mod tests;
