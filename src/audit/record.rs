//! Capture mode (`serve --record FILE --record-rate R`): a sample of checks
//! written as redacted request descriptions, one JSON object per line, in
//! the format `countersign policy diff --requests` reads.
//!
//! Redacted means: the method, the host, the path with only the
//! allow-listed query parameters, the allow-listed headers (never
//! `authorization` or `cookie`), the identity claims (`sub`, the groups
//! claim, the on-behalf-of claim), the mTLS peer, and of the body only the
//! fields some guarded policy shows approvers (`@show`). Never a token, a
//! cookie, or body content no approver would see.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    policies: Arc<PolicyStore>,
    headers: Vec<String>,
    claims: [String; 3],
}

impl Recorder {
    /// Opens (appends to) `config.path` and starts the writer thread.
    pub fn open(
        config: &RecordConfig,
        policies: Arc<PolicyStore>,
        mapper: &Mapper,
    ) -> Result<Self, RecordError> {
        if !(config.rate > 0.0 && config.rate <= 1.0) {
            return Err(RecordError::Rate(config.rate));
        }
        let file = open(&config.path)?;
        let (lines, queue) = std::sync::mpsc::sync_channel::<String>(QUEUE);
        std::thread::spawn(move || {
            let mut out = std::io::LineWriter::new(file);
            for line in queue {
                if let Err(e) = writeln!(out, "{line}") {
                    tracing::warn!("record file not written, recording stops: {e}");
                    return;
                }
            }
        });
        let identity = &mapper.identity;
        Ok(Self {
            rate: config.rate,
            lines,
            policies,
            headers: mapper.context.headers.clone(),
            claims: [
                "sub".to_owned(),
                identity.groups_claim.clone(),
                identity.on_behalf_of_claim.clone(),
            ],
        })
    }

    /// Records the check with probability `rate`. Takes no lock and does
    /// no I/O on the check's path: the line goes to the writer thread.
    pub fn offer(&self, req: &HttpRequest<'_>, mapped: &MappedRequest) {
        if rand::random::<f64>() >= self.rate {
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

    /// The body with only the fields some guarded policy shows; an MCP
    /// message as its method and tool with the shown arguments.
    fn body(&self, mapped: &MappedRequest) -> Option<Value> {
        let shown = mapped.body.as_ref().map(|b| {
            let loaded = self.policies.current();
            let names: std::collections::BTreeSet<&str> = loaded
                .guards
                .values()
                .flat_map(|g| g.show.iter().map(String::as_str))
                .collect();
            shown_only(b, &names)
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

/// The members of `body` that `names` name (`a` or `a.b` for a member of
/// an object member), at their place.
fn shown_only(
    body: &Map<String, Value>,
    names: &std::collections::BTreeSet<&str>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for name in names {
        let mut parts = name.trim_start_matches("arguments.").split('.');
        let Some(first) = parts.next() else { continue };
        let rest: Vec<&str> = parts.collect();
        let Some(v) = body.get(first) else { continue };
        if rest.is_empty() {
            out.insert(first.to_owned(), v.clone());
            continue;
        }
        // A member deeper in: copy only it, with the objects around it.
        let mut value = v;
        let mut found = true;
        for p in &rest {
            match value.get(p) {
                Some(inner) => value = inner,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut slot = out
            .entry(first.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        for p in &rest[..rest.len() - 1] {
            let Value::Object(m) = slot else { break };
            slot = m
                .entry((*p).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if let (Value::Object(m), Some(last)) = (slot, rest.last()) {
            m.insert((*last).to_owned(), value.clone());
        }
    }
    out
}

/// Appends; a new file is readable by its owner only (it names callers).
fn open(path: &Path) -> Result<std::fs::File, RecordError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|source| RecordError::Open {
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
        source,
    })
}
