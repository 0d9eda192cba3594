//! The fuzzing harness: CheckRequest bytes -> the real ext_authz service
//! (embedded default configuration, the example policies in `policies/`) ->
//! CheckResponse, and the invariants every answer must keep.
//!
//! The approval store points at a Unix socket that does not exist, under a
//! paused clock: a call on a guarded action (`export`, `grant_role`) reaches
//! the store, finds it down at once and is answered 503, with no network I/O
//! and no wall time spent in timeouts or retries. So the whole decision path
//! is fuzzed (CheckRequest translation, mapping, Cedar evaluation, the
//! approval path up to the store, response building), not a slice of it.

#[allow(unused_imports)]
use countersign::approval::ApprovalStore;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use countersign::approval::{Lifecycle, MemoryStore};
use countersign::approval::approvers::Approvers;
use countersign::audit::EventSink;
use countersign::gate::{Gate, GateSettings};
use countersign::authz::{AuthzService, AuthzSettings, JWT_NAMESPACE};
use countersign::config::Config;
use countersign::policy::PolicyStore;
use countersign::request::{HttpRequest, MappedRequest, Mapper};
use envoy_types::ext_authz::v3::pb::{
    Address, CheckRequest, CheckResponse, HeaderAppendAction, HttpResponse,
};
use prost::Message;
use serde_json::Value;

pub mod seeds;

/// Planted in credentials and in a header no policy may read: no answer
/// may ever carry it.
pub const CANARY: &str = "c4n4ry-53cr3t";

struct Harness {
    runtime: tokio::runtime::Runtime,
    service: AuthzService,
    mapper: Arc<Mapper>,
    settings: AuthzSettings,
    store: Arc<MemoryStore>,
    policies: Arc<PolicyStore>,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let config = Config::load(None, &HashMap::new()).expect("the embedded configuration loads");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let probes = config.mapper.probes().expect("probes");
    let policies = PolicyStore::open(&dir, probes).expect("the example policies load");
    let settings = AuthzSettings::from_config(&config);
    // The memory store: approvals open and holds wait (on a paused clock),
    // so the approval path is fuzzed too.
    let store = Arc::new(MemoryStore::new());
    let gate_settings = GateSettings::from_config(&config);
    let policies = Arc::new(policies);
    let approvers = Approvers::from_config(policies.clone(), &config);
    let mapper = Arc::new(config.mapper);
    let approvals = Lifecycle::new(store.clone(), EventSink::default(), approvers);
    let gate = Gate::new(policies.clone(), approvals, gate_settings);
    let service = AuthzService::new(mapper.clone(), gate, settings.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    Harness {
        runtime,
        service,
        mapper,
        settings,
        store,
        policies,
    }
});

/// Decodes `data` as a CheckRequest, decides it, and panics if the answer
/// breaks an invariant. Bytes that are not a CheckRequest are skipped: gRPC
/// refuses them before the service sees them.
pub fn check(data: &[u8]) {
    let Ok(mut req) = CheckRequest::decode(data) else {
        return;
    };
    // Only when the input does not already hold it (libFuzzer can learn it
    // from comparisons), so that a match means a leak.
    let planted = !data.windows(CANARY.len()).any(|w| w == CANARY.as_bytes());
    if planted {
        plant(&mut req);
    }
    let h = &*HARNESS;
    let (resp, audited) = h.runtime.block_on(async {
        let mut cursor = h.store.audit_end().await.expect("memory store");
        let resp = h.service.decide(&req).await;
        let audited = h.store.audit_range(&mut cursor, "+", 10).await.expect("memory store");
        (resp, audited.iter().any(|e| e.fields.iter().any(|(k, v)| k == "decision" && v == "allow")))
    });
    verify(h, &req, &resp, planted, audited);
}

fn plant(req: &mut CheckRequest) {
    let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    else {
        return;
    };
    for name in ["authorization", "cookie", "proxy-authorization"] {
        http.headers.insert(name.into(), format!("Bearer {CANARY}"));
    }
    http.headers.insert("x-not-listed".into(), CANARY.into());
}

/// The decided answer, by rpc code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Allow = 0,
    BadRequest = 3,
    Deny = 7,
    Unavailable = 14,
}

/// Panics unless `resp` is a well-formed answer to `req` that keeps every
/// invariant; returns which answer it is.
fn verify(
    h: &Harness,
    req: &CheckRequest,
    resp: &CheckResponse,
    planted: bool,
    audited_allow: bool,
) -> Answer {
    let status = resp.status.as_ref().expect("every answer has a status");
    let answer = match status.code {
        0 => Answer::Allow,
        3 => Answer::BadRequest,
        7 => Answer::Deny,
        14 => Answer::Unavailable,
        other => panic!("unexpected rpc code {other}"),
    };
    let mut texts = vec![status.message.as_str()];
    match (&resp.http_response, answer) {
        (Some(HttpResponse::OkResponse(ok)), Answer::Allow) => {
            for h in &ok.headers {
                texts.extend(h.header.as_ref().map(|h| h.value.as_str()));
            }
        }
        (Some(HttpResponse::DeniedResponse(denied)), _)
            if answer != Answer::Allow && mcp_reply(h, req, denied, answer, &status.message) =>
        {
            texts.push(&denied.body);
        }
        (Some(HttpResponse::DeniedResponse(denied)), _) if answer != Answer::Allow => {
            let http_status = denied.status.as_ref().map_or(0, |s| s.code);
            let want = match answer {
                Answer::BadRequest => 400,
                Answer::Deny => 403,
                _ => 503,
            };
            assert_eq!(http_status, want, "HTTP status of {answer:?}");
            let body: Value = serde_json::from_str(&denied.body).expect("a denial body is JSON");
            let decision = body["decision"].as_str().unwrap_or_default();
            if decision == "approval_required" {
                // Only a guarded action can ask for an approval, as a 403.
                assert_eq!(answer, Answer::Deny, "{body}");
                assert!(body["approval_id"].is_string(), "{body}");
            } else {
                assert_eq!(decision, "deny");
                assert_eq!(body["reason"].as_str(), Some(status.message.as_str()));
            }
            assert!(
                body["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(Value::is_string)),
                "policies: {body}"
            );
            texts.push(&denied.body);
            for h in &denied.headers {
                texts.extend(h.header.as_ref().map(|h| h.value.as_str()));
            }
        }
        (other, _) => panic!("{answer:?} with HTTP response {other:?}"),
    }
    if planted {
        for t in &texts {
            assert!(!t.contains(CANARY), "the answer leaks a credential: {t}");
        }
    }

    match expected(h, req) {
        Err(None) => assert_eq!(answer, Answer::BadRequest, "{}", status.message),
        Err(Some(reason)) => {
            assert_eq!(answer, Answer::BadRequest, "mapping failed: {reason}");
            assert_eq!(status.message, format!("bad request: {reason}"));
        }
        Ok(m) if answer == Answer::BadRequest => {
            // Mapped, then refused by the gate for what mapping alone
            // cannot judge.
            let message = status.message.strip_prefix("bad request: ");
            assert!(
                gate_refusals(h, &m).iter().any(|r| Some(r.as_str()) == message),
                "{}",
                status.message
            );
        }
        Ok(m) => {
            let action = m.action.id().unescaped().to_owned();
            let guarded = ["export", "grant_role", "export_dataset"].contains(&action.as_str());
            match answer {
                Answer::Allow => {
                    // `anonymous-denied` forbids anonymous callers all but
                    // `/healthz`.
                    if m.principal.type_name().to_string() == "Anonymous" {
                        assert_eq!(
                            m.resource.to_string(),
                            r#"Path::"/healthz""#,
                            "anonymous allowed"
                        );
                    }
                    // An allow on a guarded action must be in the audit
                    // trail first.
                    assert!(
                        !guarded || audited_allow,
                        "{action} allowed without an audit entry"
                    );
                    allow_headers(h, resp, &m);
                }
                // Only guarded actions may touch the approval store.
                Answer::Unavailable => assert!(guarded, "{action} answered 503"),
                _ => {}
            }
        }
    }
    answer
}

/// Whether `denied` answers a request to an MCP endpoint, which gets a
/// JSON-RPC message instead of the JSON denial (and then checks it): 400
/// with error -32600 for a request that is not one readable message; for a
/// message with an `id`, 200 with that id and a tool result marked
/// `isError` or a JSON-RPC error. A notification gets the usual denial.
fn mcp_reply(
    h: &Harness,
    req: &CheckRequest,
    denied: &envoy_types::ext_authz::v3::pb::DeniedHttpResponse,
    answer: Answer,
    message: &str,
) -> bool {
    let Some(http) = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        return false;
    };
    if !h.mapper.is_mcp(&http.path) {
        return false;
    }
    let id = match expected(h, req) {
        Ok(m) => match m.mcp.and_then(|c| c.id) {
            Some(id) => Some(id),
            None => return false,
        },
        Err(_) => None,
    };
    let body: Value = serde_json::from_str(&denied.body).expect("an MCP answer is JSON");
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    let http_status = denied.status.as_ref().map_or(0, |s| s.code);
    match id {
        None => {
            assert_eq!((answer, http_status), (Answer::BadRequest, 400), "{body}");
            assert_eq!(body["error"]["code"], -32600, "{body}");
            assert_eq!(body["id"], Value::Null);
            assert_eq!(body["error"]["data"]["reason"].as_str(), Some(message));
        }
        Some(id) => {
            assert_eq!(http_status, 200, "{answer:?}: {body}");
            assert_eq!(body["id"], id, "the id is echoed");
            let refused = body["result"]["isError"] == true
                || [-32001, -32602].contains(&body["error"]["code"].as_i64().unwrap_or(0));
            assert!(refused, "{body}");
        }
    }
    true
}

/// The upstream learns the principal (overwriting any client copy) and
/// never sees an approval token.
fn allow_headers(h: &Harness, resp: &CheckResponse, m: &MappedRequest) {
    let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
        unreachable!()
    };
    if let Some(name) = &h.settings.principal_header {
        let set = ok.headers.iter().any(|o| {
            o.header
                .as_ref()
                .is_some_and(|hv| hv.key == *name && hv.value == m.principal.to_string())
                && o.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        });
        assert!(set, "principal header not set: {ok:?}");
    }
    assert!(
        ok.headers_to_remove.contains(&h.settings.token_header),
        "{ok:?}"
    );
}

/// The mapping the service must have reached, worked out from the request
/// alone: `Err(None)` for a CheckRequest without the parts a decision needs,
/// `Err(Some(reason))` for one the mapper refuses.
fn expected(h: &Harness, req: &CheckRequest) -> Result<MappedRequest, Option<String>> {
    let attrs = req.attributes.as_ref().ok_or(None)?;
    let http = attrs
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or(None)?;
    if http.method.is_empty() {
        return Err(None);
    }
    let claims = attrs
        .metadata_context
        .as_ref()
        .and_then(|m| m.filter_metadata.get(JWT_NAMESPACE))
        .and_then(|ns| ns.fields.get(&h.settings.jwt_metadata_key))
        .map(countersign::authz::claims_object)
        .transpose()
        .map_err(|_| None)?;
    let source = attrs.source.as_ref();
    let source_address = source
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .map_or("", |a| match a {
            Address::SocketAddress(s) => s.address.as_str(),
            _ => "",
        });
    let body = if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        &http.raw_body
    };
    h.mapper
        .map(&HttpRequest {
            method: &http.method,
            path: &http.path,
            host: &http.host,
            scheme: &http.scheme,
            headers: &http.headers,
            body,
            source_address,
            source_principal: source.map_or("", |s| s.principal.as_str()),
            jwt_claims: claims.as_ref(),
            request_id: "",
            time: None,
        })
        .map_err(|e| Some(e.to_string()))
}

/// The 400s the gate may give a request that mapped: a body key that folds
/// like an attribute the schema declares, and a body it does not read as
/// JSON on a call that needs an approval.
fn gate_refusals(h: &Harness, m: &MappedRequest) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Err(e)) = m.body.as_ref().map(|b| h.policies.current().declared.check_body(b)) {
        out.push(e.to_string());
    }
    if let Some(e) = &m.unread_body {
        out.push(e.to_string());
    }
    out
}

/// Decides `data` (which must be a CheckRequest) like [`check`] and says
/// which answer it got; for the seed tests.
pub fn answer(data: &[u8]) -> Answer {
    let req = CheckRequest::decode(data).expect("a CheckRequest");
    let h = &*HARNESS;
    let resp = h.runtime.block_on(h.service.decide(&req));
    verify(h, &req, &resp, false, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/check_request")
    }

    /// Rewrites the committed seed corpus from [`seeds::all`]:
    /// `cargo test --manifest-path fuzz/Cargo.toml -- --ignored write_seed_corpus`
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let dir = corpus();
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for seed in seeds::all() {
            std::fs::write(dir.join(seed.name), &seed.bytes).unwrap();
        }
    }

    /// Each seed gets the answer it was written for, so that the corpus
    /// keeps reaching every path as policies and mapping change.
    #[test]
    fn seeds_get_the_answers_they_were_written_for() {
        for seed in seeds::all() {
            match seed.expect {
                Some(want) => assert_eq!(answer(&seed.bytes), want, "{}", seed.name),
                None => assert!(
                    CheckRequest::decode(&seed.bytes[..]).is_err(),
                    "{}",
                    seed.name
                ),
            }
        }
    }

    /// The committed corpus is what the seeds generate (compared decoded:
    /// maps encode in hash order), and keeps the invariants.
    #[test]
    fn the_committed_corpus_is_the_seeds() {
        let seeds = seeds::all();
        for seed in &seeds {
            let committed = std::fs::read(corpus().join(seed.name)).unwrap_or_default();
            let same = match seed.expect {
                Some(_) => {
                    CheckRequest::decode(&committed[..]).ok()
                        == CheckRequest::decode(&seed.bytes[..]).ok()
                }
                None => committed == seed.bytes,
            };
            assert!(same, "{}: regenerate the corpus", seed.name);
            check(&committed);
        }
        assert_eq!(std::fs::read_dir(corpus()).unwrap().count(), seeds.len());
    }
}
