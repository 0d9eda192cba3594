//! Rolling a policy out: a policy annotated `@shadow` is decided and
//! recorded but not enforced, and a `forbid` annotated `@enforce("always")`
//! is enforced even where the configuration puts calls in shadow mode.

use std::collections::HashSet;

use cedar_policy::{Effect, EntityUid, Policy, PolicySet, Schema};

use super::slices::Slices;
use super::{Decision, Verdict};

/// Says loudly what is not enforced: the routes in shadow mode (given by
/// the caller, from the configuration) and the policies in shadow.
pub fn announce(loaded: &super::Loaded, shadow_routes: &[String]) {
    if !shadow_routes.is_empty() {
        let what = match shadow_routes {
            [every] if every == crate::request::EVERY_ROUTE => format!("{every} is"),
            _ => format!("calls on {} route(s) are", shadow_routes.len()),
        };
        tracing::warn!(
            routes = ?shadow_routes,
            "SHADOW MODE: {what} NOT ENFORCED: what the policies would refuse is let through and recorded with shadow=true; only `@enforce(\"always\")` forbids refuse"
        );
    }
    let shadow = &loaded.rollout.shadow;
    if !shadow.is_empty() {
        let mut ids: Vec<&String> = shadow.iter().collect();
        ids.sort();
        tracing::warn!(
            policies = ?ids,
            "{} policies in shadow (`@shadow`): decided and recorded, NOT ENFORCED",
            ids.len()
        );
    }
}

/// How one policy is rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Enforced as usual.
    Enforced,
    /// `@shadow`: decided and recorded, never enforced.
    Shadow,
    /// `@enforce("always")`: enforced in shadow mode too.
    Always,
}

impl Mark {
    /// The policy's mark, or why its annotations are refused.
    pub fn of(policy: &Policy) -> Result<Self, String> {
        let shadow = match super::annotation(policy, "shadow") {
            None => false,
            Some("" | "true") => true,
            Some(v) => {
                return Err(format!(
                    "`@shadow` takes no value (or `\"true\"`), got `{v}`; remove the annotation to enforce the policy"
                ));
            }
        };
        let always = match super::annotation(policy, "enforce") {
            None => false,
            Some("always") => true,
            Some(v) => {
                return Err(format!(
                    "`@enforce` takes `\"always\"` (enforced in shadow mode too), got `{v}`"
                ));
            }
        };
        match (shadow, always) {
            (true, true) => Err("a policy cannot be both `@shadow` and `@enforce(\"always\")`".into()),
            (false, true) if policy.effect() == Effect::Permit => Err("`@enforce(\"always\")` belongs on a `forbid`: in shadow mode every call is let through anyway".into()),
            (true, false) => Ok(Mark::Shadow),
            (false, true) => Ok(Mark::Always),
            (false, false) => Ok(Mark::Enforced),
        }
    }
}

/// The rollout marks of a policy set.
#[derive(Debug, Default)]
pub struct Rollout {
    /// Policies annotated `@shadow`.
    pub shadow: HashSet<String>,
    /// Forbids annotated `@enforce("always")`.
    pub always: HashSet<String>,
    /// Without the shadow policies: the set, cut by action. Built only when
    /// some policy is in shadow, so that a set without any costs nothing.
    enforced: Option<(PolicySet, Slices)>,
    /// Declared actions that some shadow policy may apply to.
    shadowed: HashSet<EntityUid>,
}

impl Rollout {
    pub fn new(
        set: &PolicySet,
        full: &Slices,
        schema: &Schema,
        shadow: HashSet<String>,
        always: HashSet<String>,
    ) -> Self {
        let mut out = Self {
            shadow,
            always,
            ..Self::default()
        };
        if out.shadow.is_empty() {
            return out;
        }
        let mut enforced = PolicySet::new();
        for p in set.policies() {
            let kept =
                out.shadow.contains(p.id().as_ref() as &str) || enforced.add(p.clone()).is_ok();
            // Ids are unique in `set`, so this cannot fail; if it did, no
            // policy would be left out of enforcement for want of a view.
            if !kept {
                out.shadow.clear();
                return out;
            }
        }
        for action in schema.actions() {
            if let Some(slice) = full.get(action)
                && slice
                    .policies()
                    .any(|p| out.shadow.contains(p.id().as_ref() as &str))
            {
                out.shadowed.insert(action.clone());
            }
        }
        let slices = Slices::of(&enforced, schema);
        out.enforced = Some((enforced, slices));
        out
    }

    /// Whether a shadow policy may apply to `action` (an undeclared action
    /// meets the whole set).
    pub fn shadows(&self, action: &EntityUid, declared: bool) -> bool {
        !self.shadow.is_empty() && (!declared || self.shadowed.contains(action))
    }

    /// The enforced policies `action` can meet, when some are in shadow.
    pub fn enforced_for(&self, action: &EntityUid) -> Option<&PolicySet> {
        let (set, slices) = self.enforced.as_ref()?;
        Some(slices.get(action).unwrap_or(set))
    }

    /// Whether `verdict` stands in shadow mode: an allow, or a refusal
    /// that an always-enforced forbid takes part in. A decision with
    /// evaluation errors names only the policies that failed, not the
    /// forbids that matched: it stands whenever an always-enforced forbid
    /// can apply at all (`always_applies`).
    pub fn stands_in_shadow(&self, verdict: &Verdict, always_applies: impl Fn() -> bool) -> bool {
        let decided_by = |d: &Decision| {
            d.policies.iter().any(|p| self.always.contains(p))
                || (!d.errors.is_empty() && always_applies())
        };
        match verdict {
            Verdict::Allow(_) => true,
            Verdict::Deny(d) => decided_by(d),
            Verdict::Approvable { denial, .. } => decided_by(denial),
        }
    }
}
