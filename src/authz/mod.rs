//! The Envoy `Authorization` service: `CheckRequest` -> domain request ->
//! decision -> `CheckResponse`. The only module that sees Envoy's types.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as EnvoyHttp;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::policy::{Decision, Outcome, PolicyStore};
use crate::request::{HttpRequest, Mapper, MappingError};

/// Metadata namespace where Envoy's `jwt_authn` filter puts verified claims.
pub const JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// `google.rpc.Code` values Envoy reads from `CheckResponse.status`.
const RPC_OK: i32 = 0;
const RPC_INVALID_ARGUMENT: i32 = 3;
const RPC_PERMISSION_DENIED: i32 = 7;

/// A CheckRequest that cannot be decided; answered with 400.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("the check request carries no {0}")]
    Missing(&'static str),
    #[error("the verified JWT claims in `{JWT_NAMESPACE}` metadata are not a JSON object")]
    ClaimsNotObject,
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

/// The body of every denial.
#[derive(Debug, Serialize)]
struct Denial<'a> {
    decision: &'static str,
    reason: &'a str,
    policies: &'a [String],
    request_id: &'a str,
}

/// Settings the service reads per request.
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    /// Key under [`JWT_NAMESPACE`] holding the claims.
    pub jwt_metadata_key: String,
    /// Header that names the principal to the upstream on allow.
    pub principal_header: Option<String>,
}

/// Envoy's ext_authz v3 `Authorization` service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    mapper: Arc<Mapper>,
    policies: Arc<PolicyStore>,
    settings: Arc<AuthzSettings>,
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        // Denials, bad input included, are answers, not RPC errors: Envoy
        // then shows the caller our status and body rather than a bare 403.
        Ok(tonic::Response::new(self.decide(request.get_ref())))
    }
}

impl AuthzService {
    pub fn new(mapper: Arc<Mapper>, policies: Arc<PolicyStore>, settings: AuthzSettings) -> Self {
        Self {
            mapper,
            policies,
            settings: Arc::new(settings),
        }
    }

    /// Decides one check. Never fails: anything that prevents a decision is
    /// a denial.
    pub fn decide(&self, check: &CheckRequest) -> CheckResponse {
        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let request_id = http.map_or("", request_id);
        match self.evaluate(check) {
            Ok((decision, principal)) if decision.outcome == Outcome::Allow => {
                self.allow(&principal)
            }
            Ok((decision, _)) => deny(
                RPC_PERMISSION_DENIED,
                HttpStatusCode::Forbidden,
                &decision.reason(),
                &decision.policies,
                request_id,
            ),
            Err(e) => {
                tracing::debug!(error = ?e, "bad request");
                deny(
                    RPC_INVALID_ARGUMENT,
                    HttpStatusCode::BadRequest,
                    &format!("bad request: {e}"),
                    &[],
                    request_id,
                )
            }
        }
    }

    fn evaluate(&self, check: &CheckRequest) -> Result<(Decision, String), CheckError> {
        let attrs = check
            .attributes
            .as_ref()
            .ok_or(CheckError::Missing("attributes"))?;
        let http = attrs
            .request
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .ok_or(CheckError::Missing("HTTP request attributes"))?;
        if http.method.is_empty() {
            return Err(CheckError::Missing("HTTP method"));
        }
        let claims = attrs
            .metadata_context
            .as_ref()
            .and_then(|m| m.filter_metadata.get(JWT_NAMESPACE))
            .and_then(|ns| ns.fields.get(&self.settings.jwt_metadata_key))
            .map(claims_object)
            .transpose()?;
        let source = attrs.source.as_ref();
        let source_address = source
            .and_then(|s| s.address.as_ref())
            .and_then(|a| a.address.as_ref())
            .and_then(|a| match a {
                envoy_types::ext_authz::v3::pb::Address::SocketAddress(s) => {
                    Some(s.address.as_str())
                }
                _ => None,
            })
            .unwrap_or("");
        let req = HttpRequest {
            method: &http.method,
            path: &http.path,
            host: &http.host,
            scheme: &http.scheme,
            headers: &http.headers,
            body: body(http),
            source_address,
            source_principal: source.map_or("", |s| s.principal.as_str()),
            jwt_claims: claims.as_ref(),
            request_id: request_id(http),
            time: attrs
                .request
                .as_ref()
                .and_then(|r| r.time.as_ref())
                .map(|t| t.seconds),
        };
        let mapped = self.mapper.map(&req)?;
        let decision = self.policies.evaluate(&mapped.request, &mapped.entities);
        // Policy ids only: Cedar's error text can quote request values.
        tracing::debug!(
            principal = %mapped.principal,
            action = %mapped.action,
            resource = %mapped.resource,
            decision = ?decision.outcome,
            policies = ?decision.policies,
            "check"
        );
        Ok((decision, mapped.principal.to_string()))
    }

    fn allow(&self, principal: &str) -> CheckResponse {
        let headers = match &self.settings.principal_header {
            // Overwrite, so a client-sent copy never reaches the upstream.
            Some(name) => vec![header(
                name,
                principal,
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )],
            None => vec![],
        };
        CheckResponse {
            status: Some(rpc::Status {
                code: RPC_OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}

fn deny(
    code: i32,
    status: HttpStatusCode,
    reason: &str,
    policies: &[String],
    request_id: &str,
) -> CheckResponse {
    let body = serde_json::to_string(&Denial {
        decision: "deny",
        reason,
        policies,
        request_id,
    })
    .unwrap_or_else(|_| r#"{"decision":"deny"}"#.to_owned());
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: reason.to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers: vec![header(
                "content-type",
                "application/json",
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )],
            body,
        })),
        ..Default::default()
    }
}

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// Envoy's `x-request-id` (what its access log shows), else its stream id.
fn request_id(http: &EnvoyHttp) -> &str {
    http.headers
        .get("x-request-id")
        .map_or(http.id.as_str(), String::as_str)
}

/// Envoy sends the body as `raw_body` with `pack_as_bytes`, else as `body`.
fn body(http: &EnvoyHttp) -> &[u8] {
    if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        &http.raw_body
    }
}

fn claims_object(v: &PbValue) -> Result<Map<String, Value>, CheckError> {
    match &v.kind {
        Some(Kind::StructValue(s)) => Ok(struct_to_json(s)),
        _ => Err(CheckError::ClaimsNotObject),
    }
}

fn struct_to_json(s: &Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect()
}

fn to_json(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

#[cfg(test)]
mod tests;
