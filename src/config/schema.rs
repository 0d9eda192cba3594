//! The TOML file as written: one struct per table, every field optional
//! with the default named here, and no unknown keys. No `Debug`: these
//! hold the Redis password, webhook URLs and token hashes as written.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Enforcement, LogFormat};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub request: RawRequest,
    #[serde(default)]
    pub response: RawResponse,
    #[serde(default)]
    pub default_route: RawDefaultRoute,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub mcp: Vec<RawMcp>,
    #[serde(default)]
    pub redis: RawRedis,
    #[serde(default)]
    pub approvals: RawApprovals,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub notifications: super::notifications::RawNotifications,
    /// Off unless the table is present.
    pub authzen: Option<RawAuthzen>,
    /// Off unless the table is present.
    pub slack: Option<super::slack::RawSlack>,
}

impl Raw {
    /// Relative paths in a file are relative to the file's directory
    /// (`base`); applied before the environment, whose paths are not.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.policy.dir = base.join(&self.policy.dir);
        for path in [
            &mut self.admin.tls_cert,
            &mut self.admin.tls_key,
            &mut self.admin.client_ca,
        ]
        .into_iter()
        .flatten()
        {
            *path = base.join(&*path);
        }
        for w in &mut self.approvals.webhooks {
            if let Some(path) = &mut w.secret_file {
                *path = base.join(&*path);
            }
        }
        if let Some(a) = &mut self.authzen {
            for path in [
                &mut a.tls_cert,
                &mut a.tls_key,
                &mut a.client_ca,
                &mut a.binding_key_file,
            ]
            .into_iter()
            .flatten()
            {
                *path = base.join(&*path);
            }
        }
        if let Some(s) = &mut self.slack {
            for path in [&mut s.bot_token_file, &mut s.signing_secret_file]
                .into_iter()
                .flatten()
            {
                *path = base.join(&*path);
            }
        }
    }
}

/// An MCP server's Streamable HTTP endpoint (`[[mcp]]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMcp {
    pub path: String,
    pub server: String,
    #[serde(default = "RawMcp::default_resource_type")]
    pub resource_type: String,
    #[serde(default = "RawMcp::default_tool_action")]
    pub tool_action: String,
    #[serde(default = "RawMcp::default_protocol_action")]
    pub protocol_action: String,
    #[serde(default)]
    pub methods: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, String>,
    /// Default: `policy.enforcement`.
    pub enforcement: Option<Enforcement>,
}

impl RawMcp {
    fn default_resource_type() -> String {
        "McpServer".into()
    }
    fn default_tool_action() -> String {
        "{tool}".into()
    }
    fn default_protocol_action() -> String {
        "mcp_protocol".into()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub listen: String,
    pub shutdown_grace_seconds: u64,
    pub log: String,
    pub log_format: LogFormat,
    pub metrics_listen: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPolicy {
    pub dir: PathBuf,
    pub watch: bool,
    pub enforcement: Enforcement,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            dir: "policies".into(),
            watch: true,
            enforcement: Enforcement::Enforce,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdentity {
    pub jwt_metadata_key: String,
    pub principal_claim: String,
    pub groups_claim: String,
    pub on_behalf_of_claim: String,
    pub user_type: String,
    pub group_type: String,
    pub workload_type: String,
    pub anonymous: String,
    pub trusted_header: Option<RawTrustedHeader>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        Self {
            jwt_metadata_key: "jwt_payload".into(),
            principal_claim: "sub".into(),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrustedHeader {
    pub name: String,
    pub entity_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRequest {
    pub headers: Vec<String>,
    pub query: Vec<String>,
    pub max_body_bytes: usize,
    pub body_content_types: Vec<String>,
}

impl Default for RawRequest {
    fn default() -> Self {
        Self {
            headers: vec![],
            query: vec![],
            max_body_bytes: 64 * 1024,
            body_content_types: vec!["application/json".into()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawResponse {
    pub principal_header: String,
}

impl Default for RawResponse {
    fn default() -> Self {
        Self {
            principal_header: "x-countersign-principal".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDefaultRoute {
    pub action: String,
    pub resource_type: String,
    /// Default: `policy.enforcement`.
    pub enforcement: Option<Enforcement>,
}

impl Default for RawDefaultRoute {
    fn default() -> Self {
        Self {
            action: "http_request".into(),
            resource_type: "Path".into(),
            enforcement: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub method: Option<String>,
    pub path: String,
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub body: bool,
    /// Default: `policy.enforcement`.
    pub enforcement: Option<Enforcement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRedis {
    pub url: String,
    pub cluster: bool,
    /// Default: 1 on a cluster, 0 on one node.
    pub replica_acks: Option<u32>,
    pub prefix: String,
    pub timeout_ms: u64,
    pub retention: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApprovals {
    pub token_header: String,
    pub hold_max: String,
    pub store_budget: String,
    pub max_pending_per_principal: u32,
    pub webhooks: Vec<super::notifications::RawWebhook>,
}

impl Default for RawApprovals {
    fn default() -> Self {
        Self {
            token_header: "x-countersign-approval".into(),
            hold_max: "25s".into(),
            store_budget: "400ms".into(),
            max_pending_per_principal: crate::approval::store::DEFAULT_MAX_PENDING_PER_PRINCIPAL,
            webhooks: vec![],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub approvers: Vec<RawApprover>,
    pub oidc: Option<super::oidc::RawOidc>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9192".into(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            approvers: vec![],
            oidc: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprover {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub token_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAudit {
    pub max_entries: u64,
    pub max_age: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_age: "90d".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuthzen {
    pub listen: String,
    pub public_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub clients: Vec<RawAuthzenClient>,
    pub types: std::collections::BTreeMap<String, String>,
    pub explain: super::authzen::Explain,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub binding_key_file: Option<PathBuf>,
    pub binding_window: String,
}

impl Default for RawAuthzen {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9194".into(),
            public_url: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            clients: vec![],
            types: Default::default(),
            explain: super::authzen::Explain::Policies,
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            binding_key_file: None,
            binding_window: "10m".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthzenClient {
    pub name: String,
    pub token_sha256: String,
}
