//! A sample request as a policy author writes it: spelled out as a Cedar
//! request, or as an HTTP request that the route table maps. `policy
//! check`, the cases of `policy test` and the requests of `policy diff`
//! all decide one of these.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cedar_policy::{Context, Entities, Entity, EntityUid, Request};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::policy::{PolicyStore, Verdict};
use crate::request::HttpRequest;

/// One request to decide. Either `principal`, `action` and `resource`
/// (with `parents` and `context`), or `method` and `path` (with the rest).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// With its query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Verified JWT claims, as Envoy's jwt_authn passes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Map<String, Value>>,
    /// The mTLS peer's principal (a SPIFFE id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The body: text as sent, or a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

/// A body as text or as JSON.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Body {
    Text(String),
    Json(Value),
}

/// A sample decided: the verdict and what it was about.
#[derive(Debug)]
pub struct Decided {
    pub verdict: Verdict,
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
}

impl Sample {
    /// Decides the sample with `store`, mapping HTTP samples with
    /// `config`'s route table and identity settings.
    ///
    /// `approved`: decide as the sidecar does once an approval is granted
    /// (`context.approval.granted == true`), allow or deny.
    pub fn decide(
        &self,
        config: &Config,
        store: &PolicyStore,
        approved: bool,
    ) -> Result<Decided, String> {
        match (&self.principal, &self.method) {
            (Some(_), None) => self.spelled_out(store, approved),
            (None, Some(_)) => self.http(config, store, approved),
            (Some(_), Some(_)) => Err("give either `principal`, `action` and `resource` (a Cedar request) or `method` and `path` (an HTTP request), not both".into()),
            (None, None) => Err("nothing to decide: give either `principal`, `action` and `resource` (a Cedar request) or `method` and `path` (an HTTP request)".into()),
        }
    }

    fn spelled_out(&self, store: &PolicyStore, approved: bool) -> Result<Decided, String> {
        let principal = uid("principal", self.principal.as_deref())?;
        let action = uid("action", self.action.as_deref())?;
        let resource = uid("resource", self.resource.as_deref())?;
        let parents = self
            .parents
            .iter()
            .map(|p| uid("parent", Some(p)))
            .collect::<Result<_, _>>()?;
        let loaded = store.current();
        let context = self
            .context
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        if !context.is_object() {
            return Err(r#"context: expected a JSON object such as {"key":"value"}"#.into());
        }
        if self.method.is_none()
            && (self.path.is_some() || self.body.is_some() || self.claims.is_some())
        {
            return Err("`path`, `body` and `claims` describe an HTTP request: give `method` and `path` instead of `principal`".into());
        }
        // As the sidecar does: decide without an approval, then with one.
        let request = |granted: bool| -> Result<Request, String> {
            let fit = |ctx: Value| {
                Context::from_json_value(ctx, Some((&loaded.schema, &action))).map_err(Box::new)
            };
            let mut with_approval = context.clone();
            if with_approval.get("approval").is_none() {
                with_approval["approval"] = serde_json::json!({ "granted": granted });
            }
            // Actions whose context declares no `approval` (`approve`
            // itself) are decided as given.
            let ctx = fit(with_approval)
                .or_else(|first| fit(context.clone()).map_err(|_| first))
                .map_err(|e| {
                    format!("context: does not fit the schema: {e} (give the attributes the schema declares for this action's context)")
                })?;
            Request::new(principal.clone(), action.clone(), resource.clone(), ctx, Some(&loaded.schema)).map_err(|e| {
                format!("the request does not fit the schema: {e} (give a context with the attributes the schema declares for this action, or describe an HTTP request with method and path)")
            })
        };
        let entities =
            Entities::from_entities([Entity::new_no_attrs(principal.clone(), parents)], None)
                .map_err(|e| e.to_string())?;
        let entities = with_directory(store, entities, &resource)?;
        let verdict = verdict(store, request, &entities, approved)?;
        Ok(Decided {
            verdict,
            principal,
            action,
            resource,
        })
    }

    fn http(
        &self,
        config: &Config,
        store: &PolicyStore,
        approved: bool,
    ) -> Result<Decided, String> {
        let mut headers: HashMap<String, String> = self
            .headers
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body = match &self.body {
            None => String::new(),
            Some(Body::Text(t)) => t.clone(),
            Some(Body::Json(v)) => v.to_string(),
        };
        if !body.is_empty() {
            headers
                .entry("content-type".into())
                .or_insert_with(|| "application/json".into());
        }
        let req = HttpRequest {
            method: self.method.as_deref().unwrap_or_default(),
            path: self.path.as_deref().unwrap_or("/"),
            host: self.host.as_deref().unwrap_or("localhost"),
            scheme: "https",
            headers: &headers,
            body: body.as_bytes(),
            source_address: "127.0.0.1",
            source_principal: self.peer.as_deref().unwrap_or_default(),
            jwt_claims: self.claims.as_ref(),
            request_id: "",
            time: None,
        };
        let unmapped = |e: &dyn std::fmt::Display| {
            format!(
                "the sample request cannot be mapped: {e} (check its method, path, headers, claims and body against the `routes` and `[identity]` of the configuration)"
            )
        };
        let mapped = config.mapper.map(&req).map_err(|e| unmapped(&e))?;
        // As the sidecar does (see `Gate::decide`).
        if let Some(body) = &mapped.body {
            let declared = &store.current().declared;
            declared.check_body(body).map_err(|e| unmapped(&e))?;
        }
        let entities = store
            .with_directory(&mapped.entities, &mapped.resource)
            .map_err(|e| e.to_string())?;
        let verdict = verdict(
            store,
            |granted| mapped.request(granted).map_err(|e| unmapped(&e)),
            entities.as_ref().unwrap_or(&mapped.entities),
            approved,
        )?;
        Ok(Decided {
            verdict,
            principal: mapped.principal,
            action: mapped.action,
            resource: mapped.resource,
        })
    }
}

/// `entities` with the entity data beside the policies, as the sidecar
/// decides (see `Gate::decide`).
fn with_directory(
    store: &PolicyStore,
    entities: Entities,
    resource: &EntityUid,
) -> Result<Entities, String> {
    let merged = store
        .with_directory(&entities, resource)
        .map_err(|e| e.to_string())?;
    Ok(merged.unwrap_or(entities))
}

fn verdict(
    store: &PolicyStore,
    request: impl Fn(bool) -> Result<Request, String>,
    entities: &Entities,
    approved: bool,
) -> Result<Verdict, String> {
    if !approved {
        return store.decide(request, entities);
    }
    let d = store.evaluate(&request(true)?, entities);
    Ok(match d.outcome {
        crate::policy::Outcome::Allow => Verdict::Allow(d),
        crate::policy::Outcome::Deny => Verdict::Deny(d),
    })
}

fn uid(field: &str, v: Option<&str>) -> Result<EntityUid, String> {
    let v = v.ok_or_else(|| {
        format!("`{field}` is missing: a Cedar request needs `principal`, `action` and `resource`")
    })?;
    EntityUid::from_str(v)
        .map_err(|_| format!(r#"{field}: expected an entity such as `User::"alice"`, got `{v}`"#))
}
