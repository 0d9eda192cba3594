//! Entity data beside the policies (`entities.json`, `*.entities.json`):
//! what a request names only by id (a user's groups, a dataset's owner),
//! validated against the schema and merged into each request's entities.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use cedar_policy::entities_errors::EntitiesError;
use cedar_policy::{Entities, Entity, EntityUid, EvalResult, RestrictedExpression, Schema};
use miette::Diagnostic;

use super::load::{Problem, Source};

/// Why entity data does not load, or does not combine with a request's.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    /// Not JSON, not Cedar's entities format, or not what the schema
    /// declares: Cedar's reason.
    #[error("{0}")]
    Invalid(String),
    #[error("entity `{uid}` is already defined in `{first}`; define each entity in one file")]
    Duplicate { uid: String, first: PathBuf },
    /// Only across files: Cedar refuses a cycle within one file.
    #[error("the entity files {files} together do not form a hierarchy: {reason}")]
    Hierarchy { files: String, reason: String },
    #[error("the request's entities do not combine with the entity data: {0}")]
    Merge(String),
}

/// The entity data of a policy directory, indexed by uid. Empty when the
/// directory has no entities file.
#[derive(Default)]
pub struct Directory {
    index: HashMap<EntityUid, Stored>,
    files: Vec<PathBuf>,
}

/// One stored entity, with what a request needs of it precomputed.
struct Stored {
    /// As evaluation sees it: its ancestors closed across every file.
    entity: Entity,
    /// Its parts, to rebuild it with what a request adds.
    attrs: HashMap<String, RestrictedExpression>,
    tags: HashMap<String, RestrictedExpression>,
    ancestors: HashSet<EntityUid>,
    /// The entities of the directory evaluation can reach from this one in
    /// one step: those its attributes and tags name, and its ancestors
    /// that hold attributes or tags.
    edges: Vec<EntityUid>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("entities", &self.index.len())
            .field("files", &self.files)
            .finish()
    }
}

impl Directory {
    /// No entity data: requests are decided with what they carry.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// How many entities the files define.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The files the data was read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The entities a mapped request (HTTP, MCP or AuthZEN; the gate calls
    /// it) is evaluated with: its `entities` (the principal built from JWT
    /// claims, or an AuthZEN subject and resource built from their
    /// `properties`), merged with the stored data, the stored `resource`
    /// if the data defines it and the request does not carry it, plus
    /// every stored entity evaluation can reach from them (ancestors, and
    /// entities named by entity-typed
    /// attributes or tags, transitively), so that `principal in
    /// Group::"x"` and `resource.owner.department` work. A stored ancestor
    /// with neither attributes nor tags is not copied: the entities below
    /// it list it among their ancestors, which is all `in` needs.
    ///
    /// When the request and the data both describe an entity, the stored
    /// data wins attribute by attribute (a request may add an attribute the
    /// data lacks, never override one it holds: the data is what the policy
    /// author reviewed), and its parents are the union of both. An entity
    /// only the request carries is taken as carried, except action
    /// entities: the decision adds the action's own.
    ///
    /// `None` when the data has nothing to add: decide with `entities` as
    /// they are. The stored entities were checked at load. The cost grows
    /// with what is reachable, not with the size of the data: Cedar's hierarchy
    /// check costs about 1 µs per entity and per ancestor.
    pub fn for_request(
        &self,
        entities: &Entities,
        resource: &EntityUid,
    ) -> Result<Option<Entities>, DirectoryError> {
        match self.extend(entities, Some(resource))? {
            Some(all) => Entities::from_entities(all, None)
                .map(Some)
                .map_err(merge_error),
            None => Ok(None),
        }
    }

    /// The index's own copy of `uid`, if the data defines it.
    fn key(&self, uid: &EntityUid) -> Option<&EntityUid> {
        self.index.get_key_value(uid).map(|(k, _)| k)
    }

    /// `carried` merged with the data and what it reaches there, or `None`
    /// when it reaches nothing there.
    fn extend(
        &self,
        carried: &Entities,
        resource: Option<&EntityUid>,
    ) -> Result<Option<Vec<Entity>>, DirectoryError> {
        let mut seen: HashSet<&EntityUid> = HashSet::new();
        let mut todo: Vec<&EntityUid> = Vec::new();
        let mut overlap = false;
        for c in carried.iter() {
            let uid = c.uid();
            if is_action(&uid) {
                continue;
            }
            if let Some((key, stored)) = self.index.get_key_value(&uid) {
                // The merged entity stands in for the stored one, and
                // reaches what the stored one does.
                seen.insert(key);
                todo.extend(&stored.edges);
                overlap = true;
            }
            for a in carried.ancestors(&uid).into_iter().flatten() {
                todo.extend(self.key(a));
            }
            for (_, v) in c.attrs().chain(c.tags()) {
                if let Ok(v) = v {
                    named(&v, &mut |u| todo.extend(self.key(u)));
                }
            }
        }
        if let Some(r) = resource
            && carried.get(r).is_none()
        {
            todo.extend(self.key(r));
        }
        let mut reached = Vec::new();
        while let Some(uid) = todo.pop() {
            if seen.insert(uid)
                && let Some(stored) = self.index.get(uid)
            {
                reached.push(stored);
                todo.extend(&stored.edges);
            }
        }
        if !overlap && reached.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(carried.len() + reached.len());
        // Action entities (a schema-checked request carries all of them)
        // are left out: the decision adds the action's own, and Cedar's
        // hierarchy check would cost every request for each.
        for c in carried.iter().filter(|c| !is_action(&c.uid())) {
            out.push(match self.index.get(&c.uid()) {
                Some(stored) => stored.merge(c)?,
                None => c.clone(),
            });
        }
        out.extend(reached.into_iter().map(|s| s.entity.clone()));
        Ok(Some(out))
    }

    /// Reads `sources` against `schema`. Every problem is reported, as for
    /// the policies; a problem in one file leaves the others checked.
    pub(super) fn load(
        dir: &Path,
        sources: &[Source],
        schema: &Schema,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut owner: HashMap<EntityUid, usize> = HashMap::new();
        let mut all = Vec::new();
        for (i, src) in sources.iter().enumerate() {
            let parsed = match Entities::from_json_str(&src.text, Some(schema)) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(problem(&src.path, DirectoryError::Invalid(described(&e))));
                    continue;
                }
            };
            // Cedar adds the schema's actions (and refuses a listed one that
            // differs): the decision takes them from the schema.
            let mut entities: Vec<Entity> = parsed
                .into_iter()
                .filter(|e| !is_action(&e.uid()))
                .collect();
            entities.sort_by_cached_key(|e| e.uid().to_string());
            for e in entities {
                let uid = e.uid();
                if let Some(&first) = owner.get(&uid) {
                    let first = sources[first].path.clone();
                    let uid = uid.to_string();
                    problems.push(problem(&src.path, DirectoryError::Duplicate { uid, first }));
                    continue;
                }
                owner.insert(uid, i);
                all.push(e);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // One hierarchy across files: a user in one, its groups in another.
        let combined = Entities::from_entities(all, None).map_err(|e| {
            let files = sources
                .iter()
                .map(|s| {
                    format!(
                        "`{}`",
                        s.path.strip_prefix(dir).unwrap_or(&s.path).display()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let reason = described(&e);
            vec![problem(dir, DirectoryError::Hierarchy { files, reason })]
        })?;
        let mut index = HashMap::with_capacity(combined.len());
        for entity in combined.iter() {
            let stored = Stored::of(entity, &combined)
                .map_err(|e| vec![problem(dir, DirectoryError::Invalid(e))])?;
            index.insert(entity.uid(), stored);
        }
        Ok(Self {
            index,
            files: sources.iter().map(|s| s.path.clone()).collect(),
        })
    }
}

impl Stored {
    fn of(entity: &Entity, all: &Entities) -> Result<Self, String> {
        let (uid, attrs, ancestors) = entity.clone().into_inner();
        // An ancestor with neither attributes nor tags is left out: this
        // entity already lists it among its ancestors, so `in` holds, and
        // there is nothing else on it to read. Cedar's hierarchy check
        // costs every request about 1 µs per entity it is handed.
        let bare = |e: &Entity| e.attrs().next().is_none() && e.tags().next().is_none();
        let mut edges: Vec<EntityUid> = ancestors
            .iter()
            .filter(|a| all.get(a).is_some_and(|a| !bare(a)))
            .cloned()
            .collect();
        for (_, v) in entity.attrs().chain(entity.tags()) {
            if let Ok(v) = v {
                named(&v, &mut |u| edges.push(u.clone()));
            }
        }
        edges.retain(|e| *e != uid && all.get(e).is_some());
        edges.sort_unstable();
        edges.dedup();
        Ok(Self {
            tags: tags_of(entity)?,
            entity: entity.clone(),
            attrs,
            ancestors,
            edges,
        })
    }

    /// This entity with what `carried` adds: attributes and tags it does
    /// not hold, and parents.
    fn merge(&self, carried: &Entity) -> Result<Entity, DirectoryError> {
        let (uid, attrs, parents) = carried.clone().into_inner();
        let attrs: Vec<_> = attrs
            .into_iter()
            .filter(|(k, _)| !self.attrs.contains_key(k))
            .collect();
        let parents: Vec<_> = parents
            .into_iter()
            .filter(|p| !self.ancestors.contains(p))
            .collect();
        let tags: Vec<_> = tags_of(carried)
            .map_err(DirectoryError::Merge)?
            .into_iter()
            .filter(|(k, _)| !self.tags.contains_key(k))
            .collect();
        if attrs.is_empty() && parents.is_empty() && tags.is_empty() {
            return Ok(self.entity.clone());
        }
        let cloned = |m: &HashMap<String, RestrictedExpression>| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        Entity::new_with_tags(
            uid,
            cloned(&self.attrs).into_iter().chain(attrs),
            self.ancestors.iter().cloned().chain(parents),
            cloned(&self.tags).into_iter().chain(tags),
        )
        .map_err(|e| DirectoryError::Merge(e.to_string()))
    }
}

/// Whether `uid` is an action: Cedar reads any type named `Action` so.
fn is_action(uid: &EntityUid) -> bool {
    uid.type_name().basename() == "Action"
}

/// The entities a value names, however deep in sets and records.
fn named(v: &EvalResult, found: &mut impl FnMut(&EntityUid)) {
    match v {
        EvalResult::EntityUid(u) => found(u),
        EvalResult::Set(s) => s.iter().for_each(|v| named(v, found)),
        EvalResult::Record(r) => r.iter().for_each(|(_, v)| named(v, found)),
        _ => {}
    }
}

/// An entity's tags as expressions. Cedar hands tags out only as values,
/// so they go through the entity JSON format, read back as attributes.
fn tags_of(entity: &Entity) -> Result<HashMap<String, RestrictedExpression>, String> {
    if entity.tags().next().is_none() {
        return Ok(HashMap::new());
    }
    let json = entity.to_json_value().map_err(|e| described(&e))?;
    let carrier = serde_json::json!({
        "uid": json["uid"],
        "attrs": json["tags"],
        "parents": [],
    });
    let carrier = Entity::from_json_value(carrier, None).map_err(|e| described(&e))?;
    Ok(carrier.into_inner().1)
}

fn merge_error(e: EntitiesError) -> DirectoryError {
    DirectoryError::Merge(described(&e))
}

/// Cedar's message with its causes (its top line alone says only "error
/// during entity deserialization"), and its help when it has one.
fn described(e: &EntitiesError) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    if let Some(help) = e.help() {
        out = format!("{out} (help: {help})");
    }
    out
}

fn problem(file: &Path, e: DirectoryError) -> Problem {
    Problem {
        file: file.to_owned(),
        line: None,
        policy: None,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
