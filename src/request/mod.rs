//! Envoy's view of an HTTP request -> a Cedar request (principal, action,
//! resource, context). Knows nothing of gRPC: `authz` translates into
//! [`HttpRequest`].

mod body;
pub mod fold;
pub mod identity;
pub mod mcp;
mod path;
mod principals;
mod probes;
pub mod reach;
pub mod routes;
mod shown;
pub mod value;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{Context, Entities, EntityUid, Request, RestrictedExpression};
use serde_json::{Map, Value};

pub use body::json_media;
pub use identity::{Identity, IdentityError, IdentitySettings, Source};
pub use mcp::{McpCall, McpEndpoint};
pub use reach::RouteCoverage;
pub use routes::{RouteSpec, RouteTable};
pub use shown::{SHOW_ALL, Shown};

use path::{check_normalised, check_percent_encoding};

/// Longest path (with query) accepted; Envoy's own limit on the request line
/// is lower, so only a direct caller can exceed it.
pub const MAX_PATH_BYTES: usize = 16 * 1024;
/// Most headers accepted in one CheckRequest.
pub const MAX_HEADERS: usize = 512;
/// Header Envoy sets when it forwarded only part of the body.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// The parts of an HTTP request that mapping reads, borrowed from whatever
/// carried them (a CheckRequest, or the `policy check` command line).
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// Path as Envoy normalised it, query string included.
    pub path: &'a str,
    pub host: &'a str,
    pub scheme: &'a str,
    /// Lower-case names, as Envoy sends them.
    pub headers: &'a HashMap<String, String>,
    pub body: &'a [u8],
    pub source_address: &'a str,
    /// mTLS peer identity (e.g. a SPIFFE id), empty when none.
    pub source_principal: &'a str,
    /// Claims verified by Envoy's `jwt_authn` filter.
    pub jwt_claims: Option<&'a Map<String, Value>>,
    pub request_id: &'a str,
    /// Unix seconds when Envoy saw the request, if it said.
    pub time: Option<i64>,
}

/// A request ready for Cedar, with its parts kept for reporting and for
/// binding an approval to it.
#[derive(Debug)]
pub struct MappedRequest {
    pub principal: EntityUid,
    /// The human an agent acts for, when its JWT says so.
    pub on_behalf_of: Option<EntityUid>,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub entities: Entities,
    /// Allow-listed query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// The JSON body, on routes that read it; a tool call's arguments.
    pub body: Option<Map<String, Value>>,
    /// The JSON-RPC message, on an MCP endpoint.
    pub mcp: Option<McpCall>,
    /// The route (or MCP endpoint) is in shadow mode: its decisions are
    /// recorded, and only always-enforced forbids refuse.
    pub shadow: bool,
    /// Why a body this request carries could not be read as JSON, on a
    /// route that does not read it: an approval cannot be bound to it.
    pub unread_body: Option<MappingError>,
    /// Built once, with `approval.granted == false`; shared (Arc) by clones.
    context: Context,
    /// What `context` was built from, but `approval`: the granted context
    /// is built from these (cheap Arc clones) rather than from `context`,
    /// whose values Cedar would turn back into expressions first.
    pairs: Vec<(String, RestrictedExpression)>,
}

impl MappedRequest {
    /// The Cedar request, with `context.approval.granted` as given.
    pub fn request(&self, granted: bool) -> Result<Request, MappingError> {
        let context = if granted {
            // Only approvable calls get here: building is off the common path.
            with_approval(self.pairs.clone(), true)?
        } else {
            self.context.clone()
        };
        // No schema here: the shapes were checked against it at load time
        // (see `probes`), and re-checking per request would cost every call.
        Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            context,
            None,
        )
        .map_err(|e| MappingError::Context(e.to_string()))
    }

    /// A request whose parts a front door resolved itself (an AuthZEN
    /// evaluation): no route, no MCP message, no query. `bound` is what an
    /// approval binds and an approver is shown, by name; `context` is the
    /// Cedar context, whose `approval` is replaced by `{granted: false}`.
    pub fn resolved(
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        entities: Entities,
        context: Context,
        bound: Map<String, Value>,
    ) -> Result<Self, MappingError> {
        let pairs: Vec<_> = context
            .into_iter()
            .filter(|(k, _)| k != "approval")
            .collect();
        Ok(Self {
            principal,
            on_behalf_of: None,
            action,
            resource,
            entities,
            query: Vec::new(),
            body: Some(bound),
            mcp: None,
            shadow: false,
            unread_body: None,
            context: with_approval(pairs.clone(), false)?,
            pairs,
        })
    }

    /// Whether the request fits `schema`: its action declared, applying to
    /// its principal and resource types, its context exactly as declared.
    /// Cedar's reason quotes values, so it goes to the debug log only.
    pub fn fits(&self, schema: &cedar_policy::Schema) -> bool {
        let checked = Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            self.context.clone(),
            Some(schema),
        );
        match checked {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "request does not fit the schema");
                false
            }
        }
    }
}

/// `ip("...")` for the context. Cedar's `new_ip` parses the name `ip` with
/// its full parser on every call, which was a quarter of the mapping's CPU;
/// calls come from a few addresses (Envoy's peers), so each worker thread
/// keeps the expressions it made.
fn ip_expression(ip: IpAddr) -> RestrictedExpression {
    const KEEP: usize = 256;
    thread_local! {
        static MADE: RefCell<HashMap<IpAddr, RestrictedExpression>> = RefCell::new(HashMap::new());
    }
    MADE.with_borrow_mut(|made| {
        if let Some(e) = made.get(&ip) {
            return e.clone();
        }
        if made.len() >= KEEP {
            made.clear();
        }
        let e = RestrictedExpression::new_ip(ip.to_string());
        made.insert(ip, e.clone());
        e
    })
}

fn with_approval(
    mut pairs: Vec<(String, RestrictedExpression)>,
    granted: bool,
) -> Result<Context, MappingError> {
    let approval = record(vec![(
        "granted".to_owned(),
        RestrictedExpression::new_bool(granted),
    )])?;
    pairs.push(("approval".to_owned(), approval));
    Context::from_pairs(pairs).map_err(|e| MappingError::Context(e.to_string()))
}

/// The context of a request, before the approval flag is added.
struct ContextParts {
    pairs: Vec<(String, RestrictedExpression)>,
    query: Vec<(String, String)>,
    body: Option<Map<String, Value>>,
}

/// Why a request could not be turned into a Cedar request. The messages go
/// back to the caller, so they never echo header values or the body.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("request path must start with `/`")]
    PathNotAbsolute,
    #[error("request path is longer than {MAX_PATH_BYTES} bytes")]
    PathTooLong,
    #[error("request has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("malformed percent-encoding in the request {0}")]
    BadPercentEncoding(&'static str),
    /// Envoy's `normalize_path`, `merge_slashes` and
    /// `path_with_escaped_slashes_action: REJECT_REQUEST` never forward these,
    /// and an upstream would resolve them after the policy judged the path as
    /// written: refusing keeps an Envoy without them from failing open.
    #[error(
        "request path is not normalised: it has {0} (Envoy should set `normalize_path` and `merge_slashes`, and reject escaped slashes)"
    )]
    PathNotNormalised(&'static str),
    #[error(transparent)]
    Param(#[from] routes::PathParamError),
    #[error("query parameter `{0}` appears more than once")]
    DuplicateQuery(String),
    /// Frameworks match parameter names case-insensitively, some with
    /// Unicode folding: a name that folds to an allow-listed one may be
    /// the one the upstream reads.
    #[error(
        "query parameter `{0}` is allow-listed, and this request names a parameter that differs from it only in case (or by a character case folding equates with one of its letters): send it once, spelled exactly `{0}`"
    )]
    QueryNameFolds(String),
    #[error("request body is {size} bytes; this route accepts at most {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("request body was truncated by Envoy, and this route decides on the body")]
    PartialBody,
    #[error(
        "this route decides on the request body, but Envoy did not send it (enable `with_request_body` for the route)"
    )]
    BodyNotForwarded,
    #[error("request body is not valid JSON: {0}")]
    BodyNotJson(String),
    #[error("request body must be a JSON object")]
    BodyNotObject,
    /// Go's `encoding/json` (and other case-insensitive readers) would
    /// read the key as the declared attribute that the policy does not see.
    #[error(
        "request body has a key that differs only in case (or by a character case folding equates with a letter) from `{0}`, an attribute the policy schema declares: an upstream that matches names case-insensitively would read it as `{0}`; spell it exactly `{0}`"
    )]
    BodyKeyFolds(String),
    /// A body countersign reads other than as sent (another media type, a
    /// compressed body) is one the policy would not judge.
    #[error("this route reads the request body as JSON: {0}")]
    BodyMedia(String),
    #[error("request body cannot be represented in Cedar: {0}")]
    BodyUnrepresentable(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Mcp(#[from] mcp::McpError),
    /// Only the fixed text reaches the caller: Cedar quotes values in the
    /// detail, which goes to the debug log.
    #[error("cannot build the Cedar request from this request")]
    Context(String),
}

/// Which request parts reach the Cedar context.
#[derive(Debug, Clone)]
pub struct ContextSettings {
    /// Allow-listed header names, lower case.
    pub headers: Vec<String>,
    /// Allow-listed query parameter names.
    pub query: Vec<String>,
    pub max_body_bytes: usize,
    /// Media types (lower case, no parameters) a body read as JSON may
    /// declare in `content-type`.
    pub body_content_types: Vec<String>,
}

/// What [`Mapper::in_shadow`] says when nothing is enforced.
pub const EVERY_ROUTE: &str = "every route and MCP endpoint";

/// Maps requests; built once at start-up and shared.
#[derive(Debug)]
pub struct Mapper {
    pub routes: RouteTable,
    /// MCP endpoints, matched before the route table.
    pub mcp: Vec<McpEndpoint>,
    pub identity: IdentitySettings,
    pub context: ContextSettings,
}

impl Mapper {
    /// The routes and MCP endpoints in shadow mode, for the start-up log.
    pub fn in_shadow(&self) -> Vec<String> {
        let mut out = self.routes.in_shadow();
        out.extend(
            self.mcp
                .iter()
                .filter(|m| m.shadow)
                .map(|m| format!("MCP {}", m.path)),
        );
        // Every route, the default one and every endpoint: say so, once.
        if out.len() == self.routes.specs().count() + 1 + self.mcp.len() {
            return vec![EVERY_ROUTE.to_owned()];
        }
        out
    }

    pub fn map(&self, req: &HttpRequest<'_>) -> Result<MappedRequest, MappingError> {
        if req.headers.len() > MAX_HEADERS {
            return Err(MappingError::TooManyHeaders);
        }
        if req.path.len() > MAX_PATH_BYTES {
            return Err(MappingError::PathTooLong);
        }
        let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
        if !path.starts_with('/') {
            return Err(MappingError::PathNotAbsolute);
        }
        check_percent_encoding(path).map_err(|_| MappingError::BadPercentEncoding("path"))?;
        check_percent_encoding(query).map_err(|_| MappingError::BadPercentEncoding("query"))?;
        check_normalised(path).map_err(MappingError::PathNotNormalised)?;

        let identity =
            self.identity
                .principal(req.jwt_claims, req.source_principal, req.headers)?;
        let (action, resource, parts, mcp, shadow) = match self.mcp_endpoint(path)? {
            Some(endpoint) => {
                let body = self.body_bytes(req)?.unwrap_or_default();
                if !body.is_empty() {
                    self.check_body_media(req.headers)?;
                }
                let mut resolved = endpoint.resolve(req.method, body)?;
                let mut parts = self.context(req, path, query, Some(&resolved))?;
                if let Some(arguments) = resolved.arguments.take() {
                    resolved.call.shape =
                        self.shape(req, &identity.uid, &resolved, &parts.query, &arguments);
                    parts.body = Some(arguments);
                }
                (
                    resolved.action,
                    resolved.resource,
                    parts,
                    Some(resolved.call),
                    endpoint.shadow,
                )
            }
            None => {
                let resolved = self.routes.resolve(req.method, path)?;
                let wants_body = resolved.route.is_some_and(|r| r.body);
                let mut parts = self.context(req, path, query, None)?;
                if wants_body && let Some((body, json)) = self.body(req)? {
                    parts.pairs.push(("body".to_owned(), body));
                    parts.body = Some(json);
                }
                let shadow = self.routes.shadow(resolved.route);
                (
                    resolved.action.clone(),
                    resolved.resource,
                    parts,
                    None,
                    shadow,
                )
            }
        };
        // A body the route does not read: an approval cannot bind it unless
        // it is one countersign could read (see `Gate::approvable`).
        let unread_body = (parts.body.is_none() && mcp.is_none() && !req.body.is_empty())
            .then(|| self.check_body_media(req.headers).err())
            .flatten();
        Ok(MappedRequest {
            principal: identity.uid,
            on_behalf_of: identity.on_behalf_of,
            action,
            resource,
            entities: identity.entities,
            query: parts.query,
            body: parts.body,
            mcp,
            shadow,
            unread_body,
            context: with_approval(parts.pairs.clone(), false)?,
            pairs: parts.pairs,
        })
    }

    /// The shape of a tool call's request: its action, principal and
    /// resource types, which optional parts [`Self::context`] put in, and
    /// the arguments' names and types; no value.
    fn shape(
        &self,
        req: &HttpRequest<'_>,
        principal: &EntityUid,
        resolved: &mcp::Resolved,
        query: &[(String, String)],
        arguments: &Map<String, Value>,
    ) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(128);
        // INVARIANT: writing to a String cannot fail.
        let _ = write!(
            out,
            "{}|{}|{}|",
            resolved.action,
            principal.type_name(),
            resolved.resource.type_name()
        );
        let present = |yes: bool| if yes { '1' } else { '0' };
        out.push(present(!req.scheme.is_empty()));
        out.push(present(req.source_address.parse::<IpAddr>().is_ok()));
        out.push(present(!req.request_id.is_empty()));
        for (name, _) in query {
            out.push_str(name);
            out.push('&');
        }
        out.push('|');
        for name in &self.context.headers {
            out.push(present(req.headers.contains_key(name)));
        }
        out.push('|');
        value::record_shape(arguments, &mut out);
        out
    }

    /// Whether `path` (query allowed) is an MCP endpoint's.
    pub fn is_mcp(&self, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |p| p.0);
        self.mcp.iter().any(|e| e.path == path)
    }

    /// The MCP endpoint at `path`; a path that only resembles one is
    /// refused, as for routes.
    fn mcp_endpoint(&self, path: &str) -> Result<Option<&McpEndpoint>, MappingError> {
        if let Some(e) = self.mcp.iter().find(|e| e.path == path) {
            return Ok(Some(e));
        }
        if !self.mcp.is_empty() {
            let loose = routes::loosened(path);
            if let Some(e) = self.mcp.iter().find(|e| routes::loosened(&e.path) == loose) {
                return Err(routes::PathParamError::Resembles(e.path.clone()).into());
            }
        }
        Ok(None)
    }

    fn context(
        &self,
        req: &HttpRequest<'_>,
        path: &str,
        query: &str,
        mcp: Option<&mcp::Resolved>,
    ) -> Result<ContextParts, MappingError> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let (query_record, query_pairs) = self.query_record(query)?;
        let mut http = vec![
            ("method".to_owned(), s(req.method)),
            ("path".to_owned(), s(path)),
            ("host".to_owned(), s(req.host)),
            ("query".to_owned(), query_record),
            ("headers".to_owned(), self.header_record(req.headers)),
        ];
        if !req.scheme.is_empty() {
            http.push(("scheme".to_owned(), s(req.scheme)));
        }
        let mut source = Vec::with_capacity(1);
        if let Ok(ip) = req.source_address.parse::<IpAddr>() {
            // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`,
            // which Cedar's `ip()` does not accept.
            source.push(("address".to_owned(), ip_expression(ip.to_canonical())));
        }
        let time = req.time.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let mut pairs = vec![
            ("http".to_owned(), record(http)?),
            ("source".to_owned(), record(source)?),
            ("time".to_owned(), RestrictedExpression::new_long(time)),
        ];
        if !req.request_id.is_empty() {
            pairs.push(("request_id".to_owned(), s(req.request_id)));
        }
        if let Some(m) = mcp {
            let mut fields = vec![
                ("method".to_owned(), s(&m.call.method)),
                ("server".to_owned(), s(&m.call.server)),
            ];
            if let Some(tool) = &m.call.tool {
                fields.push(("tool".to_owned(), s(tool)));
            }
            pairs.push(("mcp".to_owned(), record(fields)?));
            if let Some(arguments) = &m.arguments {
                pairs.push(("arguments".to_owned(), mcp::arguments_record(arguments)?));
            }
        }
        Ok(ContextParts {
            pairs,
            query: query_pairs,
            body: None,
        })
    }

    fn header_record(&self, headers: &HashMap<String, String>) -> RestrictedExpression {
        let fields = self.context.headers.iter().filter_map(|name| {
            headers
                .get(name)
                .map(|v| (name.clone(), RestrictedExpression::new_string(v.clone())))
        });
        // INVARIANT: allow-list names are unique (checked with the config).
        RestrictedExpression::new_record(fields)
            .unwrap_or_else(|_| RestrictedExpression::new_bool(false))
    }

    #[allow(clippy::type_complexity)]
    fn query_record(
        &self,
        query: &str,
    ) -> Result<(RestrictedExpression, Vec<(String, String)>), MappingError> {
        let mut fields: Vec<(String, RestrictedExpression)> = Vec::new();
        let mut pairs = Vec::new();
        if !self.context.query.is_empty() {
            for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                let Some(name) = self.context.query.iter().find(|q| **q == k) else {
                    // Another spelling of an allow-listed name may be the
                    // one a case-insensitive upstream reads.
                    if let Some(q) = self.context.query.iter().find(|q| fold::same_name(q, &k)) {
                        return Err(MappingError::QueryNameFolds(q.clone()));
                    }
                    continue;
                };
                // Frameworks disagree on which duplicate wins; refusing is the
                // only answer that cannot differ from the upstream's.
                if fields.iter().any(|(n, _)| n == name) {
                    return Err(MappingError::DuplicateQuery(name.clone()));
                }
                fields.push((
                    name.clone(),
                    RestrictedExpression::new_string(v.to_string()),
                ));
                pairs.push((name.clone(), v.into_owned()));
            }
        }
        Ok((record(fields)?, pairs))
    }
}

fn record(
    fields: Vec<(String, RestrictedExpression)>,
) -> Result<RestrictedExpression, MappingError> {
    RestrictedExpression::new_record(fields).map_err(|e| MappingError::Context(e.to_string()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
