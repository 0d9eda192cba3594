//! The schema a batch of policies is validated against: the whole schema
//! narrowed to the actions the batch's scopes can match (the parent module
//! says why this gives Cedar's answer).

use std::collections::{BTreeSet, HashMap, HashSet};

use cedar_policy::{
    ActionConstraint, EntityId, EntityTypeName, EntityUid, Policy, Schema, SchemaFragment,
};
use serde_json::{Map, Value};

/// The schema's action hierarchy, as the narrowing needs it.
pub(super) struct Hierarchy {
    /// Each declared action, and each action below it (itself included).
    below: HashMap<EntityUid, Vec<EntityUid>>,
    /// Each declared action's ancestors, transitively.
    ancestors: HashMap<EntityUid, HashSet<EntityUid>>,
    /// Kept in every narrowed schema, with their ancestors: for each pair of
    /// action types that some action group joins, one member. Cedar decides
    /// whether an action of one type can be in one of another (for `in`
    /// between expressions it cannot resolve) from every declared action:
    /// with these, a narrowed schema answers as the whole one.
    witnesses: HashSet<EntityUid>,
}

impl Hierarchy {
    /// `None` when Cedar cannot give the schema's action entities: then
    /// nothing is narrowed.
    pub(super) fn of(schema: &Schema) -> Option<Self> {
        let entities = schema.action_entities().ok()?;
        let mut actions: Vec<&EntityUid> = schema.actions().collect();
        actions.sort_by_cached_key(ToString::to_string);
        let mut below: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
        let mut ancestors = HashMap::new();
        let mut witnesses = HashSet::new();
        let mut joined: HashSet<(String, String)> = HashSet::new();
        for &a in &actions {
            let up: HashSet<EntityUid> = entities.ancestors(a)?.cloned().collect();
            below.entry(a.clone()).or_default().push(a.clone());
            for g in &up {
                below.entry(g.clone()).or_default().push(a.clone());
                let pair = (g.type_name().to_string(), a.type_name().to_string());
                if joined.insert(pair) {
                    witnesses.insert(a.clone());
                    witnesses.extend(up.iter().cloned());
                }
            }
            ancestors.insert(a.clone(), up);
        }
        Some(Self {
            below,
            ancestors,
            witnesses,
        })
    }

    /// The actions `policy` can apply to, sorted; `None` for any action.
    /// An undeclared action is kept as written: Cedar's name check then
    /// fails the policy, and it is validated on the whole schema.
    pub(super) fn actions_of(&self, policy: &Policy) -> Option<Vec<EntityUid>> {
        let named = match policy.action_constraint() {
            ActionConstraint::Any => return None,
            ActionConstraint::Eq(uid) => vec![uid],
            ActionConstraint::In(groups) => groups,
        };
        let mut out: BTreeSet<EntityUid> = BTreeSet::new();
        for g in named {
            match self.below.get(&g) {
                Some(below) => out.extend(below.iter().cloned()),
                None => {
                    out.insert(g);
                }
            }
        }
        Some(out.into_iter().collect())
    }
}

/// One namespace of one schema file, in Cedar's JSON schema format.
struct Namespace {
    name: String,
    /// Its entity types, common types and annotations.
    rest: Map<String, Value>,
    /// Its actions: uid, name, declaration.
    actions: Vec<(EntityUid, String, Value)>,
}

/// Builds narrowed schemas.
pub(super) struct Narrow<'a> {
    full: &'a Schema,
    hierarchy: &'a Hierarchy,
    /// Each schema file's namespaces.
    files: Vec<Vec<Namespace>>,
    entity_types: HashSet<String>,
}

impl<'a> Narrow<'a> {
    /// From the whole schema and each of its files in Cedar's JSON format;
    /// `None` when a file is not in the form Cedar writes.
    pub(super) fn new(
        full: &'a Schema,
        fragments: &[Value],
        hierarchy: &'a Hierarchy,
    ) -> Option<Self> {
        let mut files = Vec::with_capacity(fragments.len());
        for fragment in fragments {
            let mut namespaces = Vec::new();
            for (name, body) in fragment.as_object()? {
                let mut rest = body.as_object()?.clone();
                let declared = match rest.remove("actions") {
                    Some(Value::Object(actions)) => actions,
                    None => Map::new(),
                    Some(_) => return None,
                };
                let action_type: EntityTypeName = match name.as_str() {
                    "" => "Action".parse().ok()?,
                    ns => format!("{ns}::Action").parse().ok()?,
                };
                let actions = declared
                    .into_iter()
                    .map(|(id, declaration)| {
                        let uid = EntityUid::from_type_name_and_id(
                            action_type.clone(),
                            EntityId::new(&id),
                        );
                        (uid, id, declaration)
                    })
                    .collect();
                namespaces.push(Namespace {
                    name: name.clone(),
                    rest,
                    actions,
                });
            }
            files.push(namespaces);
        }
        Some(Self {
            full,
            hierarchy,
            files,
            entity_types: entity_types(full),
        })
    }

    /// The schema with every entity and common type, the actions in `keep`
    /// as declared, their ancestors and the witnesses (applying to
    /// nothing), and no other action. `None` when Cedar does not build it,
    /// or it does not give the kept actions the whole schema's principals,
    /// resources and ancestors: the caller then uses the whole schema.
    pub(super) fn to(&self, keep: &HashSet<EntityUid>) -> Option<Schema> {
        let mut kept: HashSet<&EntityUid> = self.hierarchy.witnesses.iter().collect();
        for a in keep {
            kept.insert(a);
            kept.extend(self.hierarchy.ancestors.get(a).into_iter().flatten());
        }
        let mut fragments = Vec::with_capacity(self.files.len());
        for namespaces in &self.files {
            let mut json = Map::new();
            for ns in namespaces {
                let mut actions = Map::new();
                for (uid, id, declaration) in ns.actions.iter().filter(|(u, ..)| kept.contains(u)) {
                    let mut declaration = declaration.clone();
                    if !keep.contains(uid)
                        && let Some(d) = declaration.as_object_mut()
                    {
                        d.remove("appliesTo");
                    }
                    actions.insert(id.clone(), declaration);
                }
                let mut body = ns.rest.clone();
                body.insert("actions".into(), Value::Object(actions));
                json.insert(ns.name.clone(), Value::Object(body));
            }
            fragments.push(SchemaFragment::from_json_value(Value::Object(json)).ok()?);
        }
        let narrow = Schema::from_schema_fragments(fragments).ok()?;
        self.same_for(&narrow, keep).then_some(narrow)
    }

    /// Whether `narrow` declares the whole schema's entity types, and gives
    /// the kept actions its principals, resources and ancestors.
    fn same_for(&self, narrow: &Schema, keep: &HashSet<EntityUid>) -> bool {
        let Ok(entities) = narrow.action_entities() else {
            return false;
        };
        let applies = |s: &Schema, a: &EntityUid| {
            let p: Option<BTreeSet<String>> = s
                .principals_for_action(a)
                .map(|p| p.map(ToString::to_string).collect());
            let r: Option<BTreeSet<String>> = s
                .resources_for_action(a)
                .map(|r| r.map(ToString::to_string).collect());
            (p, r)
        };
        let ancestors = |a: &EntityUid| -> Option<HashSet<EntityUid>> {
            Some(entities.ancestors(a)?.cloned().collect())
        };
        entity_types(narrow) == self.entity_types
            && keep.iter().all(|a| {
                applies(self.full, a) == applies(narrow, a)
                    && ancestors(a).as_ref() == self.hierarchy.ancestors.get(a)
            })
    }
}

fn entity_types(schema: &Schema) -> HashSet<String> {
    schema.entity_types().map(ToString::to_string).collect()
}
