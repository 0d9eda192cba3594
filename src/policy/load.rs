//! Reads a policy directory: every `*.cedar` and `*.cedarschema`, validated
//! strictly, with errors located by file, line and policy.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Effect, Entity, EntityUid, Policy, PolicyId, PolicySet, Request, Schema, SchemaFragment,
};
use miette::Diagnostic;

use super::shapes::Shapes;
use crate::approval::ApprovalParams;
use crate::request::fold::Declared;

use super::directory::Directory;
use super::guards::{GuardedActions, check_unread_bodies};
use super::rollout::{Mark, Rollout};
use super::slices::Slices;
use super::validate::{Against, Validated, validate};
use super::{PolicyError, Probe};

/// One located problem, printed as `file:line:col: [policy] message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<(usize, usize)>,
    pub policy: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": ")?;
        if let Some(p) = &self.policy {
            write!(f, "policy `{p}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A validated policy set and the schema it was validated against.
#[derive(Debug)]
pub struct Loaded {
    pub set: PolicySet,
    pub schema: Schema,
    pub files: Vec<PathBuf>,
    pub warnings: Vec<String>,
    /// Guarded policies (annotated `@approval`) and what they ask.
    pub guards: HashMap<String, ApprovalParams>,
    /// Actions a guarded policy may apply to: decisions on them are audited.
    pub guarded_actions: GuardedActions,
    /// The policies each declared action can meet.
    pub slices: Slices,
    /// Which policies are in shadow, and which are always enforced.
    pub rollout: Rollout,
    /// Every attribute name the schema declares: a request body key that
    /// folds like one without being it is refused.
    pub declared: Declared,
    /// Each entity type's attributes and each action's context, by name.
    pub shapes: Shapes,
    /// The entity data beside the policies; empty without an entities file.
    pub directory: Directory,
    /// How many policies this load validated: the others were found
    /// validated against the same schema by an earlier load.
    pub validated: usize,
}

impl Loaded {
    /// The policies that can apply to `action`: its slice, or the whole set
    /// for an action the schema does not declare.
    pub fn policies_for(&self, action: &EntityUid) -> &PolicySet {
        self.slices.get(action).unwrap_or(&self.set)
    }

    /// The policies `action` can meet, without those in shadow; `None`
    /// when no shadow policy can apply to it.
    pub fn enforced_for(&self, action: &EntityUid) -> Option<&PolicySet> {
        // The common case, no policy in shadow, costs no lookup.
        if self.rollout.shadow.is_empty() {
            return None;
        }
        let declared = self.slices.contains(action);
        if !self.rollout.shadows(action, declared) {
            return None;
        }
        self.rollout.enforced_for(action)
    }

    /// `action` with its action-group ancestors, when it has any.
    pub fn action_entity(&self, action: &EntityUid) -> Option<&Entity> {
        self.slices.grouped(action)
    }
}

impl Loaded {
    /// No policies: every request is denied. Served while no valid set has
    /// loaded, so that the sidecar answers (and reports not ready).
    pub fn empty() -> Self {
        Self {
            set: PolicySet::new(),
            // INVARIANT: an empty schema text is a valid schema.
            schema: Schema::from_cedarschema_str("")
                .map(|(s, _)| s)
                .unwrap_or_else(|_| unreachable!("empty schema")),
            files: Vec::new(),
            warnings: Vec::new(),
            guards: HashMap::new(),
            guarded_actions: GuardedActions::default(),
            slices: Slices::default(),
            rollout: Rollout::default(),
            declared: Declared::default(),
            shapes: Shapes::default(),
            directory: Directory::default(),
            validated: 0,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) text: String,
}

/// A policy directory's schema, policy and entity files, as read.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Sources {
    schemas: Vec<Source>,
    policies: Vec<Source>,
    entities: Vec<Source>,
}

impl Sources {
    /// Every file, schemas first.
    pub(super) fn files(&self) -> impl Iterator<Item = &Source> {
        self.schemas
            .iter()
            .chain(&self.policies)
            .chain(&self.entities)
    }
}

/// Loads and validates `dir`. Every problem found is reported, not only the
/// first, so that one `policy validate` run lists them all.
pub fn load_dir(dir: &Path, probes: &[Probe]) -> Result<Loaded, PolicyError> {
    load_sources(dir, read_dir(dir)?, probes, &mut Validated::default())
}

/// Reads the schema and policy files of `dir`.
pub(super) fn read_dir(dir: &Path) -> Result<Sources, PolicyError> {
    // A directory that is missing or lacks files is named absolute: a
    // relative one leaves the reader guessing which working directory.
    let looked_in = || std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if !dir.is_dir() {
        return Err(PolicyError::NotADirectory(looked_in()));
    }
    let mut found = Found::default();
    collect(dir, &mut found)?;
    let Found {
        policies: policy_files,
        schemas: schema_files,
        entities: entity_files,
    } = found;
    if schema_files.is_empty() {
        return Err(PolicyError::NoSchema(looked_in()));
    }
    if policy_files.is_empty() {
        return Err(PolicyError::NoPolicies(looked_in()));
    }
    let read = |p: PathBuf| -> Result<Source, PolicyError> {
        let text = std::fs::read_to_string(&p).map_err(|source| PolicyError::Io {
            path: p.clone(),
            source,
        })?;
        Ok(Source { path: p, text })
    };
    let schemas = schema_files
        .into_iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let policies = policy_files
        .into_iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let entities = entity_files
        .into_iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sources {
        schemas,
        policies,
        entities,
    })
}

/// Validates what was read from `dir`. Policies found in `validated` (clean
/// against the same schema) are not validated again; `validated` is left
/// holding this set's clean policies.
pub(super) fn load_sources(
    dir: &Path,
    Sources {
        schemas,
        policies: sources,
        entities,
    }: Sources,
    probes: &[Probe],
    validated: &mut Validated,
) -> Result<Loaded, PolicyError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let schema = parse_schema(dir, &schemas, &mut problems, &mut warnings);
    let Parsed {
        set,
        owner,
        order,
        marked,
    } = parse_policies(dir, &sources, &mut problems);
    // Validate what parsed even when some files did not, so that one run
    // reports every problem.
    let Some((schema, json)) = schema else {
        return Err(PolicyError::Invalid(problems));
    };
    let declared = Declared::from_schema_json(&json);
    let shapes = Shapes::from_schema_json(&json);

    let against = Against {
        schema: &schema,
        fragments: &json,
        texts: schemas.iter().map(|s| s.text.clone()).collect(),
    };
    let in_order: Vec<&Policy> = order.iter().filter_map(|id| set.policy(id)).collect();
    let outcome = validate(&against, &in_order, validated);
    for e in &outcome.errors {
        let src = owner.get(e.policy_id()).map(|&i| &sources[i]);
        problems.push(located(src, dir, Some(e.policy_id().to_string()), e));
    }
    warnings.extend(outcome.warnings);
    check_probes(&schema, probes, &mut problems);
    let directory = match Directory::load(dir, &entities, &schema) {
        Ok(d) => d,
        Err(found) => {
            problems.extend(found);
            Directory::default()
        }
    };
    if !problems.is_empty() {
        return Err(PolicyError::Invalid(problems));
    }
    let Marked {
        guards,
        shadow,
        always,
    } = marked;
    check_unread_bodies(
        &set,
        &guards,
        &schema,
        probes,
        &owner,
        &sources,
        dir,
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(PolicyError::Invalid(problems));
    }
    let guarded_actions = GuardedActions::of(&set, &guards, &schema);
    let slices = Slices::of(&set, &schema);
    let rollout = Rollout::new(&set, &slices, &schema, shadow, always);
    Ok(Loaded {
        set,
        schema,
        files: sources.into_iter().map(|s| s.path).collect(),
        warnings,
        guards,
        guarded_actions,
        slices,
        rollout,
        declared,
        shapes,
        directory,
        validated: outcome.checked,
    })
}

/// The files of a policy directory, by kind.
#[derive(Default)]
struct Found {
    policies: Vec<PathBuf>,
    schemas: Vec<PathBuf>,
    /// `entities.json` and `*.entities.json`: other JSON files are not ours.
    entities: Vec<PathBuf>,
}

fn collect(dir: &Path, found: &mut Found) -> Result<(), PolicyError> {
    let io = |source| PolicyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        // Skips editor swap files and Kubernetes' `..data` copies of a
        // ConfigMap, which would otherwise load every policy twice.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(io)?;
        // Recurse into real directories only: a symlinked one could loop.
        // Symlinked files are followed (a ConfigMap mount is made of them).
        let is_file = kind.is_file() || (kind.is_symlink() && path.is_file());
        let name = name.to_string_lossy();
        if kind.is_dir() {
            collect(&path, found)?;
        } else if !is_file {
            continue;
        } else if path.extension().is_some_and(|e| e == "cedar") {
            found.policies.push(path);
        } else if path.extension().is_some_and(|e| e == "cedarschema") {
            found.schemas.push(path);
        } else if name == "entities.json" || name.ends_with(".entities.json") {
            found.entities.push(path);
        }
    }
    Ok(())
}

/// The schema, and each of its files in Cedar's JSON schema format.
fn parse_schema(
    dir: &Path,
    schemas: &[Source],
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Option<(Schema, Vec<serde_json::Value>)> {
    let mut fragments = Vec::new();
    let mut json = Vec::new();
    for src in schemas {
        match SchemaFragment::from_cedarschema_str(&src.text) {
            Ok((fragment, warns)) => {
                // The JSON form lists every record's attribute names.
                json.extend(fragment.clone().to_json_value().ok());
                fragments.push(fragment);
                warnings.extend(warns.map(|w| format!("{}: {w}", src.path.display())));
            }
            Err(e) => problems.push(located(Some(src), dir, None, &e)),
        }
    }
    if fragments.len() != schemas.len() {
        return None;
    }
    match Schema::from_schema_fragments(fragments) {
        Ok(schema) => Some((schema, json)),
        Err(e) => {
            problems.push(located(None, dir, None, &e));
            None
        }
    }
}

/// What the annotations of a set ask for.
#[derive(Default)]
struct Marked {
    /// Guarded policies (`@approval`) and what they ask.
    guards: HashMap<String, ApprovalParams>,
    /// `@shadow` policies.
    shadow: HashSet<String>,
    /// `@enforce("always")` forbids.
    always: HashSet<String>,
}

/// The policies of every file, as one set.
struct Parsed {
    set: PolicySet,
    /// The file (index in the sources) each policy is from.
    owner: HashMap<PolicyId, usize>,
    /// The ids in the order the files hold them: Cedar's set does not keep it.
    order: Vec<PolicyId>,
    marked: Marked,
}

/// Parses every file into one set. Policies are renamed to their `@id`
/// annotation, or `file#n` without one, so that decisions name them.
fn parse_policies(root: &Path, sources: &[Source], problems: &mut Vec<Problem>) -> Parsed {
    let mut set = PolicySet::new();
    let mut marked = Marked::default();
    let mut owner: HashMap<PolicyId, usize> = HashMap::new();
    let mut order = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let parsed = match PolicySet::from_str(&src.text) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs.iter() {
                    problems.push(located(Some(src), &src.path, None, e));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            problems.push(Problem {
                file: src.path.clone(),
                line: None,
                policy: None,
                message: "policy templates are not supported; write static policies".into(),
            });
        }
        // Cedar numbers a file's policies `policy0`, `policy1`, ... in order.
        let mut policies: Vec<_> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(0)
        });
        for (n, policy) in policies.into_iter().enumerate() {
            let name = match super::annotation(policy, "id") {
                Some(id) => id.to_owned(),
                None => format!(
                    "{}#{n}",
                    src.path.strip_prefix(root).unwrap_or(&src.path).display()
                ),
            };
            let id = PolicyId::new(&name);
            if let Some(&first) = owner.get(&id) {
                problems.push(Problem {
                    file: src.path.clone(),
                    line: src
                        .text
                        .find(&format!("@id(\"{name}\")"))
                        .map(|o| crate::location::line_col(&src.text, o)),
                    policy: Some(name.clone()),
                    message: format!(
                        "duplicate policy id; also used in `{}`",
                        sources[first].path.display()
                    ),
                });
                continue;
            }
            owner.insert(id.clone(), i);
            match ApprovalParams::from_annotations(|k| super::annotation(policy, k)) {
                None => {}
                Some(Ok(_)) if policy.effect() == Effect::Permit => problems.push(Problem {
                    file: src.path.clone(),
                    line: None,
                    policy: Some(name.clone()),
                    message: "`@approval` belongs on a `forbid` that an approval lifts (`unless { context.approval.granted }`), not on a `permit`".into(),
                }),
                Some(Ok(params)) => {
                    marked.guards.insert(name.clone(), params);
                }
                Some(Err(e)) => problems.push(Problem {
                    file: src.path.clone(),
                    line: src.text.find(&format!("@{}(", e.key)).map(|o| crate::location::line_col(&src.text, o)),
                    policy: Some(name.clone()),
                    message: e.to_string(),
                }),
            }
            match Mark::of(policy) {
                Ok(Mark::Enforced) => {}
                Ok(Mark::Shadow) => {
                    marked.shadow.insert(name.clone());
                }
                Ok(Mark::Always) => {
                    marked.always.insert(name.clone());
                }
                Err(message) => problems.push(Problem {
                    file: src.path.clone(),
                    line: ["@shadow", "@enforce"]
                        .iter()
                        .find_map(|a| src.text.find(a))
                        .map(|o| crate::location::line_col(&src.text, o)),
                    policy: Some(name.clone()),
                    message,
                }),
            }
            // INVARIANT: the id is new to the set (checked just above).
            match set.add(policy.new_id(id.clone())) {
                Ok(()) => order.push(id),
                Err(e) => problems.push(Problem {
                    file: src.path.clone(),
                    line: None,
                    policy: Some(name),
                    message: e.to_string(),
                }),
            }
        }
    }
    Parsed {
        set,
        owner,
        order,
        marked,
    }
}

/// Checks that every request the route table can produce fits the schema, so
/// that a route naming an undeclared action fails at start-up, not per call.
fn check_probes(schema: &Schema, probes: &[Probe], problems: &mut Vec<Problem>) {
    for p in probes {
        let req = Request::new(
            p.principal.clone(),
            p.action.clone(),
            p.resource.clone(),
            p.context.clone(),
            Some(schema),
        );
        if let Err(e) = req {
            let message = format!("{} does not fit the schema: {e}", p.label);
            if !problems.iter().any(|q| q.message == message) {
                problems.push(Problem {
                    file: PathBuf::from("config"),
                    line: None,
                    policy: None,
                    message,
                });
            }
        }
    }
}

fn located(
    src: Option<&Source>,
    fallback: &Path,
    policy: Option<String>,
    e: &dyn Diagnostic,
) -> Problem {
    let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let line = match (src, offset) {
        (Some(src), Some(off)) => Some(crate::location::line_col(&src.text, off)),
        _ => None,
    };
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message = format!("{message} (help: {help})");
    }
    Problem {
        file: src.map_or_else(|| fallback.to_owned(), |s| s.path.clone()),
        line,
        policy,
        message,
    }
}
