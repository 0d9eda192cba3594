//! An AuthZEN evaluation -> a Cedar request: subject and resource `type`
//! -> entity type (through `[authzen.types]`, else as written), `id` ->
//! entity id, `properties` -> attributes; action `name` -> `Action::"name"`;
//! `context` and `action.properties` (as `context.action`) -> the context.
//! Only what the schema declares is kept (see [`crate::policy::shapes`]);
//! Cedar checks the types of what is.

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request};
use serde_json::{Map, Value, json};

use super::wire::{Entity as WireEntity, Evaluation};
use crate::policy::Loaded;
use crate::request::MappedRequest;

/// Longest name a caller chose that a refusal quotes.
const NAME_CHARS: usize = 60;

fn shortened(name: &str) -> String {
    crate::text::shortened(name, NAME_CHARS)
}

/// The context member `action.properties` becomes.
pub const ACTION_MEMBER: &str = "action";
/// The context member the Access Request profile's approval reference
/// arrives in, and countersign's own `approval.granted` goes.
pub const APPROVAL_MEMBER: &str = "approval";

/// Why an evaluation cannot be put to Cedar. Messages name members and
/// types, never values (they reach spans and logs); Cedar's detail, which
/// quotes values, goes to the debug log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(
        "unknown {role} type `{kind}`: the policy schema declares no such entity type (map it in `[authzen.types]` or declare it)"
    )]
    UnknownType { role: &'static str, kind: String },
    #[error("unknown action `{0}`: the policy schema declares no such action")]
    UnknownAction(String),
    #[error("`{part}` does not fit what the policy schema declares for {ty}: {why}")]
    Misfit {
        part: &'static str,
        ty: String,
        why: String,
    },
    #[error("action `{action}` does not apply to a {principal} subject and a {resource} resource")]
    NotApplicable {
        action: String,
        principal: String,
        resource: String,
    },
    #[error("`context.action` is reserved: action properties go in `action.properties`")]
    ActionTwice,
}

/// AuthZEN types to Cedar types (`[authzen.types]`).
#[derive(Debug, Clone, Copy)]
pub struct TypeMap<'a>(pub &'a BTreeMap<String, EntityTypeName>);

/// An evaluation ready for the gate: the request, and the bytes an
/// approval binds (what it shows, canonically encoded).
#[derive(Debug)]
pub struct Mapped {
    pub request: MappedRequest,
    pub bound: Vec<u8>,
}

impl TypeMap<'_> {
    fn cedar_type(
        &self,
        role: &'static str,
        kind: &str,
        loaded: &Loaded,
    ) -> Result<EntityTypeName, MapError> {
        let unknown = || MapError::UnknownType {
            role,
            kind: shortened(kind),
        };
        let name = match self.0.get(kind) {
            Some(n) => n.clone(),
            None => EntityTypeName::from_str(kind).map_err(|_| unknown())?,
        };
        if !loaded.shapes.has_entity(&name.to_string()) {
            return Err(unknown());
        }
        Ok(name)
    }

    /// Maps `e` under the policy set `loaded`.
    pub fn map(&self, e: &Evaluation, loaded: &Loaded) -> Result<Mapped, MapError> {
        let schema = &loaded.schema;
        let (principal, subject_attrs) = self.entity("subject", &e.subject, loaded)?;
        let (resource, resource_attrs) = self.entity("resource", &e.resource, loaded)?;
        let action = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str("Action").unwrap_or_else(|_| unreachable!("a valid name")),
            EntityId::new(&e.action.name),
        );
        let action_key = action.to_string();
        let action_named = format!("action `{}`", shortened(&e.action.name));
        let mut context = e.context.clone();
        // The profile's approval reference is not authorization input;
        // countersign sets its own `approval.granted`.
        context.remove(APPROVAL_MEMBER);
        // Only `action.properties` fill `context.action`: one source, so
        // that what the PEP calls the action's properties is what is read.
        if context.contains_key(ACTION_MEMBER) {
            return Err(MapError::ActionTwice);
        }
        if !e.action.properties.is_empty() {
            context.insert(
                ACTION_MEMBER.to_owned(),
                Value::Object(e.action.properties.clone()),
            );
        }
        let mut kept = loaded
            .shapes
            .context(&action_key, &context)
            .ok_or_else(|| MapError::UnknownAction(shortened(&e.action.name)))?;
        let bound = bound(&subject_attrs, &resource_attrs, &kept);
        if loaded
            .shapes
            .context_member(&action_key, APPROVAL_MEMBER)
            .is_some()
        {
            kept.insert(APPROVAL_MEMBER.to_owned(), json!({"granted": false}));
        }
        let cedar_context = Context::from_json_value(Value::Object(kept), Some((schema, &action)))
            .map_err(|err| misfit("context", &action_named, &err))?;
        let entities = entities(
            [
                (principal.clone(), subject_attrs),
                (resource.clone(), resource_attrs),
            ],
            schema,
        )?;
        Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            cedar_context.clone(),
            Some(schema),
        )
        .map_err(|err| {
            use cedar_policy::RequestValidationError as V;
            match err {
                V::InvalidContext(_) | V::TypeOfContext(_) => {
                    misfit("context", &action_named, &err)
                }
                _ => {
                    tracing::debug!(error = %err, "AuthZEN request does not fit the schema");
                    MapError::NotApplicable {
                        action: shortened(&e.action.name),
                        principal: principal.type_name().to_string(),
                        resource: resource.type_name().to_string(),
                    }
                }
            }
        })?;
        let bytes = canonical(&Value::Object(bound.clone()));
        let request =
            MappedRequest::resolved(principal, action, resource, entities, cedar_context, bound)
                .map_err(|err| misfit("context", &action_named, &err))?;
        Ok(Mapped {
            request,
            bound: bytes,
        })
    }

    /// The uid of `e` and its attributes as the schema declares them.
    fn entity(
        &self,
        role: &'static str,
        e: &WireEntity,
        loaded: &Loaded,
    ) -> Result<(EntityUid, Map<String, Value>), MapError> {
        let ty = self.cedar_type(role, &e.kind, loaded)?;
        let attrs = loaded
            .shapes
            .entity_attrs(&ty.to_string(), &e.properties)
            .unwrap_or_default();
        Ok((
            EntityUid::from_type_name_and_id(ty, EntityId::new(&e.id)),
            attrs,
        ))
    }
}

/// The subject and resource as entities (one, if they are the same).
fn entities<const N: usize>(
    carried: [(EntityUid, Map<String, Value>); N],
    schema: &cedar_policy::Schema,
) -> Result<Entities, MapError> {
    let mut out: Vec<Entity> = Vec::with_capacity(N);
    let mut seen: Vec<(EntityUid, Map<String, Value>)> = Vec::with_capacity(N);
    for (uid, attrs) in carried {
        // The subject may be the resource: one entity, the subject's
        // attributes first.
        if let Some((_, first)) = seen.iter_mut().find(|(u, _)| *u == uid) {
            for (k, v) in attrs {
                first.entry(k).or_insert(v);
            }
            continue;
        }
        seen.push((uid, attrs));
    }
    for (uid, attrs) in seen {
        let role = if out.is_empty() {
            "subject.properties"
        } else {
            "resource.properties"
        };
        let json = json!({
            "uid": { "type": uid.type_name().to_string(), "id": uid.id().unescaped() },
            "attrs": attrs,
            "parents": [],
        });
        let entity = Entity::from_json_value(json, Some(schema))
            .map_err(|err| misfit(role, &format!("entity type `{}`", uid.type_name()), &err))?;
        out.push(entity);
    }
    Entities::from_entities(out, Some(schema))
        .map_err(|err| misfit("properties", "these entities", &err))
}

fn misfit(part: &'static str, ty: &str, err: &dyn std::fmt::Display) -> MapError {
    tracing::debug!(error = %err, part, "AuthZEN request does not fit the schema");
    MapError::Misfit {
        part,
        ty: ty.to_owned(),
        why: "a member is missing or has another type than declared".to_owned(),
    }
}

/// What an approval binds and shows, by where it sits in the request:
/// `subject.properties.role`, `context.ip`, `action.properties.soft`.
fn bound(
    subject: &Map<String, Value>,
    resource: &Map<String, Value>,
    context: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |prefix: &str, k: &str, v: &Value| {
        out.insert(format!("{prefix}{k}"), v.clone());
    };
    subject
        .iter()
        .for_each(|(k, v)| put("subject.properties.", k, v));
    resource
        .iter()
        .for_each(|(k, v)| put("resource.properties.", k, v));
    for (k, v) in context {
        match v {
            Value::Object(props) if k == ACTION_MEMBER => props
                .iter()
                .for_each(|(k, v)| put("action.properties.", k, v)),
            _ => put("context.", k, v),
        }
    }
    out
}

/// JSON with every object's keys sorted: the same members give the same
/// bytes whatever order they came in.
pub fn canonical(v: &Value) -> Vec<u8> {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(v)).unwrap_or_default()
}
