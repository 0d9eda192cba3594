//! Front door for AuthZEN policy enforcement points: the Authorization API
//! 1.0 (access evaluation, batches, PDP metadata) and the Access Request
//! and Approval profile (requestable denials, access requests, task
//! status), over HTTP(S) on its own listener. Translates JSON into the
//! gate's [`AccessRequest`] and its [`Outcome`] back; knows nothing of
//! Cedar beyond the mapping in [`map`]. See docs/authzen.md.

mod answer;
mod binding;
mod evaluate;
pub mod map;
mod requests;
mod serve;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use binding::{Binder, BindingError};
pub use serve::{ServeError, acceptor, serve};

use crate::approval::Lifecycle;
use crate::config::AuthzenConfig;
use crate::gate::Gate;
use crate::policy::PolicyStore;

/// Paths, relative to the PDP's base URL.
pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
pub const METADATA_PATH: &str = "/.well-known/authzen-configuration";
pub const REQUESTS_PATH: &str = "/access/v1/requests";
/// The capability the Access Request profile registers.
pub const ACCESS_REQUEST_CAPABILITY: &str = "urn:openid:authzen:capability:access-request";
/// The host an approval opened through AuthZEN names: approvers see that
/// the call came from a PDP client, not through Envoy.
pub const HOST: &str = "authzen";

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct Pdp {
    inner: Arc<Inner>,
}

struct Inner {
    gate: Gate,
    policies: Arc<PolicyStore>,
    approvals: Lifecycle,
    config: AuthzenConfig,
    /// The base URL the metadata and task handles name.
    base: String,
    binder: Binder,
}

impl Pdp {
    /// A PDP serving on `bound`, the address its listener bound.
    pub fn new(
        gate: Gate,
        policies: Arc<PolicyStore>,
        approvals: Lifecycle,
        config: AuthzenConfig,
        bound: std::net::SocketAddr,
    ) -> Self {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{bound}"));
        Self {
            inner: Arc::new(Inner {
                base,
                binder: Binder::new(config.binding_key.clone()),
                gate,
                policies,
                approvals,
                config,
            }),
        }
    }

    /// The routes, authenticated (all but the metadata).
    pub fn router(&self) -> Router {
        let authenticated = Router::new()
            .route(EVALUATION_PATH, post(evaluate::one))
            .route(EVALUATIONS_PATH, post(evaluate::many))
            .route(REQUESTS_PATH, post(requests::submit))
            .route(&format!("{REQUESTS_PATH}/{{id}}"), get(requests::status))
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authenticate,
            ));
        Router::new()
            .route(METADATA_PATH, get(metadata))
            .merge(authenticated)
            .layer(axum::middleware::from_fn(request_id))
            .with_state(self.clone())
    }

    /// The base URL it names itself by.
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }
}

/// The name a client certificate gives its holder, set per connection by
/// [`serve`] when the caller presented one.
#[derive(Debug, Clone)]
pub struct PeerName(pub Option<String>);

/// The caller, authenticated.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Refuses a caller with neither a verified client certificate nor a
/// configured bearer token: 401, as the spec says.
async fn authenticate(State(pdp): State<Pdp>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<PeerName>().and_then(|p| p.0.clone());
    let caller = match (peer, req.headers().get(header::AUTHORIZATION)) {
        (_, Some(v)) => {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let token = v.to_str().ok().and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            });
            let Some(token) = token else {
                return unauthorized("authorization must be `Bearer <token>`");
            };
            let hash = hex::encode(Sha256::digest(token.trim().as_bytes()));
            match pdp
                .inner
                .config
                .clients
                .iter()
                .find(|c| c.token_sha256 == hash)
            {
                Some(c) => c.name.clone(),
                None => return unauthorized("unknown bearer token"),
            }
        }
        (Some(name), None) => name,
        (None, None) => {
            return unauthorized(
                "authenticate with a bearer token (Authorization: Bearer <token>) or a client certificate",
            );
        }
    };
    req.extensions_mut().insert(Caller(caller));
    next.run(req).await
}

fn unauthorized(why: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, why);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The one media type AuthZEN requests are sent as.
const JSON: &str = "application/json";

/// The header a PEP names its request with.
pub const REQUEST_ID: &str = "x-request-id";

/// Echoes `X-Request-ID`, or gives one, so that every answer and its
/// span can be found by it.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(REQUEST_ID).cloned() {
        Some(v) => v,
        None => {
            let made = hex::encode(rand::random::<[u8; 16]>());
            let v = HeaderValue::from_str(&made).unwrap_or_else(|_| HeaderValue::from_static(""));
            req.headers_mut().insert(REQUEST_ID, v.clone());
            v
        }
    };
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}

/// `body` as `application/json` with `status`.
pub(crate) fn json(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
}

/// `{"error": why}` with `status`: the spec's error answer.
pub(crate) fn error(status: StatusCode, why: &str) -> Response {
    json(status, &json!({ "error": why }))
}

/// The JSON body of a POST, or the spec's 400: wrong content type, empty,
/// not JSON.
pub(crate) fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Box<Response>> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
    };
    let json = [JSON.to_owned()];
    let media = crate::request::json_media(
        header(header::CONTENT_TYPE),
        header(header::CONTENT_ENCODING),
        &json,
    );
    if let Err(why) = media {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("the request body must be JSON: {why}"),
        )));
    }
    if body.is_empty() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "the request body is empty",
        )));
    }
    // Duplicate member names (also ones differing only in case) are
    // refused: a PEP that reads the first copy would see another request.
    crate::request::value::parse_strict(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not valid JSON: {e}"),
        ))
    })
}

/// A request's headers, peer address and body (413 past the limit).
pub(crate) struct Received {
    pub headers: HeaderMap,
    pub peer: String,
    pub body: Bytes,
}

pub(crate) async fn receive(pdp: &Pdp, req: Request) -> Result<Received, Box<Response>> {
    let (parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let limit = pdp.inner.config.max_body_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is over {limit} bytes"),
        ))
    })?;
    Ok(Received {
        headers: parts.headers,
        peer,
        body,
    })
}

/// A POST's request and its JSON body, or the answer refusing it.
pub(crate) async fn receive_json(
    pdp: &Pdp,
    req: Request,
) -> Result<(Received, Value), Box<Response>> {
    let received = receive(pdp, req).await?;
    let value = json_body(&received.headers, &received.body)?;
    Ok((received, value))
}

/// The PDP metadata, unauthenticated so that PEPs can discover the PDP.
async fn metadata(State(pdp): State<Pdp>) -> Response {
    let body = json!({
        "policy_decision_point": pdp.inner.base,
        "access_evaluation_endpoint": pdp.url(EVALUATION_PATH),
        "access_evaluations_endpoint": pdp.url(EVALUATIONS_PATH),
        "access_request_endpoint": pdp.url(REQUESTS_PATH),
        "capabilities": [ACCESS_REQUEST_CAPABILITY],
    });
    json(StatusCode::OK, &body)
}
