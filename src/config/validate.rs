//! Validation: the file's values (after the environment's) into the typed
//! [`Config`], each error naming the origin, the field and what was expected.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use cedar_policy::{EntityTypeName, EntityUid};

use super::admin::validate_admin;
use super::env::{Env, Origins};
use super::schema::{Raw, RawMcp, RawRedis};
use super::{Config, ConfigError, Enforcement};
use crate::approval::StoreConfig;
use crate::request::mcp::ResourceTemplate as McpResource;
use crate::request::{
    ContextSettings, IdentitySettings, Mapper, McpEndpoint, RouteSpec, RouteTable,
};

/// Headers that carry credentials; they never reach policies or logs.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Checks every field and builds the typed configuration; each error names
/// where the value came from (`o`), the field and what was expected.
pub(super) fn validate(raw: Raw, o: &Origins, env: &dyn Env) -> Result<Config, ConfigError> {
    let listen = raw.server.listen.parse::<SocketAddr>().map_err(|_| {
        o.invalid(
            "server.listen",
            &format!(
                "expected an IP address and port such as `127.0.0.1:9191`, got `{}`",
                raw.server.listen
            ),
        )
    })?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.server.log) {
        return Err(o.invalid(
            "server.log",
            &format!(
                "expected a tracing filter such as `info` or `countersign=debug`, got `{}`: {e}",
                raw.server.log
            ),
        ));
    }

    let id = &raw.identity;
    let identity = IdentitySettings {
        user_type: type_name(o, "identity.user_type", &id.user_type)?,
        group_type: type_name(o, "identity.group_type", &id.group_type)?,
        workload_type: type_name(o, "identity.workload_type", &id.workload_type)?,
        anonymous: entity_uid(o, "identity.anonymous", &id.anonymous)?,
        principal_claim: non_empty(o, "identity.principal_claim", &id.principal_claim)?,
        groups_claim: non_empty(o, "identity.groups_claim", &id.groups_claim)?,
        on_behalf_of_claim: non_empty(o, "identity.on_behalf_of_claim", &id.on_behalf_of_claim)?,
        trusted_header: match &id.trusted_header {
            None => None,
            Some(t) => Some((
                public_header(o, "identity.trusted_header.name", &t.name)?,
                type_name(o, "identity.trusted_header.entity_type", &t.entity_type)?,
            )),
        },
    };
    let jwt_metadata_key = non_empty(o, "identity.jwt_metadata_key", &id.jwt_metadata_key)?;

    let token_header = public_header(o, "approvals.token_header", &raw.approvals.token_header)?;
    let mut headers = Vec::with_capacity(raw.request.headers.len());
    for (i, h) in raw.request.headers.iter().enumerate() {
        let field = format!("request.headers[{i}]");
        let name = public_header(o, &field, h)?;
        // A token in the context would let a policy (or a policy author's
        // log) see a credential that passes for the approval itself.
        if name == token_header {
            return Err(o.invalid(
                &field,
                &format!(
                    "`{name}` is the approval token header (`approvals.token_header`): a token is a credential and never reaches policies"
                ),
            ));
        }
        if headers.contains(&name) {
            return Err(o.invalid(&field, &format!("`{name}` is listed twice")));
        }
        headers.push(name);
    }
    let mut seen = HashSet::new();
    for (i, q) in raw.request.query.iter().enumerate() {
        if q.is_empty() || !seen.insert(q) {
            return Err(o.invalid(
                &format!("request.query[{i}]"),
                &format!("expected a unique, non-empty parameter name, got `{q}`"),
            ));
        }
    }
    let body_content_types = media_types(o, &raw.request.body_content_types)?;
    if raw.request.max_body_bytes == 0 {
        return Err(o.invalid(
            "request.max_body_bytes",
            "expected a positive number of bytes",
        ));
    }

    let principal_header = match raw.response.principal_header.as_str() {
        "" => None,
        h => Some(public_header(o, "response.principal_header", h)?),
    };

    let default_action = action_uid(o, "default_route.action", &raw.default_route.action)?;
    let default_type = type_name(
        o,
        "default_route.resource_type",
        &raw.default_route.resource_type,
    )?;
    let mut specs = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.iter().enumerate() {
        let f = |name: &str| format!("routes[{i}].{name}");
        let method = match &r.method {
            None => None,
            Some(m) if m == "*" => None,
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(m.to_ascii_uppercase())
            }
            Some(m) => {
                return Err(o.invalid(
                    &f("method"),
                    &format!("expected an HTTP method such as `GET` or `*` for any, got `{m}`"),
                ));
            }
        };
        let (resource_type, resource_id) = split_resource(&r.resource).ok_or_else(|| {
            o.invalid(
                &f("resource"),
                &format!(
                    r#"expected `Type::"id template"` such as `Dataset::"{{id}}"`, got `{}`"#,
                    r.resource
                ),
            )
        })?;
        specs.push(RouteSpec {
            method,
            path: r.path.clone(),
            action: action_uid(o, &f("action"), &r.action)?,
            resource_type: type_name(o, &f("resource"), resource_type)?,
            resource_id: resource_id.to_owned(),
            body: r.body,
            shadow: r.enforcement.unwrap_or(raw.policy.enforcement) == Enforcement::Shadow,
        });
    }
    let mut routes = RouteTable::new(specs, default_action, default_type)
        .map_err(|(i, e)| o.invalid(&format!("routes[{i}]"), &e.to_string()))?;
    routes.set_default_shadow(
        raw.default_route
            .enforcement
            .unwrap_or(raw.policy.enforcement)
            == Enforcement::Shadow,
    );

    let mcp = raw
        .mcp
        .iter()
        .enumerate()
        .map(|(i, m)| validate_mcp(o, i, m, &routes, raw.policy.enforcement))
        .collect::<Result<Vec<_>, _>>()?;

    let mut store = validate_redis(&raw.redis, o)?;
    if raw.audit.max_entries == 0 {
        return Err(o.invalid("audit.max_entries", "expected a positive number of entries"));
    }
    store.audit_max_len = raw.audit.max_entries;
    if raw.approvals.max_pending_per_principal == 0 {
        return Err(o.invalid(
            "approvals.max_pending_per_principal",
            "expected a positive number of requests",
        ));
    }
    store.max_pending_per_principal = raw.approvals.max_pending_per_principal;
    store.audit_max_age = match raw.audit.max_age.as_str() {
        "off" => None,
        age => Some(duration(o, "audit.max_age", age)?),
    };
    let metrics_listen = match raw.server.metrics_listen.as_str() {
        "" | "off" => None,
        v => Some(v.parse::<SocketAddr>().map_err(|_| {
            o.invalid(
                "server.metrics_listen",
                &format!("expected an address such as `127.0.0.1:9193`, or `off`, got `{v}`"),
            )
        })?),
    };
    let hold_max = duration(o, "approvals.hold_max", &raw.approvals.hold_max)?;
    let store_budget = duration(o, "approvals.store_budget", &raw.approvals.store_budget)?;
    let grace = Duration::from_secs(raw.server.shutdown_grace_seconds);
    if grace < hold_max {
        return Err(o.invalid(
            "server.shutdown_grace_seconds",
            &format!(
                "expected at least approvals.hold_max ({}s), so that held checks can finish at shutdown, got {}",
                hold_max.as_secs(),
                raw.server.shutdown_grace_seconds
            ),
        ));
    }
    let admin = validate_admin(&raw.admin, o)?;
    let authzen = raw
        .authzen
        .as_ref()
        .map(|a| super::authzen::validate_authzen(a, o))
        .transpose()?;
    let webhooks = super::notifications::validate_webhooks(&raw.approvals.webhooks, o, env)?;
    let notifications = super::notifications::validate_notifications(&raw.notifications, o)?;
    // Secrets named by environment variable are read through `env`.
    let slack = raw
        .slack
        .as_ref()
        .map(|s| super::slack::validate_slack(s, &raw.admin.approvers, o, env))
        .transpose()?;

    Ok(Config {
        store,
        token_header,
        hold_max,
        store_budget,
        webhooks,
        notifications,
        admin,
        authzen,
        slack,
        record: None,
        origin: o.file.clone(),
        listen,
        shutdown_grace: grace,
        log: raw.server.log,
        log_format: raw.server.log_format,
        metrics_listen,
        policy_dir: raw.policy.dir,
        watch_policies: raw.policy.watch,
        enforcement: raw.policy.enforcement,
        jwt_metadata_key,
        principal_header,
        mapper: Mapper {
            routes,
            mcp,
            identity,
            context: ContextSettings {
                headers,
                query: raw.request.query,
                max_body_bytes: raw.request.max_body_bytes,
                body_content_types,
            },
        },
    })
}

fn validate_redis(r: &RawRedis, o: &Origins) -> Result<StoreConfig, ConfigError> {
    // Commas separate a cluster's seed nodes; one node's URL is taken
    // whole (a comma may be part of its password).
    let urls: Vec<&str> = if r.cluster {
        r.url.split(',').map(str::trim).collect()
    } else {
        vec![r.url.trim()]
    };
    if !r.cluster && r.url.contains(",redis") && redis::Client::open(urls[0]).is_err() {
        return Err(o.invalid(
            "redis.url",
            "several URLs name the nodes of a Redis Cluster: set `redis.cluster = true`, \
             or give one URL",
        ));
    }
    for url in urls {
        if let Err(e) = redis::Client::open(url) {
            // Never the password in an error message: only what follows it.
            let shown = url
                .rsplit_once('@')
                .map_or(url.to_owned(), |(_, h)| format!("…@{h}"));
            return Err(o.invalid(
                "redis.url",
                &format!(
                    "expected a URL such as `redis://127.0.0.1:6379` or `rediss://host:6380`, \
                     got `{shown}`: {e}"
                ),
            ));
        }
    }
    // The prefix comes before each key's hash tag; a brace in it would
    // become the tag and put every shard in one slot.
    if r.prefix.contains(['{', '}']) {
        return Err(o.invalid(
            "redis.prefix",
            &format!(
                "expected no `{{` or `}}` (countersign adds its own hash tags), got `{}`",
                r.prefix
            ),
        ));
    }
    if r.timeout_ms == 0 {
        return Err(o.invalid(
            "redis.timeout_ms",
            "expected a positive number of milliseconds",
        ));
    }
    Ok(StoreConfig {
        url: r.url.clone(),
        cluster: r.cluster,
        replica_acks: r.replica_acks.unwrap_or(u32::from(r.cluster)),
        prefix: r.prefix.clone(),
        timeout: Duration::from_millis(r.timeout_ms),
        retention: match duration(o, "redis.retention", &r.retention)? {
            // Records must outlive their deadline long enough for the expiry
            // sweep to record them.
            r if r < Duration::from_secs(60) => {
                return Err(o.invalid(
                    "redis.retention",
                    &format!(
                        "expected at least 1m, got `{}`",
                        humantime::format_duration(r)
                    ),
                ));
            }
            r => r,
        },
        audit_max_len: 1_000_000,
        audit_max_age: None,
        max_pending_per_principal: crate::approval::store::DEFAULT_MAX_PENDING_PER_PRINCIPAL,
    })
}

pub(super) fn duration(o: &Origins, field: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v.trim()).map_err(|_| {
        o.invalid(
            field,
            &format!("expected a duration such as `25s`, `15m` or `7d`, got `{v}`"),
        )
    })
}

fn non_empty(o: &Origins, field: &str, v: &str) -> Result<String, ConfigError> {
    if v.is_empty() {
        return Err(o.invalid(field, "expected a non-empty string"));
    }
    Ok(v.to_owned())
}

fn type_name(o: &Origins, field: &str, v: &str) -> Result<EntityTypeName, ConfigError> {
    EntityTypeName::from_str(v).map_err(|_| {
        o.invalid(
            field,
            &format!("expected a Cedar entity type such as `User` or `Acme::User`, got `{v}`"),
        )
    })
}

fn entity_uid(o: &Origins, field: &str, v: &str) -> Result<EntityUid, ConfigError> {
    EntityUid::from_str(v).map_err(|_| {
        o.invalid(
            field,
            &format!(r#"expected a Cedar entity such as `Anonymous::"anonymous"`, got `{v}`"#),
        )
    })
}

/// `export` means `Action::"export"`; a full `Ns::Action::"export"` is kept.
fn action_uid(o: &Origins, field: &str, v: &str) -> Result<EntityUid, ConfigError> {
    let full = if v.contains("::") {
        v.to_owned()
    } else {
        format!(r#"Action::"{v}""#)
    };
    EntityUid::from_str(&full).map_err(|_| {
        o.invalid(
            field,
            &format!(
                r#"expected an action name such as `export` or `Action::"export"`, got `{v}`"#
            ),
        )
    })
}

fn header_name(o: &Origins, field: &str, v: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(o.invalid(
            field,
            &format!("expected an HTTP header name such as `x-request-id`, got `{v}`"),
        ));
    }
    Ok(v.to_ascii_lowercase())
}

/// A header name that does not carry credentials: its value may become a
/// principal, reach the policy context or be sent upstream.
fn public_header(o: &Origins, field: &str, v: &str) -> Result<String, ConfigError> {
    let name = header_name(o, field, v)?;
    if SECRET_HEADERS.contains(&name.as_str()) {
        return Err(o.invalid(
            field,
            &format!("`{name}` carries credentials and cannot be used here"),
        ));
    }
    Ok(name)
}

/// `request.body_content_types`: bare media types (`type/subtype`, no
/// parameters or wildcards), lower-cased; at least one.
fn media_types(o: &Origins, types: &[String]) -> Result<Vec<String>, ConfigError> {
    const FIELD: &str = "request.body_content_types";
    if types.is_empty() {
        return Err(o.invalid(
            FIELD,
            "expected at least one media type, such as `application/json`",
        ));
    }
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let mut out = Vec::with_capacity(types.len());
    for (i, t) in types.iter().enumerate() {
        let lower = t.to_ascii_lowercase();
        let bare = lower
            .split_once('/')
            .is_some_and(|(ty, sub)| token(ty) && token(sub));
        if !bare || out.contains(&lower) {
            return Err(o.invalid(
                &format!("{FIELD}[{i}]"),
                &format!(
                    "expected a unique media type `type/subtype` without parameters or wildcards, got `{t}`"
                ),
            ));
        }
        out.push(lower);
    }
    Ok(out)
}

fn validate_mcp(
    o: &Origins,
    i: usize,
    m: &RawMcp,
    routes: &RouteTable,
    enforcement: Enforcement,
) -> Result<McpEndpoint, ConfigError> {
    let f = |name: &str| format!("mcp[{i}].{name}");
    if !m.path.starts_with('/') || m.path.contains(['{', '?', '#']) {
        return Err(o.invalid(
            &f("path"),
            &format!("expected a literal path such as `/mcp`, got `{}`", m.path),
        ));
    }
    // Matched first, the endpoint would hide a route on its path.
    let shadowed = ["POST", "GET", "DELETE"].into_iter().any(|method| {
        routes
            .resolve(method, &m.path)
            .is_ok_and(|r| r.route.is_some())
    });
    if shadowed {
        return Err(o.invalid(
            &f("path"),
            &format!(
                "`{}` is also a route's path: an MCP endpoint needs its own",
                m.path
            ),
        ));
    }
    let server = non_empty(o, &f("server"), &m.server)?;
    let resource_type = type_name(o, &f("resource_type"), &m.resource_type)?;
    let tool_action = m
        .tool_action
        .split_once("{tool}")
        .filter(|(a, b)| !a.contains(['{', '"']) && !b.contains(['{', '"']))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| {
            o.invalid(
                &f("tool_action"),
                &format!(
                    "expected a template with `{{tool}}` once, such as `{{tool}}` or `mcp_{{tool}}`, got `{}`",
                    m.tool_action
                ),
            )
        })?;
    let mut methods = HashMap::new();
    for (method, action) in &m.methods {
        methods.insert(
            method.clone(),
            action_uid(o, &f(&format!("methods.{method}")), action)?,
        );
    }
    let mut resources = HashMap::new();
    for (tool, resource) in &m.resources {
        let field = f(&format!("resources.{tool}"));
        let expected = |why: &str| {
            o.invalid(
                &field,
                &format!(
                    r#"expected `Type::"id template"` with `{{arguments.NAME}}` placeholders, such as `Dataset::"{{arguments.dataset}}"`, got `{resource}`{why}"#
                ),
            )
        };
        let (ty, id) = split_resource(resource).ok_or_else(|| expected(""))?;
        let ty = type_name(o, &field, ty)?;
        let parsed = McpResource::parse(ty, id).map_err(|e| expected(&format!(": {e}")))?;
        resources.insert(tool.clone(), parsed);
    }
    Ok(McpEndpoint {
        path: m.path.clone(),
        server_resource: EntityUid::from_type_name_and_id(
            resource_type,
            cedar_policy::EntityId::new(&server),
        ),
        server,
        tool_action,
        protocol_action: action_uid(o, &f("protocol_action"), &m.protocol_action)?,
        methods,
        resources,
        shadow: m.enforcement.unwrap_or(enforcement) == Enforcement::Shadow,
    })
}

/// Splits `Type::"id"` into `Type` and `id`.
fn split_resource(v: &str) -> Option<(&str, &str)> {
    let (ty, rest) = v.split_once("::\"")?;
    let id = rest.strip_suffix('"')?;
    (!ty.is_empty()).then_some((ty, id))
}
