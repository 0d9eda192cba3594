//! Configuration: the embedded default or a TOML file, environment
//! overrides, and validation of all of it before a port is bound.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cedar_policy::{EntityTypeName, EntityUid};
use serde::Deserialize;

use crate::request::{ContextSettings, IdentitySettings, Mapper, RouteSpec, RouteTable};

/// The configuration used when no file is given.
pub const EMBEDDED: &str = include_str!("default-config.toml");

/// Headers that carry credentials; they never reach policies or logs.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// A configuration that cannot be used. Each message names where the value
/// came from, the field, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{col}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{origin}: field `{field}`: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// Where configuration values are read from the environment. Tests pass a
/// map instead of touching the process environment.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    request: RawRequest,
    #[serde(default)]
    response: RawResponse,
    #[serde(default)]
    default_route: RawDefaultRoute,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    redis: RawRedis,
    #[serde(default)]
    approvals: RawApprovals,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    audit: RawAudit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    max_entries: u64,
    max_age: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_age: "90d".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRedis {
    url: String,
    cluster: bool,
    /// Default: 1 on a cluster, 0 on one node.
    replica_acks: Option<u32>,
    prefix: String,
    timeout_ms: u64,
    retention: String,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            replica_acks: None,
            prefix: "countersign:".into(),
            timeout_ms: 250,
            retention: "7d".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApprovals {
    token_header: String,
    hold_max: String,
    store_budget: String,
    webhooks: Vec<RawWebhook>,
}

impl Default for RawApprovals {
    fn default() -> Self {
        Self {
            token_header: "x-countersign-approval".into(),
            hold_max: "25s".into(),
            store_budget: "400ms".into(),
            webhooks: vec![],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    #[serde(default = "json_format")]
    format: crate::approval::notify::Format,
}

fn json_format() -> crate::approval::notify::Format {
    crate::approval::notify::Format::Json
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    approvers: Vec<RawApprover>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9192".into(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            approvers: vec![],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprover {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    token_sha256: Option<String>,
}

/// The approvers' API: TLS material (read at start-up) and approvers.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// CA for client certificates; without it only bearer tokens work.
    pub client_ca_pem: Option<Vec<u8>>,
    pub approvers: Vec<ApproverConfig>,
}

impl std::fmt::Debug for AdminConfig {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("approvers", &self.approvers)
            .finish_non_exhaustive()
    }
}

/// A known approver: the name a client certificate or token maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverConfig {
    pub name: String,
    pub groups: Vec<String>,
    /// SHA-256 (hex) of the approver's bearer token; the token itself is
    /// never stored.
    pub token_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    shutdown_grace_seconds: u64,
    log: String,
    log_format: LogFormat,
    metrics_listen: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9191".into(),
            shutdown_grace_seconds: 30,
            log: "info".into(),
            log_format: LogFormat::Text,
            metrics_listen: "127.0.0.1:9193".into(),
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    dir: PathBuf,
    watch: bool,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            dir: "policies".into(),
            watch: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    jwt_metadata_key: String,
    groups_claim: String,
    on_behalf_of_claim: String,
    user_type: String,
    group_type: String,
    workload_type: String,
    anonymous: String,
    trusted_header: Option<RawTrustedHeader>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        Self {
            jwt_metadata_key: "jwt_payload".into(),
            groups_claim: "groups".into(),
            on_behalf_of_claim: "on_behalf_of".into(),
            user_type: "User".into(),
            group_type: "Group".into(),
            workload_type: "Workload".into(),
            anonymous: r#"Anonymous::"anonymous""#.into(),
            trusted_header: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustedHeader {
    name: String,
    entity_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRequest {
    headers: Vec<String>,
    query: Vec<String>,
    max_body_bytes: usize,
}

impl Default for RawRequest {
    fn default() -> Self {
        Self {
            headers: vec![],
            query: vec![],
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawResponse {
    principal_header: String,
}

impl Default for RawResponse {
    fn default() -> Self {
        Self {
            principal_header: "x-countersign-principal".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDefaultRoute {
    action: String,
    resource_type: String,
}

impl Default for RawDefaultRoute {
    fn default() -> Self {
        Self {
            action: "http_request".into(),
            resource_type: "Path".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: Option<String>,
    path: String,
    action: String,
    resource: String,
    #[serde(default)]
    body: bool,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// `embedded default config` or the file path.
    pub origin: String,
    pub listen: SocketAddr,
    pub shutdown_grace: Duration,
    pub log: String,
    pub log_format: LogFormat,
    /// `/metrics`, `/healthz`, `/readyz`; `None` when switched off.
    pub metrics_listen: Option<SocketAddr>,
    pub policy_dir: PathBuf,
    pub watch_policies: bool,
    pub jwt_metadata_key: String,
    /// Header naming the principal to the upstream; `None` when disabled.
    pub principal_header: Option<String>,
    pub mapper: Mapper,
    pub store: crate::approval::StoreConfig,
    pub token_header: String,
    pub hold_max: Duration,
    /// Longest the approval store may take on one check (outside a hold).
    pub store_budget: Duration,
    pub webhooks: Vec<crate::approval::notify::Webhook>,
    /// `None` when no TLS certificate is configured: the admin API is off.
    pub admin: Option<AdminConfig>,
}

impl Config {
    /// Loads from `--config` (or `COUNTERSIGN_CONFIG`, or the embedded
    /// default), applies `COUNTERSIGN_LISTEN`, `COUNTERSIGN_POLICY_DIR` and
    /// `COUNTERSIGN_LOG`, and validates everything.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_owned)
            .or_else(|| env.var("COUNTERSIGN_CONFIG").map(PathBuf::from));
        let (origin, text, base) = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                let base = p.parent().map(Path::to_owned).unwrap_or_default();
                (p.display().to_string(), text, base)
            }
            None => (
                "embedded default config".to_owned(),
                EMBEDDED.to_owned(),
                PathBuf::new(),
            ),
        };
        let mut raw: Raw = toml::from_str(&text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start);
            let (line, col) = crate::location::line_col(&text, start);
            // toml names the expected type but not the key: quote the line.
            let source = text.lines().nth(line - 1).unwrap_or_default().trim();
            let message = format!("{} (in `{source}`)", e.message().trim_end());
            ConfigError::Syntax {
                origin: origin.clone(),
                line,
                col,
                message,
            }
        })?;

        let mut listen_origin = origin.clone();
        if let Some(v) = env.var("COUNTERSIGN_LISTEN") {
            raw.server.listen = v;
            listen_origin = "environment variable COUNTERSIGN_LISTEN".into();
        }
        let policy_dir = match env.var("COUNTERSIGN_POLICY_DIR") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            Some(_) => {
                return Err(invalid(
                    "environment variable COUNTERSIGN_POLICY_DIR",
                    "policy.dir",
                    "expected a directory path, got an empty string",
                ));
            }
            None => base.join(&raw.policy.dir),
        };
        let mut redis_origin = origin.clone();
        if let Some(v) = env.var("COUNTERSIGN_REDIS_URL") {
            raw.redis.url = v;
            redis_origin = "environment variable COUNTERSIGN_REDIS_URL".into();
        }
        let mut admin_origin = origin.clone();
        if let Some(v) = env.var("COUNTERSIGN_ADMIN_LISTEN") {
            raw.admin.listen = v;
            admin_origin = "environment variable COUNTERSIGN_ADMIN_LISTEN".into();
        }
        // TLS files and approvers from the environment, for containers and
        // quick starts; they replace the file's values.
        for (var, slot) in [
            ("COUNTERSIGN_ADMIN_TLS_CERT", &mut raw.admin.tls_cert),
            ("COUNTERSIGN_ADMIN_TLS_KEY", &mut raw.admin.tls_key),
            ("COUNTERSIGN_ADMIN_CLIENT_CA", &mut raw.admin.client_ca),
        ] {
            if let Some(v) = env.var(var) {
                *slot = Some(std::env::current_dir().unwrap_or_default().join(v));
            }
        }
        if let Some(v) = env.var("COUNTERSIGN_ADMIN_APPROVERS") {
            raw.admin.approvers = parse_approvers(&v).map_err(|m| {
                invalid(
                    "environment variable COUNTERSIGN_ADMIN_APPROVERS",
                    "admin.approvers",
                    &m,
                )
            })?;
        }
        let mut metrics_origin = origin.clone();
        if let Some(v) = env.var("COUNTERSIGN_METRICS_LISTEN") {
            raw.server.metrics_listen = v;
            metrics_origin = "environment variable COUNTERSIGN_METRICS_LISTEN".into();
        }
        if let Some(v) = env.var("COUNTERSIGN_LOG_FORMAT") {
            raw.server.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "environment variable COUNTERSIGN_LOG_FORMAT",
                        "server.log_format",
                        &format!("expected `text` or `json`, got `{other}`"),
                    ));
                }
            };
        }
        let origins = Origins {
            redis: redis_origin,
            admin: admin_origin,
            metrics: metrics_origin,
            base: base.clone(),
        };
        let mut log_origin = origin.clone();
        if let Some(v) = env.var("COUNTERSIGN_LOG") {
            raw.server.log = v;
            log_origin = "environment variable COUNTERSIGN_LOG".into();
        }
        validate(
            raw,
            &origin,
            &listen_origin,
            &log_origin,
            policy_dir,
            &origins,
        )
    }
}

fn validate(
    raw: Raw,
    origin: &str,
    listen_origin: &str,
    log_origin: &str,
    policy_dir: PathBuf,
    origins: &Origins,
) -> Result<Config, ConfigError> {
    let o = origin;
    let listen = raw.server.listen.parse::<SocketAddr>().map_err(|_| {
        invalid(
            listen_origin,
            "server.listen",
            &format!(
                "expected an IP address and port such as `127.0.0.1:9191`, got `{}`",
                raw.server.listen
            ),
        )
    })?;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.server.log) {
        return Err(invalid(
            log_origin,
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

    let mut headers = Vec::with_capacity(raw.request.headers.len());
    for (i, h) in raw.request.headers.iter().enumerate() {
        let field = format!("request.headers[{i}]");
        let name = public_header(o, &field, h)?;
        if headers.contains(&name) {
            return Err(invalid(o, &field, &format!("`{name}` is listed twice")));
        }
        headers.push(name);
    }
    let mut seen = HashSet::new();
    for (i, q) in raw.request.query.iter().enumerate() {
        if q.is_empty() || !seen.insert(q) {
            return Err(invalid(
                o,
                &format!("request.query[{i}]"),
                &format!("expected a unique, non-empty parameter name, got `{q}`"),
            ));
        }
    }
    if raw.request.max_body_bytes == 0 {
        return Err(invalid(
            o,
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
                return Err(invalid(
                    o,
                    &f("method"),
                    &format!("expected an HTTP method such as `GET` or `*` for any, got `{m}`"),
                ));
            }
        };
        let (resource_type, resource_id) = split_resource(&r.resource).ok_or_else(|| {
            invalid(
                o,
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
        });
    }
    let routes = RouteTable::new(specs, default_action, default_type)
        .map_err(|(i, e)| invalid(o, &format!("routes[{i}]"), &e.to_string()))?;

    let mut store = validate_redis(&raw.redis, &origins.redis)?;
    if raw.audit.max_entries == 0 {
        return Err(invalid(
            o,
            "audit.max_entries",
            "expected a positive number of entries",
        ));
    }
    store.audit_max_len = raw.audit.max_entries;
    store.audit_max_age = match raw.audit.max_age.as_str() {
        "off" => None,
        age => Some(duration(o, "audit.max_age", age)?),
    };
    let metrics_listen = match raw.server.metrics_listen.as_str() {
        "" | "off" => None,
        v => Some(v.parse::<SocketAddr>().map_err(|_| {
            invalid(
                &origins.metrics,
                "server.metrics_listen",
                &format!("expected an address such as `127.0.0.1:9193`, or `off`, got `{v}`"),
            )
        })?),
    };
    let token_header = public_header(o, "approvals.token_header", &raw.approvals.token_header)?;
    let hold_max = duration(o, "approvals.hold_max", &raw.approvals.hold_max)?;
    let store_budget = duration(o, "approvals.store_budget", &raw.approvals.store_budget)?;
    let grace = Duration::from_secs(raw.server.shutdown_grace_seconds);
    if grace < hold_max {
        return Err(invalid(
            o,
            "server.shutdown_grace_seconds",
            &format!(
                "expected at least approvals.hold_max ({}s), so that held checks can finish at shutdown, got {}",
                hold_max.as_secs(),
                raw.server.shutdown_grace_seconds
            ),
        ));
    }
    let admin = validate_admin(&raw.admin, o, origins)?;
    let mut webhooks = Vec::new();
    for (i, w) in raw.approvals.webhooks.iter().enumerate() {
        if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
            return Err(invalid(
                o,
                &format!("approvals.webhooks[{i}].url"),
                &format!("expected an http:// or https:// URL, got `{}`", w.url),
            ));
        }
        webhooks.push(crate::approval::notify::Webhook {
            url: w.url.clone(),
            format: w.format,
        });
    }

    Ok(Config {
        store,
        token_header,
        hold_max,
        store_budget,
        webhooks,
        admin,
        origin: origin.to_owned(),
        listen,
        shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_seconds),
        log: raw.server.log,
        log_format: raw.server.log_format,
        metrics_listen,
        policy_dir,
        watch_policies: raw.policy.watch,
        jwt_metadata_key,
        principal_header,
        mapper: Mapper {
            routes,
            identity,
            context: ContextSettings {
                headers,
                query: raw.request.query,
                max_body_bytes: raw.request.max_body_bytes,
            },
        },
    })
}

/// Where values that environment variables may override came from.
struct Origins {
    redis: String,
    admin: String,
    metrics: String,
    /// Directory relative paths in a file are resolved against.
    base: PathBuf,
}

fn validate_redis(r: &RawRedis, o: &str) -> Result<crate::approval::StoreConfig, ConfigError> {
    // Commas separate a cluster's seed nodes; one node's URL is taken
    // whole (a comma may be part of its password).
    let urls: Vec<&str> = if r.cluster {
        r.url.split(',').map(str::trim).collect()
    } else {
        vec![r.url.trim()]
    };
    if !r.cluster && r.url.contains(",redis") && redis::Client::open(urls[0]).is_err() {
        return Err(invalid(
            o,
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
            return Err(invalid(
                o,
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
        return Err(invalid(
            o,
            "redis.prefix",
            &format!(
                "expected no `{{` or `}}` (countersign adds its own hash tags), got `{}`",
                r.prefix
            ),
        ));
    }
    if r.timeout_ms == 0 {
        return Err(invalid(
            o,
            "redis.timeout_ms",
            "expected a positive number of milliseconds",
        ));
    }
    Ok(crate::approval::StoreConfig {
        url: r.url.clone(),
        cluster: r.cluster,
        replica_acks: r.replica_acks.unwrap_or(u32::from(r.cluster)),
        prefix: r.prefix.clone(),
        timeout: Duration::from_millis(r.timeout_ms),
        retention: match duration(o, "redis.retention", &r.retention)? {
            // Records must outlive their deadline long enough for the expiry
            // sweep to record them.
            r if r < Duration::from_secs(60) => {
                return Err(invalid(
                    o,
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
    })
}

fn validate_admin(
    a: &RawAdmin,
    o: &str,
    origins: &Origins,
) -> Result<Option<AdminConfig>, ConfigError> {
    let listen = a.listen.parse::<SocketAddr>().map_err(|_| {
        invalid(
            &origins.admin,
            "admin.listen",
            &format!(
                "expected an IP address and port such as `127.0.0.1:9192`, got `{}`",
                a.listen
            ),
        )
    })?;
    let read = |field: &str, p: &Path| -> Result<Vec<u8>, ConfigError> {
        let path = origins.base.join(p);
        let bytes = std::fs::read(&path)
            .map_err(|e| invalid(o, field, &format!("cannot read `{}`: {e}", path.display())))?;
        if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(invalid(
                o,
                field,
                &format!("`{}` is not a PEM file", path.display()),
            ));
        }
        Ok(bytes)
    };
    let (cert_pem, key_pem) = match (&a.tls_cert, &a.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (read("admin.tls_cert", c)?, read("admin.tls_key", k)?),
        (Some(_), None) => {
            return Err(invalid(
                o,
                "admin.tls_key",
                "expected a PEM private key, since admin.tls_cert is set",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                o,
                "admin.tls_cert",
                "expected a PEM certificate, since admin.tls_key is set",
            ));
        }
    };
    let client_ca_pem = a
        .client_ca
        .as_deref()
        .map(|p| read("admin.client_ca", p))
        .transpose()?;
    let mut approvers = Vec::new();
    for (i, ap) in a.approvers.iter().enumerate() {
        let f = |n: &str| format!("admin.approvers[{i}].{n}");
        if ap.name.trim().is_empty() {
            return Err(invalid(o, &f("name"), "expected a non-empty name"));
        }
        if let Some(h) = &ap.token_sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid(
                o,
                &f("token_sha256"),
                "expected 64 hex digits: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
            ));
        }
        approvers.push(ApproverConfig {
            name: ap.name.clone(),
            groups: ap.groups.clone(),
            token_sha256: ap.token_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
        });
    }
    if client_ca_pem.is_none() && approvers.iter().all(|a| a.token_sha256.is_none()) {
        return Err(invalid(
            o,
            "admin.client_ca",
            "expected a CA for client certificates, or at least one approver with `token_sha256`: otherwise nobody can authenticate",
        ));
    }
    Ok(Some(AdminConfig {
        listen,
        cert_pem,
        key_pem,
        client_ca_pem,
        approvers,
    }))
}

/// `name=group+group,name=group`: approvers and their groups.
fn parse_approvers(v: &str) -> Result<Vec<RawApprover>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (name, groups) = entry.split_once('=').unwrap_or((entry, ""));
            if name.trim().is_empty() {
                return Err(format!("expected `name=group+group,...`, got `{entry}`"));
            }
            Ok(RawApprover {
                name: name.trim().to_owned(),
                groups: groups
                    .split('+')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect(),
                token_sha256: None,
            })
        })
        .collect()
}

fn duration(o: &str, field: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v.trim()).map_err(|_| {
        invalid(
            o,
            field,
            &format!("expected a duration such as `25s`, `15m` or `7d`, got `{v}`"),
        )
    })
}

fn invalid(origin: &str, field: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

fn non_empty(o: &str, field: &str, v: &str) -> Result<String, ConfigError> {
    if v.is_empty() {
        return Err(invalid(o, field, "expected a non-empty string"));
    }
    Ok(v.to_owned())
}

fn type_name(o: &str, field: &str, v: &str) -> Result<EntityTypeName, ConfigError> {
    EntityTypeName::from_str(v).map_err(|_| {
        invalid(
            o,
            field,
            &format!("expected a Cedar entity type such as `User` or `Acme::User`, got `{v}`"),
        )
    })
}

fn entity_uid(o: &str, field: &str, v: &str) -> Result<EntityUid, ConfigError> {
    EntityUid::from_str(v).map_err(|_| {
        invalid(
            o,
            field,
            &format!(r#"expected a Cedar entity such as `Anonymous::"anonymous"`, got `{v}`"#),
        )
    })
}

/// `export` means `Action::"export"`; a full `Ns::Action::"export"` is kept.
fn action_uid(o: &str, field: &str, v: &str) -> Result<EntityUid, ConfigError> {
    let full = if v.contains("::") {
        v.to_owned()
    } else {
        format!(r#"Action::"{v}""#)
    };
    EntityUid::from_str(&full).map_err(|_| {
        invalid(
            o,
            field,
            &format!(
                r#"expected an action name such as `export` or `Action::"export"`, got `{v}`"#
            ),
        )
    })
}

fn header_name(o: &str, field: &str, v: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(invalid(
            o,
            field,
            &format!("expected an HTTP header name such as `x-request-id`, got `{v}`"),
        ));
    }
    Ok(v.to_ascii_lowercase())
}

/// A header name that does not carry credentials: its value may become a
/// principal, reach the policy context or be sent upstream.
fn public_header(o: &str, field: &str, v: &str) -> Result<String, ConfigError> {
    let name = header_name(o, field, v)?;
    if SECRET_HEADERS.contains(&name.as_str()) {
        return Err(invalid(
            o,
            field,
            &format!("`{name}` carries credentials and cannot be used here"),
        ));
    }
    Ok(name)
}

/// Splits `Type::"id"` into `Type` and `id`.
fn split_resource(v: &str) -> Option<(&str, &str)> {
    let (ty, rest) = v.split_once("::\"")?;
    let id = rest.strip_suffix('"')?;
    (!ty.is_empty()).then_some((ty, id))
}

#[cfg(test)]
mod tests;
