//! What the schema declares, by name: each entity type's attributes and
//! each action's context, as records of named members. Front doors whose
//! callers name types and attributes freely (AuthZEN) keep only what is
//! declared: a policy validated against the schema cannot read anything
//! else, so leaving it out changes no decision, and Cedar then checks the
//! types of what is kept.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

/// A declared type, as far as keeping members needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Record(BTreeMap<String, Shape>),
    Set(Box<Shape>),
    /// A common type, by its name in the namespace it was written in.
    Named {
        namespace: String,
        name: String,
    },
    /// A primitive, extension or entity type: kept whole.
    Leaf,
}

/// The schema's entity types and action contexts.
#[derive(Debug, Default, Clone)]
pub struct Shapes {
    /// Fully qualified entity type name -> its attributes (a record).
    entities: HashMap<String, Shape>,
    /// `Action::"name"` (qualified by its namespace) -> its context.
    contexts: HashMap<String, Shape>,
    /// `Namespace::Name` (or `Name`) -> the common type.
    common: HashMap<String, Shape>,
}

/// How deep common types may refer to each other before projection gives
/// up (the schema refuses cycles; this only bounds the work).
const MAX_DEPTH: usize = 32;

impl Shapes {
    /// From the JSON form of the schema's fragments.
    pub fn from_schema_json(fragments: &[Value]) -> Self {
        let mut out = Self::default();
        for fragment in fragments {
            let Some(namespaces) = fragment.as_object() else {
                continue;
            };
            for (ns, body) in namespaces {
                out.add_namespace(ns, body);
            }
        }
        out
    }

    fn add_namespace(&mut self, ns: &str, body: &Value) {
        let qualify = |name: &str| {
            if ns.is_empty() {
                name.to_owned()
            } else {
                format!("{ns}::{name}")
            }
        };
        if let Some(types) = body.get("commonTypes").and_then(Value::as_object) {
            for (name, ty) in types {
                self.common.insert(qualify(name), shape_of(ns, ty));
            }
        }
        if let Some(types) = body.get("entityTypes").and_then(Value::as_object) {
            for (name, decl) in types {
                let shape = decl
                    .get("shape")
                    .map_or(Shape::Record(BTreeMap::new()), |s| shape_of(ns, s));
                self.entities.insert(qualify(name), shape);
            }
        }
        if let Some(actions) = body.get("actions").and_then(Value::as_object) {
            for (name, decl) in actions {
                let context = decl
                    .get("appliesTo")
                    .and_then(|a| a.get("context"))
                    .map_or(Shape::Record(BTreeMap::new()), |c| shape_of(ns, c));
                let id = serde_json::to_string(name).unwrap_or_default();
                self.contexts
                    .insert(format!("{}::{id}", qualify("Action")), context);
            }
        }
    }

    /// Whether the schema declares entity type `name` (fully qualified).
    pub fn has_entity(&self, name: &str) -> bool {
        self.entities.contains_key(name)
    }

    /// `attrs` with only the attributes entity type `name` declares, at
    /// every depth; `None` if the type is not declared.
    pub fn entity_attrs(
        &self,
        name: &str,
        attrs: &Map<String, Value>,
    ) -> Option<Map<String, Value>> {
        let shape = self.entities.get(name)?;
        Some(self.keep(shape, attrs, 0))
    }

    /// The members of the record `name` of the context of `action` (its
    /// `Display` form, `Action::"read"`) declares: whether it is declared,
    /// and `members` with only what the declaration names.
    pub fn context_member(&self, action: &str, name: &str) -> Option<Shape> {
        let ctx = self.resolve(self.contexts.get(action)?, 0)?;
        match ctx {
            Shape::Record(members) => members.get(name).cloned(),
            _ => None,
        }
    }

    /// `context` with only the members the context of `action` declares;
    /// `None` if the action is not declared.
    pub fn context(
        &self,
        action: &str,
        context: &Map<String, Value>,
    ) -> Option<Map<String, Value>> {
        let shape = self.contexts.get(action)?;
        Some(self.keep(shape, context, 0))
    }

    /// `value` with only what `shape` declares.
    pub fn keep_value(&self, shape: &Shape, value: &Value) -> Value {
        self.keep_at(shape, value, 0)
    }

    fn keep(&self, shape: &Shape, map: &Map<String, Value>, depth: usize) -> Map<String, Value> {
        match self.resolve(shape, depth) {
            Some(Shape::Record(members)) => map
                .iter()
                .filter_map(|(k, v)| {
                    let member = members.get(k)?;
                    Some((k.clone(), self.keep_at(member, v, depth + 1)))
                })
                .collect(),
            // Not a record: nothing is declared under it.
            _ => Map::new(),
        }
    }

    fn keep_at(&self, shape: &Shape, value: &Value, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return value.clone();
        }
        match (self.resolve(shape, depth), value) {
            (Some(Shape::Record(_)), Value::Object(map)) => {
                Value::Object(self.keep(shape, map, depth))
            }
            (Some(Shape::Set(inner)), Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .map(|v| self.keep_at(inner, v, depth + 1))
                    .collect(),
            ),
            // A value of another kind is kept as sent: Cedar refuses it
            // with the declared type named.
            _ => value.clone(),
        }
    }

    /// `shape` with common type names replaced by what they name.
    fn resolve<'a>(&'a self, shape: &'a Shape, depth: usize) -> Option<&'a Shape> {
        match shape {
            Shape::Named { namespace, name } if depth <= MAX_DEPTH => {
                let found = if namespace.is_empty() {
                    self.common.get(name)
                } else {
                    self.common
                        .get(&format!("{namespace}::{name}"))
                        .or_else(|| self.common.get(name))
                };
                self.resolve(found?, depth + 1)
            }
            Shape::Named { .. } => None,
            other => Some(other),
        }
    }
}

/// One JSON schema type.
fn shape_of(ns: &str, ty: &Value) -> Shape {
    let kind = ty.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "Record" => Shape::Record(
            ty.get("attributes")
                .and_then(Value::as_object)
                .map(|attrs| {
                    attrs
                        .iter()
                        .map(|(k, v)| (k.clone(), shape_of(ns, v)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        "Set" => Shape::Set(Box::new(
            ty.get("element").map_or(Shape::Leaf, |e| shape_of(ns, e)),
        )),
        "String" | "Long" | "Boolean" | "Bool" | "Entity" | "Extension" => Shape::Leaf,
        // A name that may be a common type (the parser cannot tell).
        "EntityOrCommon" => named(ns, ty.get("name").and_then(Value::as_str).unwrap_or("")),
        other => named(ns, other),
    }
}

fn named(ns: &str, name: &str) -> Shape {
    Shape::Named {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::SchemaFragment;
    use serde_json::json;

    fn shapes(src: &str) -> Shapes {
        let (fragment, _) = SchemaFragment::from_cedarschema_str(src).unwrap();
        Shapes::from_schema_json(&[fragment.to_json_value().unwrap()])
    }

    const SCHEMA: &str = r#"
        type Soft = { soft?: Bool, reason?: { code?: String } };
        entity user { role?: String, tags?: Set<{ name: String }> };
        entity record { status?: String };
        action read appliesTo { principal: user, resource: record };
        action delete appliesTo {
            principal: user, resource: record,
            context: { action?: Soft, ip?: ipaddr }
        };
    "#;

    #[test]
    fn keeps_only_declared_attributes_at_every_depth() {
        let s = shapes(SCHEMA);
        let attrs = json!({"role": "admin", "department": "Sales",
            "tags": [{"name": "a", "colour": "red"}]});
        let kept = s.entity_attrs("user", attrs.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(kept),
            json!({"role": "admin", "tags": [{"name": "a"}]})
        );
        assert!(s.entity_attrs("spaceship", &Map::new()).is_none());
        assert!(s.has_entity("record") && !s.has_entity("Record"));
    }

    #[test]
    fn keeps_declared_context_members_through_common_types() {
        let s = shapes(SCHEMA);
        let ctx = json!({"action": {"soft": true, "force": 1, "reason": {"code": "x", "y": 2}},
            "time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"});
        let kept = s
            .context(r#"Action::"delete""#, ctx.as_object().unwrap())
            .unwrap();
        assert_eq!(
            Value::Object(kept),
            json!({"action": {"soft": true, "reason": {"code": "x"}}, "ip": "192.168.1.1"})
        );
        let read = s
            .context(r#"Action::"read""#, ctx.as_object().unwrap())
            .unwrap();
        assert!(read.is_empty());
        assert!(s.context(r#"Action::"write""#, &Map::new()).is_none());
        assert!(s.context_member(r#"Action::"delete""#, "action").is_some());
        assert!(s.context_member(r#"Action::"read""#, "action").is_none());
    }

    #[test]
    fn a_value_of_another_kind_is_kept_for_cedar_to_refuse() {
        let s = shapes(SCHEMA);
        let attrs = json!({"role": 7, "tags": "not a set"});
        let kept = s.entity_attrs("user", attrs.as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(kept), attrs);
    }
}
