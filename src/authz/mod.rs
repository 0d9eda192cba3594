//! The Envoy `Authorization` service, a thin front door: `CheckRequest` ->
//! [`AccessRequest`] -> [`Gate::decide`] -> [`Outcome`] -> `CheckResponse`.
//! With `server::check_wire`, the only code that sees Envoy's types.

mod respond;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as EnvoyHttp;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use serde_json::{Map, Value};

use crate::audit::record::Recorder;
use crate::gate::{AccessRequest, Arrival, BodyState, Call, Gate, Outcome};
use crate::request::{HttpRequest, Mapper, MappingError};

pub use respond::APPROVAL_ID_HEADER;

/// Verified JWT claims, as JSON.
type Claims = Map<String, Value>;

/// Metadata namespace where Envoy's `jwt_authn` filter puts verified claims.
pub const JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

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

/// What the Envoy front door reads per request.
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    /// Key under [`JWT_NAMESPACE`] holding the claims.
    pub jwt_metadata_key: String,
    /// Header that names the principal to the upstream on allow.
    pub principal_header: Option<String>,
    /// Header carrying an approval token on a retried call.
    pub token_header: String,
}

impl AuthzSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            jwt_metadata_key: c.jwt_metadata_key.clone(),
            principal_header: c.principal_header.clone(),
            token_header: c.token_header.clone(),
        }
    }
}

/// Envoy's ext_authz v3 `Authorization` service (served on the wire by
/// `server::check_wire`).
#[derive(Debug, Clone)]
pub struct AuthzService {
    mapper: Arc<Mapper>,
    gate: Gate,
    settings: Arc<AuthzSettings>,
    /// Capture mode, when on.
    recorder: Option<Arc<Recorder>>,
}

/// How a CheckRequest without HTTP attributes is recorded (made once).
static NO_HTTP: std::sync::LazyLock<EnvoyHttp> = std::sync::LazyLock::new(EnvoyHttp::default);

/// Answer this long before the caller's (Envoy's) deadline.
const HOLD_MARGIN: Duration = Duration::from_millis(50);

impl AuthzService {
    pub fn new(mapper: Arc<Mapper>, gate: Gate, settings: AuthzSettings) -> Self {
        Self {
            mapper,
            gate,
            settings: Arc::new(settings),
            recorder: None,
        }
    }

    /// Records a sample of checks (`serve --record`).
    pub fn with_recorder(mut self, recorder: Option<Arc<Recorder>>) -> Self {
        self.recorder = recorder;
        self
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// A call whose bytes are not a CheckRequest: 400 with the decoder's
    /// complaint, like any other bad input.
    pub fn undecodable(&self, e: &prost::DecodeError) -> CheckResponse {
        let why = format!("the check request does not decode: {e}");
        let rejected = self.rejected(&NO_HTTP, why, Arrival::now(None));
        self.respond(&rejected, "")
    }

    /// Decides one check. Never fails: anything that prevents a decision is
    /// a denial.
    pub async fn decide(&self, check: &CheckRequest) -> CheckResponse {
        self.decide_within(
            check,
            None,
            &std::collections::HashMap::<String, String>::new(),
        )
        .await
    }

    /// As [`Self::decide`], for a caller that waits at most `caller_waits`;
    /// `grpc` is the call's metadata, where Envoy puts its trace context.
    pub async fn decide_within(
        &self,
        check: &CheckRequest,
        caller_waits: Option<Duration>,
        grpc: &(dyn opentelemetry::propagation::Extractor + Sync),
    ) -> CheckResponse {
        let empty = &*NO_HTTP;
        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let parent = self
            .gate
            .traced()
            .then(|| crate::telemetry::parent_from(grpc, &http.unwrap_or(empty).headers));
        let arrival = Arrival::now(parent);
        let answer_by = caller_waits.and_then(|d| arrival.at.checked_add(d - HOLD_MARGIN.min(d)));
        let mut claims = None;
        let outcome = match self.translate(check, &mut claims) {
            Err(e) => {
                let outcome = self.rejected(http.unwrap_or(empty), e.to_string(), arrival);
                if let Some(http) = http.filter(|h| self.mapper.is_mcp(&h.path)) {
                    return self.respond_mcp_invalid(&outcome, request_id(http));
                }
                outcome
            }
            Ok((req, http)) => match self.mapper.map(&req) {
                Err(e) => {
                    let outcome = self.rejected(http, CheckError::from(e).to_string(), arrival);
                    if self.mapper.is_mcp(req.path) {
                        return self.respond_mcp_invalid(&outcome, request_id(http));
                    }
                    outcome
                }
                Ok(mapped) => {
                    if let Some(r) = &self.recorder {
                        r.offer(&req, &mapped);
                    }
                    let token = req.headers.get(&self.settings.token_header);
                    let token = token.map(String::as_str);
                    let mut call = call_of(http, req.source_address, token, body_state(&req));
                    if let Some(mcp) = &mapped.mcp {
                        // The tool call, not the envelope whose `id` changes.
                        call.body = &mcp.bound;
                        call.status_of = respond::mcp_status_of(mcp);
                    }
                    let access = AccessRequest {
                        call,
                        arrival,
                        mapped: &mapped,
                        answer_by,
                        approach: crate::gate::Approach::Open,
                    };
                    let outcome = self.gate.decide(access).await;
                    if let Some(mcp) = mapped.mcp.as_ref().filter(|m| m.id.is_some()) {
                        return self.respond_mcp(&outcome, request_id(http), mcp);
                    }
                    outcome
                }
            },
        };
        self.respond(&outcome, http.map_or("", request_id))
    }

    /// A check that cannot be decided, and `why`.
    fn rejected(&self, http: &EnvoyHttp, why: String, arrival: Arrival) -> Outcome {
        tracing::debug!(error = %why, "bad request");
        let call = call_of(http, "", None, BodyState::Complete);
        self.gate
            .reject(&call, format!("bad request: {why}"), arrival)
    }

    /// The parts of a CheckRequest that mapping reads (the verified JWT
    /// claims put in `claims`), or why it cannot be decided.
    fn translate<'a>(
        &self,
        check: &'a CheckRequest,
        claims: &'a mut Option<Claims>,
    ) -> Result<(HttpRequest<'a>, &'a EnvoyHttp), CheckError> {
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
        *claims = attrs
            .metadata_context
            .as_ref()
            .and_then(|m| m.filter_metadata.get(JWT_NAMESPACE))
            .and_then(|ns| ns.fields.get(&self.settings.jwt_metadata_key))
            .map(claims_object)
            .transpose()?;
        let claims: &'a Option<Claims> = claims;
        let request = HttpRequest {
            method: &http.method,
            path: &http.path,
            host: &http.host,
            scheme: &http.scheme,
            headers: &http.headers,
            body: body(http),
            source_address: source_address(attrs.source.as_ref()),
            source_principal: attrs.source.as_ref().map_or("", |s| s.principal.as_str()),
            jwt_claims: claims.as_ref(),
            request_id: request_id(http),
            time: attrs
                .request
                .as_ref()
                .and_then(|r| r.time.as_ref())
                .map(|t| t.seconds),
        };
        Ok((request, http))
    }
}

/// The call as the gate sees it.
fn call_of<'a>(
    http: &'a EnvoyHttp,
    source_address: &'a str,
    token: Option<&'a str>,
    body_state: BodyState,
) -> Call<'a> {
    Call {
        method: &http.method,
        host: &http.host,
        scheme: &http.scheme,
        path: &http.path,
        body: body(http),
        content_type: header(http, "content-type"),
        content_encoding: header(http, "content-encoding"),
        body_state,
        source_address,
        request_id: request_id(http),
        token,
        status_of: respond::http_status,
    }
}

/// Header `name` as Envoy sent it, "" when absent.
fn header<'a>(http: &'a EnvoyHttp, name: &str) -> &'a str {
    http.headers.get(name).map_or("", String::as_str)
}

/// Whether Envoy sent the whole body an approval must bind, and if not,
/// what to fix.
fn body_state(req: &HttpRequest<'_>) -> BodyState {
    let header = |name: &str| req.headers.get(name).map(String::as_str);
    let announced = header("content-length").is_some_and(|v| v.trim() != "0")
        || header("transfer-encoding").is_some();
    if header(crate::request::PARTIAL_BODY_HEADER) == Some("true") {
        BodyState::Incomplete(
            "this call needs an approval bound to its whole body, but Envoy sent only part of it: raise `with_request_body.max_request_bytes` on this route above the largest body it takes",
        )
    } else if req.body.is_empty() && announced {
        BodyState::Incomplete(
            "this call needs an approval bound to its body, but Envoy did not send the body: enable `with_request_body` on this route",
        )
    } else {
        BodyState::Complete
    }
}

/// The peer's socket address, "" when Envoy gave none.
fn source_address(peer: Option<&Peer>) -> &str {
    peer.and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            envoy_types::ext_authz::v3::pb::Address::SocketAddress(s) => Some(s.address.as_str()),
            _ => None,
        })
        .unwrap_or("")
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

/// Envoy's verified JWT claims as a JSON object.
pub fn claims_object(v: &PbValue) -> Result<Map<String, Value>, CheckError> {
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
