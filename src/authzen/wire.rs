//! AuthZEN requests as sent: JSON read into subjects, actions, resources
//! and contexts, with the spec's refusals (a missing member, a member of
//! the wrong type). Unknown members are ignored, as the spec requires.

use serde_json::{Map, Value};

/// Why a request (or one evaluation of a batch) cannot be evaluated. The
/// messages name members, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the request body must be a JSON object")]
    NotObject,
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("`{0}` must be {1}")]
    Type(String, &'static str),
    #[error("`{0}` must not be empty")]
    Empty(String),
    #[error("`evaluations` has {got} items; this PDP takes at most {max} in one request")]
    TooMany { got: usize, max: usize },
    #[error(
        "`options.evaluations_semantic` must be `execute_all`, `deny_on_first_deny` or `permit_on_first_permit`"
    )]
    Semantic,
}

/// A subject or resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub kind: String,
    pub id: String,
    pub properties: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub name: String,
    pub properties: Map<String, Value>,
}

/// One access evaluation, complete.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub subject: Entity,
    pub action: Action,
    pub resource: Entity,
    pub context: Map<String, Value>,
}

/// How a batch ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Semantic {
    #[default]
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

/// A batch: each item complete, or why it is not.
#[derive(Debug)]
pub struct Batch {
    pub items: Vec<Result<Evaluation, WireError>>,
    pub semantic: Semantic,
}

/// A single evaluation request.
pub fn evaluation(body: &Value) -> Result<Evaluation, WireError> {
    let top = body.as_object().ok_or(WireError::NotObject)?;
    complete(top, &Map::new(), "")
}

/// An evaluations request: `Ok(None)` when it has no `evaluations` (or an
/// empty one), which the spec answers as a single evaluation.
pub fn batch(body: &Value, max: usize) -> Result<Option<Batch>, WireError> {
    let top = body.as_object().ok_or(WireError::NotObject)?;
    let semantic = match top
        .get("options")
        .and_then(|o| o.get("evaluations_semantic"))
    {
        None | Some(Value::Null) => Semantic::default(),
        Some(v) => match v.as_str() {
            Some("execute_all") => Semantic::ExecuteAll,
            Some("deny_on_first_deny") => Semantic::DenyOnFirstDeny,
            Some("permit_on_first_permit") => Semantic::PermitOnFirstPermit,
            _ => return Err(WireError::Semantic),
        },
    };
    if let Some(options) = top.get("options")
        && !options.is_object()
    {
        return Err(WireError::Type("options".into(), "an object"));
    }
    // A default that is present must be valid, even where every item
    // replaces it: a malformed request is refused whole.
    for (name, check) in [
        (
            "subject",
            entity as fn(&Value, &str) -> Result<Entity, WireError>,
        ),
        ("resource", entity),
    ] {
        if let Some(v) = top.get(name) {
            check(v, name)?;
        }
    }
    if let Some(v) = top.get("action") {
        action_of(v, "action")?;
    }
    if let Some(v) = top.get("context")
        && !v.is_object()
        && !v.is_null()
    {
        return Err(WireError::Type("context".into(), "an object"));
    }
    let items = match top.get("evaluations") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) if items.is_empty() => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(WireError::Type("evaluations".into(), "an array")),
    };
    if items.len() > max {
        return Err(WireError::TooMany {
            got: items.len(),
            max,
        });
    }
    let items = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("evaluations[{i}].");
            let item = item
                .as_object()
                .ok_or_else(|| WireError::Type(format!("evaluations[{i}]"), "an object"))?;
            complete(item, top, &at)
        })
        .collect();
    Ok(Some(Batch { items, semantic }))
}

/// `item`'s members, each taken whole from `defaults` when absent.
fn complete(
    item: &Map<String, Value>,
    defaults: &Map<String, Value>,
    at: &str,
) -> Result<Evaluation, WireError> {
    let pick = |name: &'static str| -> Option<(&Value, String)> {
        match item.get(name) {
            Some(v) => Some((v, format!("{at}{name}"))),
            None => defaults.get(name).map(|v| (v, name.to_owned())),
        }
    };
    let subject = pick("subject").ok_or(WireError::Missing("subject"))?;
    let action = pick("action").ok_or(WireError::Missing("action"))?;
    let resource = pick("resource").ok_or(WireError::Missing("resource"))?;
    let context = match pick("context") {
        None | Some((Value::Null, _)) => Map::new(),
        Some((Value::Object(m), _)) => m.clone(),
        Some((_, path)) => return Err(WireError::Type(path, "an object")),
    };
    Ok(Evaluation {
        subject: entity(subject.0, &subject.1)?,
        action: action_of(action.0, &action.1)?,
        resource: entity(resource.0, &resource.1)?,
        context,
    })
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, WireError> {
    v.as_object()
        .ok_or_else(|| WireError::Type(path.to_owned(), "an object"))
}

fn string(obj: &Map<String, Value>, path: &str, name: &'static str) -> Result<String, WireError> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(WireError::Type(format!("{path}.{name}"), "a string")),
        Some(Value::String(s)) if s.is_empty() => Err(WireError::Empty(format!("{path}.{name}"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(WireError::Type(format!("{path}.{name}"), "a string")),
    }
}

fn properties(obj: &Map<String, Value>, path: &str) -> Result<Map<String, Value>, WireError> {
    match obj.get("properties") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(WireError::Type(format!("{path}.properties"), "an object")),
    }
}

pub fn entity(v: &Value, path: &str) -> Result<Entity, WireError> {
    let obj = object(v, path)?;
    Ok(Entity {
        kind: string(obj, path, "type")?,
        id: string(obj, path, "id")?,
        properties: properties(obj, path)?,
    })
}

pub fn action_of(v: &Value, path: &str) -> Result<Action, WireError> {
    let obj = object(v, path)?;
    Ok(Action {
        name: string(obj, path, "name")?,
        properties: properties(obj, path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: Value) -> String {
        evaluation(&body).unwrap_err().to_string()
    }

    #[test]
    fn missing_and_mistyped_members_are_named() {
        let ok = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
            "resource": {"type": "record", "id": "record-1"}, "foo": "bar"});
        assert!(evaluation(&ok).is_ok());
        assert_eq!(
            err(json!({"action": {"name": "read"}, "resource": {"type": "r", "id": "1"}})),
            "`subject` is required"
        );
        assert_eq!(
            err(
                json!({"subject": {"id": "alice"}, "action": {"name": "read"},
                "resource": {"type": "r", "id": "1"}})
            ),
            "`subject.type` must be a string"
        );
        assert_eq!(
            err(json!({"subject": "alice", "action": {"name": "read"},
                "resource": {"type": "r", "id": "1"}})),
            "`subject` must be an object"
        );
        assert_eq!(
            err(
                json!({"subject": {"type": "u", "id": "a"}, "action": {"name": 123},
                "resource": {"type": "r", "id": "1"}})
            ),
            "`action.name` must be a string"
        );
        assert_eq!(err(json!([1])), "the request body must be a JSON object");
    }

    #[test]
    fn batch_items_take_absent_members_whole_from_the_top() {
        let body = json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "write"},
            "resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}},
            "context": {"time": "t"},
            "evaluations": [{}, {"resource": {"type": "record", "id": "record-2"}}, {"subject": {}}],
        });
        let b = batch(&body, 10).unwrap().unwrap();
        let first = b.items[0].as_ref().unwrap();
        assert_eq!(first.resource.properties["status"], "active");
        assert_eq!(first.context["time"], "t");
        let second = b.items[1].as_ref().unwrap();
        assert_eq!(second.resource.id, "record-2");
        assert!(second.resource.properties.is_empty());
        assert_eq!(
            b.items[2].as_ref().unwrap_err().to_string(),
            "`evaluations[2].subject.type` must be a string"
        );
        assert_eq!(b.semantic, Semantic::ExecuteAll);
    }

    #[test]
    fn a_malformed_default_is_refused_even_when_every_item_replaces_it() {
        let body = json!({"subject": "alice",
            "evaluations": [{"subject": {"type": "user", "id": "bob"}}]});
        assert_eq!(
            batch(&body, 10).unwrap_err().to_string(),
            "`subject` must be an object"
        );
    }

    #[test]
    fn batch_limits_and_semantics() {
        let body = json!({"evaluations": [{}, {}, {}]});
        assert_eq!(
            batch(&body, 2).unwrap_err(),
            WireError::TooMany { got: 3, max: 2 }
        );
        let body = json!({"options": {"evaluations_semantic": "first"}, "evaluations": [{}]});
        assert_eq!(batch(&body, 2).unwrap_err(), WireError::Semantic);
        assert!(batch(&json!({"evaluations": []}), 2).unwrap().is_none());
    }
}
