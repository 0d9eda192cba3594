//! Cedar policies: load and validate a directory, evaluate, reload with an
//! atomic swap that keeps the last good set when a change is broken.

pub mod directory;
mod guards;
pub mod load;
pub mod rollout;
mod settle;
pub mod shapes;
mod slices;
mod validate;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::approval::ApprovalParams;
use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request};

pub use directory::{Directory, DirectoryError};
pub use load::{Loaded, Problem};
use validate::Validated;

/// The value of `policy`'s annotation `key`. Cedar's `Policy::annotation`
/// runs Cedar's parser on the key at each call: a fifth of loading 10,000
/// policies went there.
fn annotation<'p>(policy: &'p cedar_policy::Policy, key: &str) -> Option<&'p str> {
    policy
        .annotations()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// A sample request the loader checks against the schema (see
/// `request::Mapper::probes`).
#[derive(Debug, Clone)]
pub struct Probe {
    pub label: String,
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub context: Context,
    /// The route takes methods that carry a body and does not read it: an
    /// approver could not see that body, so no guard may apply here.
    pub unread_body: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy directory `{0}` does not exist or is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no `*.cedarschema` file in `{0}`: policies are validated strictly against a schema")]
    NoSchema(PathBuf),
    #[error("no `*.cedar` policy file in `{0}`")]
    NoPolicies(PathBuf),
    #[error("{} problem(s) in the policies:\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error(
        "the policy directory changed while it was read ({}): not reloaded; it is read again once it holds still (write each file elsewhere and rename it in, or swap a symlinked directory)",
        .0.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
    )]
    Changing(Vec<PathBuf>),
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
}

/// A decision and why: the determining policies, or the ones that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// For an allow, the permits that applied; for a deny, the forbids that
    /// applied, or the policies whose evaluation failed.
    pub policies: Vec<String>,
    /// Evaluation errors as `policy: message`. Any error denies.
    pub errors: Vec<String>,
}

impl Decision {
    pub fn reason(&self) -> String {
        match (
            self.outcome,
            self.errors.is_empty(),
            self.policies.is_empty(),
        ) {
            (Outcome::Allow, ..) => format!("permitted by {}", quoted(&self.policies)),
            (Outcome::Deny, false, true) => "the request could not be evaluated".into(),
            (Outcome::Deny, false, false) => {
                format!("policy evaluation failed in {}", quoted(&self.policies))
            }
            (Outcome::Deny, true, true) => "no policy permits this request".into(),
            (Outcome::Deny, true, false) => format!("forbidden by {}", quoted(&self.policies)),
        }
    }
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A decision that may be lifted by an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Decision),
    Deny(Decision),
    /// Denied only by guarded policies, and allowed with an approval.
    Approvable {
        /// The guarded policies' denial.
        denial: Decision,
        params: ApprovalParams,
    },
}

/// A decision as enforced (see [`PolicyStore::decide_enforced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    pub verdict: Verdict,
    /// A guarded policy may apply: the decision is audited.
    pub guarded: bool,
    /// What the whole policy set decided, where shadow mode or a policy
    /// in shadow made the enforced verdict another kind.
    pub would: Option<Verdict>,
}

/// Which policies decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// All of them.
    Full,
    /// All but those in shadow.
    Enforced,
}

/// Counters a reload leaves behind.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub reloads: AtomicU64,
    pub failures: AtomicU64,
}

/// The live policy set, swapped whole on reload.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    probes: Vec<Probe>,
    current: ArcSwap<Loaded>,
    authorizer: Authorizer,
    /// A valid set has loaded (at start or since).
    ready: AtomicBool,
    pub stats: ReloadStats,
    /// The policies of the last load that validated clean, so that a
    /// reload validates only what changed. Held for the whole reload: two
    /// reloads never run at once.
    validated: Mutex<Validated>,
}

impl PolicyStore {
    /// Loads `dir`; any problem is an error, so start-up refuses a bad set.
    pub fn open(dir: &Path, probes: Vec<Probe>) -> Result<Self, PolicyError> {
        let mut validated = Validated::default();
        let loaded = load::load_sources(dir, load::read_dir(dir)?, &probes, &mut validated)?;
        Ok(Self {
            dir: dir.to_owned(),
            probes,
            current: ArcSwap::from_pointee(loaded),
            authorizer: Authorizer::new(),
            ready: AtomicBool::new(true),
            stats: ReloadStats::default(),
            validated: Mutex::new(validated),
        })
    }

    /// As [`Self::open`], but a set that does not load leaves the store not
    /// ready and denying everything until a reload succeeds: the sidecar
    /// still answers (fail closed) and reports the problem.
    pub fn open_or_deny_all(dir: &Path, probes: Vec<Probe>) -> (Self, Option<PolicyError>) {
        let mut validated = Validated::default();
        let read = load::read_dir(dir);
        let (loaded, error) =
            match read.and_then(|s| load::load_sources(dir, s, &probes, &mut validated)) {
                Ok(l) => (l, None),
                Err(e) => (Loaded::empty(), Some(e)),
            };
        let store = Self {
            dir: dir.to_owned(),
            probes,
            current: ArcSwap::from_pointee(loaded),
            authorizer: Authorizer::new(),
            ready: AtomicBool::new(error.is_none()),
            stats: ReloadStats::default(),
            validated: Mutex::new(validated),
        };
        if error.is_some() {
            store.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        (store, error)
    }

    /// A valid policy set is in force.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// A mapped request's `entities` (its principal) with the entity data
    /// of the set in force merged in, and the stored `resource` (see
    /// [`Directory::for_request`]); `None` when there is nothing to add.
    /// Without entity data this only reads a flag.
    pub fn with_directory(
        &self,
        entities: &Entities,
        resource: &EntityUid,
    ) -> Result<Option<Entities>, DirectoryError> {
        let current = self.current.load();
        if current.directory.is_empty() {
            return Ok(None);
        }
        current.directory.for_request(entities, resource)
    }

    /// Re-reads the directory. On success the new set replaces the old one in
    /// a single swap; on failure the old set stays and the failure is counted.
    /// Only a directory that reads the same twice is loaded (see
    /// [`settle`]); a reload that drops a forbid says which, loudly.
    pub fn reload(&self) -> Result<Arc<Loaded>, PolicyError> {
        // A reload that panicked left at worst fewer entries: each one is
        // written whole.
        let mut validated = self
            .validated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let read = settle::read_settled(&self.dir, settle::GAP);
        let loaded = read.and_then(|sources| {
            load::load_sources(&self.dir, sources, &self.probes, &mut validated)
        });
        drop(validated);
        match loaded {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                let removed = settle::removed_forbids(&self.current(), &loaded);
                if !removed.is_empty() {
                    tracing::warn!(
                        removed = %removed.join(", "),
                        "policy reload removed forbid policies: check that this was meant"
                    );
                }
                self.current.store(loaded.clone());
                self.ready.store(true, Ordering::Relaxed);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(loaded)
            }
            // Not a failure: the write that moved it brings another reload.
            Err(e @ PolicyError::Changing(_)) => Err(e),
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Decides a request that may need an approval. `request(granted)` builds
    /// the request with `context.approval.granted` set as given.
    ///
    /// Evaluated without an approval first; if that denies only through
    /// guarded policies (`@approval`), and the same request with an approval
    /// would be allowed, the call is approvable. Both evaluations use the same
    /// policy set, even if a reload lands between them.
    pub fn decide<E>(
        &self,
        request: impl Fn(bool) -> Result<Request, E>,
        entities: &Entities,
    ) -> Result<Verdict, E> {
        self.decide_in(&self.current.load(), View::Full, request, entities)
    }

    /// Decides a call as it is enforced: without the policies in shadow
    /// and, for a call in shadow mode (`shadow`), letting it through unless
    /// an always-enforced forbid takes part in its refusal. Says whether a
    /// guarded policy may apply to `action` (so the decision is audited),
    /// and what the whole set decided where that differs, from the same
    /// policy set.
    pub fn decide_enforced<E>(
        &self,
        request: impl Fn(bool) -> Result<Request, E>,
        entities: &Entities,
        action: &EntityUid,
        shadow: bool,
    ) -> Result<Enforced, E> {
        let current = self.current.load();
        let full = self.decide_in(&current, View::Full, &request, entities)?;
        let shadowed = current.enforced_for(action).is_some();
        let guarded = |v: &Verdict| {
            matches!(v, Verdict::Approvable { .. }) || current.guarded_actions.contains(action)
        };
        // The common path: nothing in shadow, one evaluation.
        if !shadow && !shadowed {
            return Ok(Enforced {
                guarded: guarded(&full),
                verdict: full,
                would: None,
            });
        }
        let mut enforced = if shadowed {
            self.decide_in(&current, View::Enforced, &request, entities)?
        } else {
            full.clone()
        };
        // A set that did not load denies everything, in shadow mode too:
        // its always-enforced forbids are not known.
        let always_applies = || {
            current
                .policies_for(action)
                .policies()
                .any(|p| current.rollout.always.contains(p.id().as_ref() as &str))
        };
        if shadow && self.is_ready() && !current.rollout.stands_in_shadow(&enforced, always_applies)
        {
            enforced = Verdict::Allow(Decision {
                outcome: Outcome::Allow,
                policies: Vec::new(),
                errors: Vec::new(),
            });
        }
        // Any difference: another kind, other policies, other approvers.
        let differs = full != enforced;
        Ok(Enforced {
            guarded: guarded(&full) || guarded(&enforced),
            verdict: enforced,
            would: differs.then_some(full),
        })
    }

    fn decide_in<E>(
        &self,
        current: &Loaded,
        view: View,
        request: impl Fn(bool) -> Result<Request, E>,
        entities: &Entities,
    ) -> Result<Verdict, E> {
        let first = self.evaluate_in(current, view, &request(false)?, entities);
        if first.outcome == Outcome::Allow {
            return Ok(Verdict::Allow(first));
        }
        if !first.errors.is_empty() || first.policies.is_empty() {
            return Ok(Verdict::Deny(first));
        }
        let guards: Option<Vec<&ApprovalParams>> = first
            .policies
            .iter()
            .map(|p| current.guards.get(p))
            .collect();
        let Some(guards) = guards else {
            return Ok(Verdict::Deny(first));
        };
        let approved = self.evaluate_in(current, view, &request(true)?, entities);
        if approved.outcome != Outcome::Allow {
            return Ok(Verdict::Deny(approved));
        }
        Ok(Verdict::Approvable {
            params: ApprovalParams::merge(&guards),
            denial: first,
        })
    }

    /// Decides. Cedar skips a policy whose evaluation fails, which would let
    /// a broken `forbid` turn a deny into an allow; so any error denies.
    pub fn evaluate(&self, request: &Request, entities: &Entities) -> Decision {
        self.evaluate_in(&self.current.load(), View::Full, request, entities)
    }

    /// As [`Self::evaluate`], without the policies in shadow: what is
    /// enforced (who may approve, say).
    pub fn evaluate_enforced(&self, request: &Request, entities: &Entities) -> Decision {
        self.evaluate_in(&self.current.load(), View::Enforced, request, entities)
    }

    fn evaluate_in(
        &self,
        current: &Loaded,
        view: View,
        request: &Request,
        entities: &Entities,
    ) -> Decision {
        let (set, grouped) = match request.action() {
            Some(a) => {
                let enforced = match view {
                    View::Full => None,
                    View::Enforced => current.enforced_for(a),
                };
                (
                    enforced.unwrap_or_else(|| current.policies_for(a)),
                    current.action_entity(a),
                )
            }
            None => (&current.set, None),
        };
        // Only actions in action groups pay for the copy.
        let with_action;
        let entities = match grouped {
            Some(action) => match entities.clone().add_entities([action.clone()], None) {
                Ok(e) => {
                    with_action = e;
                    &with_action
                }
                Err(e) => {
                    return Decision {
                        outcome: Outcome::Deny,
                        policies: Vec::new(),
                        errors: vec![format!("cannot add the action's groups: {e}")],
                    };
                }
            },
            None => entities,
        };
        let response = self.authorizer.is_authorized(request, set, entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
        if !errors.is_empty() {
            let policies = diagnostics
                .errors()
                .map(|e| match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                        e.policy_id().to_string()
                    }
                })
                .collect();
            return Decision {
                outcome: Outcome::Deny,
                policies,
                errors,
            };
        }
        let outcome = match response.decision() {
            cedar_policy::Decision::Allow => Outcome::Allow,
            cedar_policy::Decision::Deny => Outcome::Deny,
        };
        let mut policies: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        policies.sort_unstable();
        Decision {
            outcome,
            policies,
            errors,
        }
    }
}

#[cfg(test)]
mod tests;
