//! Capture mode (`serve --record FILE --record-rate R`): a sample of checks
//! written as redacted request descriptions, one JSON object per line, in
//! the format `countersign policy diff --requests` reads.
//!
//! Redacted means: the method, the host, the path with only the
//! allow-listed query parameters, the allow-listed headers (never
//! `authorization`, `cookie` or the approval token's) and the trusted
//! identity header, the identity claims (`sub`, the groups claim, the
//! on-behalf-of claim), the mTLS peer, and of the body only the fields the
//! guards of the call's action show approvers (`@show`), plus for a tool
//! call the arguments its resource is named from. Never a token, a cookie,
//! or body content no approver would see.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use serde_json::{Map, Value, json};

use crate::policy::PolicyStore;
use crate::request::{HttpRequest, MappedRequest, Mapper};

/// Lines waiting for the writer; past this, samples are dropped rather
/// than slow a check.
const QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot open the record file `{path}`: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--record-rate must be above 0 and at most 1, got `{0}`")]
    Rate(f64),
    #[error("refusing to record into `{path}`: {why}")]
    Unsafe { path: PathBuf, why: String },
}

/// Where and how often to record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub path: PathBuf,
    /// The share of checks recorded, in (0, 1].
    pub rate: f64,
}

/// Samples checks into the record file. Cheap to share.
#[derive(Debug)]
pub struct Recorder {
    rate: f64,
    lines: SyncSender<String>,
    /// The writer gave up (the file cannot be written): stop sampling.
    stopped: Arc<AtomicBool>,
    policies: Arc<PolicyStore>,
    /// Allow-listed headers, less the approval token's; the trusted
    /// identity header, if configured.
    headers: Vec<String>,
    claims: [String; 3],
    /// Per tool: the arguments its resource is named from (the resource
    /// is shown to approvers, and the call cannot be decided without them).
    resource_arguments: HashMap<String, Vec<String>>,
}

impl Recorder {
    /// Opens (appends to) `config.path` and starts the writer thread.
    pub fn open(
        config: &RecordConfig,
        policies: Arc<PolicyStore>,
        mapper: &Mapper,
        token_header: &str,
    ) -> Result<Self, RecordError> {
        if !(config.rate > 0.0 && config.rate <= 1.0) {
            return Err(RecordError::Rate(config.rate));
        }
        let file = open(&config.path)?;
        let (lines, queue) = std::sync::mpsc::sync_channel::<String>(QUEUE);
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        std::thread::spawn(move || {
            let mut out = std::io::LineWriter::new(file);
            for line in queue {
                if let Err(e) = writeln!(out, "{line}") {
                    tracing::warn!("record file not written, recording stops: {e}");
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        let identity = &mapper.identity;
        let mut headers: Vec<String> = mapper
            .context
            .headers
            .iter()
            .filter(|h| !h.eq_ignore_ascii_case(token_header))
            .cloned()
            .collect();
        headers.extend(identity.trusted_header.as_ref().map(|(h, _)| h.clone()));
        let mut resource_arguments: HashMap<String, Vec<String>> = HashMap::new();
        for endpoint in &mapper.mcp {
            for (tool, template) in &endpoint.resources {
                resource_arguments
                    .entry(tool.clone())
                    .or_default()
                    .extend(template.arguments().map(str::to_owned));
            }
        }
        Ok(Self {
            rate: config.rate,
            lines,
            stopped,
            policies,
            headers,
            claims: [
                identity.principal_claim.clone(),
                identity.groups_claim.clone(),
                identity.on_behalf_of_claim.clone(),
            ],
            resource_arguments,
        })
    }

    /// Records the check with probability `rate`. Takes no lock and does
    /// no I/O on the check's path: the line goes to the writer thread.
    pub fn offer(&self, req: &HttpRequest<'_>, mapped: &MappedRequest) {
        if rand::random::<f64>() >= self.rate || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        // An MCP client's answer to the server is no call to decide again.
        if mapped.mcp.as_ref().is_some_and(|m| m.method == "response") {
            return;
        }
        let line = self.describe(req, mapped).to_string();
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line) {
            tracing::debug!("record queue full: sample dropped");
        }
    }

    /// The redacted description of one request.
    pub fn describe(&self, req: &HttpRequest<'_>, mapped: &MappedRequest) -> Value {
        let path = req.path.split_once('?').map_or(req.path, |p| p.0);
        let path = if mapped.query.is_empty() {
            path.to_owned()
        } else {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(mapped.query.iter())
                .finish();
            format!("{path}?{query}")
        };
        let mut out = Map::new();
        out.insert("method".into(), json!(req.method));
        out.insert("path".into(), json!(path));
        out.insert("host".into(), json!(req.host));
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .filter_map(|h| req.headers.get(h).map(|v| (h.clone(), json!(v))))
            .collect();
        if !headers.is_empty() {
            out.insert("headers".into(), Value::Object(headers));
        }
        if let Some(claims) = req.jwt_claims {
            let kept: Map<String, Value> = self
                .claims
                .iter()
                .filter_map(|c| claims.get(c).map(|v| (c.clone(), v.clone())))
                .collect();
            out.insert("claims".into(), Value::Object(kept));
        }
        if !req.source_principal.is_empty() {
            out.insert("peer".into(), json!(req.source_principal));
        }
        if let Some(body) = self.body(mapped) {
            out.insert("body".into(), body);
        }
        Value::Object(out)
    }

    /// The body with only the fields approvers of this action are shown
    /// (`@show` of the guards that can apply to it: top-level fields, or a
    /// tool's arguments), and for a tool call the arguments its resource
    /// is named from; an MCP message as its method and tool.
    fn body(&self, mapped: &MappedRequest) -> Option<Value> {
        let shown = mapped.body.as_ref().map(|body| {
            let loaded = self.policies.current();
            let mut names: BTreeSet<&str> = loaded
                .policies_for(&mapped.action)
                .policies()
                .filter_map(|p| loaded.guards.get(p.id().as_ref() as &str))
                .flat_map(|g| g.show.iter().map(String::as_str))
                .collect();
            let tool = mapped.mcp.as_ref().and_then(|m| m.tool.as_deref());
            if let Some(arguments) = tool.and_then(|t| self.resource_arguments.get(t)) {
                names.extend(arguments.iter().map(String::as_str));
            }
            // Literal top-level keys, as approvers are shown them.
            names
                .into_iter()
                .filter_map(|n| body.get(n).map(|v| (n.to_owned(), v.clone())))
                .collect::<Map<String, Value>>()
        });
        match &mapped.mcp {
            Some(call) => {
                let mut params = Map::new();
                if let Some(tool) = &call.tool {
                    params.insert("name".into(), json!(tool));
                    params.insert("arguments".into(), Value::Object(shown.unwrap_or_default()));
                }
                Some(json!({"jsonrpc": "2.0", "id": 1, "method": call.method, "params": params}))
            }
            None => shown.map(Value::Object),
        }
    }
}

/// Appends; a new file is readable by its owner only (it names callers).
/// A symbolic link, or a file others may read, is refused.
fn open(path: &Path) -> Result<std::fs::File, RecordError> {
    let refuse = |why: &str| RecordError::Unsafe {
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
        why: why.to_owned(),
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return Err(refuse("it is a symbolic link; give the file itself"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(refuse(
                    "others may read it; `chmod 600` it, or give a new file",
                ));
            }
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|source| RecordError::Open {
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
        source,
    })
}
