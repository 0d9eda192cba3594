//! The AuthZEN Access Request profile end to end, on the real binary with
//! Redis and the admin API: a requestable denial, the access request it
//! binds, an approver's approval with the `countersign approvals` CLI, and
//! re-evaluation naming the approval: allowed once, refused on replay, for
//! another subject, resource or context, and after the approval expires.

mod common;

use std::time::Duration;

use common::tls::Pki;
use common::{Redis, Sidecar, approvals_cli, output_text, repo};
use serde_json::{Value, json};

const TOKEN: &str = "pep-token";

struct Pdp {
    _redis: Redis,
    _policies: tempfile::TempDir,
    pki: Pki,
    sidecar: Sidecar,
    http: reqwest::Client,
    base: String,
}

/// The example in examples/authzen-approvals, with approvals usable for
/// `approval_ttl`, on Redis and the admin API.
async fn start(approval_ttl: &str) -> Pdp {
    let redis = Redis::start().await;
    let pki = Pki::new();
    let policies = tempfile::tempdir().unwrap();
    let example = repo().join("examples/authzen-approvals");
    for f in ["schema.cedarschema", "policies.cedar"] {
        std::fs::copy(example.join(f), policies.path().join(f)).unwrap();
    }
    common::edit_policy(policies.path(), "policies.cedar", |t| {
        t.replace(
            "@approval(\"deny\")",
            &format!("@approval(\"deny\")\n@approval_ttl(\"{approval_ttl}\")"),
        )
    });
    let (cert, key) = pki.server();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN));
    let config = format!(
        r#"
[policy]
dir = "{dir}"
[identity]
user_type = "user"
group_type = "group"
[request]
headers = []
query = []
[default_route]
action = "http_request"
resource_type = "Path"
[redis]
url = "{redis}"
[admin]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
client_ca = "{ca}"
[[admin.approvers]]
name = "dora"
groups = ["data-owners"]
[[admin.approvers]]
name = "alice"
groups = ["data-owners"]
[authzen]
listen = "127.0.0.1:0"
[[authzen.clients]]
name = "gateway"
token_sha256 = "{hash}"
"#,
        dir = policies.path().display(),
        redis = redis.url(),
        cert = cert.display(),
        key = key.display(),
        ca = pki.ca().display(),
    );
    let path = pki.dir().join("countersign.toml");
    std::fs::write(&path, config).unwrap();
    let sidecar = Sidecar::start(
        policies.path(),
        &[("COUNTERSIGN_CONFIG", path.to_str().unwrap())],
    );
    let base = format!("http://{}", sidecar.authzen_addr.clone().expect("AuthZEN"));
    Pdp {
        _redis: redis,
        _policies: policies,
        pki,
        sidecar,
        http: reqwest::Client::new(),
        base,
    }
}

impl Pdp {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, url: &str) -> (u16, Value) {
        let r = self.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn evaluate(&self, body: &Value) -> Value {
        let (status, v) = self.post("/access/v1/evaluation", body).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// `countersign approvals approve ID` as `who`: (exit code, output).
    fn approve(&self, who: &str, id: &str) -> (i32, String) {
        let out = approvals_cli(
            &self.sidecar,
            &self.pki,
            who,
            &["approve", id, "--reason", "renewal review"],
        )
        .output()
        .unwrap();
        (out.status.code().unwrap_or(-1), output_text(&out))
    }
}

/// Alice's agent exports 100 rows of `sales` for ticket T-1.
fn export(subject: &str, dataset: &str, ticket: &str) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": "export", "properties": {"rows": 100, "destination": "s3://reports"}},
        "resource": {"type": "dataset", "id": dataset},
        // `time` is not declared: it binds nothing, so a later time matches.
        "context": {"ticket": ticket, "time": "2026-12-07T10:00:00Z"},
    })
}

fn with_approval(mut body: Value, approval: &Value) -> Value {
    body["context"]["approval"] = approval.clone();
    body["context"]["time"] = json!("2026-12-07T11:00:00Z");
    body
}

fn submission(body: &Value, evaluation_id: &str) -> Value {
    let mut s = body.clone();
    s["denial"] = json!({"evaluation_id": evaluation_id, "reason": "approval_required"});
    s
}

#[tokio::test]
async fn requestable_denial_access_request_approval_and_reevaluation() {
    let pdp = start("15m").await;
    let asked = export("alice", "sales", "T-1");

    // 1. A requestable denial: false, with what to submit and until when.
    let denial = pdp.evaluate(&asked).await;
    assert_eq!(denial["decision"], false, "{denial}");
    let ctx = &denial["context"];
    assert_eq!(ctx["reason"], "approval_required");
    assert_eq!(ctx["policies"], json!(["export-needs-a-data-owner"]));
    let evaluation_id = ctx["evaluation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        ctx["access_request"]["endpoint"],
        format!("{}/access/v1/requests", pdp.base)
    );
    assert!(ctx["access_request"]["expires_at"].is_string());
    // Nothing is opened by an evaluation.
    let (_, listed) = approvals_list(&pdp);
    assert!(!listed.contains("ap-"), "{listed}");

    // 2. Submissions bound to another call are refused.
    let mut other_rows = submission(&asked, &evaluation_id);
    other_rows["action"]["properties"]["rows"] = json!(100_000);
    let (status, v) = pdp.post("/access/v1/requests", &other_rows).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["type"],
        "urn:openid:authzen:access-request:error:invalid_denial_binding"
    );
    let (status, _) = pdp
        .post("/access/v1/requests", &submission(&asked, "ev_forged"))
        .await;
    assert_eq!(status, 400);

    // 3. The access request: a pending task; the same submission again
    // finds the same task.
    let mut justified = submission(&asked, &evaluation_id);
    justified["context"]["business_justification"] = json!("renewal review");
    let (status, task) = pdp.post("/access/v1/requests", &justified).await;
    assert_eq!(status, 202, "{task}");
    assert_eq!(task["task"]["status"], "pending");
    let id = task["task"]["id"].as_str().unwrap().to_owned();
    let status_url = task["task"]["status_endpoint"].as_str().unwrap().to_owned();
    assert_eq!(status_url, format!("{}/access/v1/requests/{id}", pdp.base));
    let (_, again) = pdp.post("/access/v1/requests", &justified).await;
    assert_eq!(again["task"]["id"], id.as_str());
    let (status, polled) = pdp.get(&status_url).await;
    assert_eq!(
        (status, &polled["task"]["status"]),
        (200, &json!("pending"))
    );
    assert!(polled.get("result").is_none());

    // The approver sees everything the approval binds.
    let (code, shown) = pdp_cli(&pdp, "dora", &["show", &id]);
    assert_eq!(code, 0, "{shown}");
    for part in [
        "rows",
        "100",
        "s3://reports",
        "ticket",
        "T-1",
        "user::\"alice\"",
    ] {
        assert!(shown.contains(part), "{part} not shown:\n{shown}");
    }

    // 4. Naming a pending approval: not yet, retry later.
    let pending = with_approval(asked.clone(), &json!({"id": id}));
    let v = pdp.evaluate(&pending).await;
    assert_eq!(
        (
            &v["decision"],
            &v["context"]["reason"],
            &v["context"]["next_action"]
        ),
        (&json!(false), &json!("approval_pending"), &json!("retry")),
        "{v}"
    );

    // 5. The subject cannot approve her own export; a data owner can.
    let (code, out) = pdp.approve("alice", &id);
    assert_ne!(code, 0, "alice approved her own request:\n{out}");
    let (code, out) = pdp.approve("dora", &id);
    assert_eq!(code, 0, "{out}");

    let (_, done) = pdp.get(&status_url).await;
    assert_eq!(done["task"]["status"], "approved", "{done}");
    assert_eq!(done["result"]["mode"], "reevaluate");
    let approval = done["result"]["approval"].clone();
    assert_eq!(approval["id"], id.as_str());
    assert!(approval["approved_until"].is_string() && approval["approved_at"].is_string());

    // 6. Out of scope: another subject, resource, or authorization-relevant
    // context gets no use of it, and may request its own.
    for (what, body) in [
        ("subject", export("bob", "sales", "T-1")),
        ("resource", export("alice", "payroll", "T-1")),
        ("context", export("alice", "sales", "T-2")),
    ] {
        let v = pdp.evaluate(&with_approval(body, &approval)).await;
        assert_eq!(v["decision"], false, "{what}: {v}");
        assert_eq!(v["context"]["reason"], "out_of_scope", "{what}: {v}");
        assert_eq!(v["context"]["next_action"], "request", "{what}: {v}");
        assert!(v["context"]["access_request"].is_object(), "{what}: {v}");
    }

    // 7. The approved call itself: allowed once, refused on replay.
    let v = pdp.evaluate(&with_approval(asked.clone(), &approval)).await;
    assert_eq!(v["decision"], true, "{v}");
    let v = pdp.evaluate(&with_approval(asked.clone(), &approval)).await;
    assert_eq!(v["decision"], false, "{v}");
    assert_eq!(v["context"]["reason"], "approval_expired", "{v}");
    // An unknown approval is unverifiable: nothing more to do with it.
    let v = pdp
        .evaluate(&with_approval(
            asked.clone(),
            &json!({"id": "ap-0000000000000000"}),
        ))
        .await;
    assert_eq!(
        (&v["context"]["reason"], &v["context"]["next_action"]),
        (&json!("approval_unverifiable"), &json!("none")),
        "{v}"
    );

    // 8. Every guarded evaluation is in the audit stream, as a check; the
    // use of the approval names it; the metrics count them as checks.
    let entries = audit_export(&pdp);
    let decisions: Vec<&str> = entries
        .iter()
        .filter(|e| e["event"] == "decision")
        .filter_map(|e| e["decision"].as_str())
        .collect();
    assert!(decisions.contains(&"approval_required"), "{entries:?}");
    assert!(decisions.contains(&"allow"), "{entries:?}");
    let used = entries
        .iter()
        .find(|e| e["event"] == "decision" && e["decision"] == "allow")
        .unwrap();
    assert_eq!(used["approval_id"], id.as_str(), "{used}");
    assert_eq!(used["principal"], "user::\"alice\"", "{used}");
    let text = format!("{entries:?}");
    assert!(
        !text.contains(TOKEN),
        "the PEP's token reached the audit stream"
    );
    let metrics = common::metrics_text(&pdp.sidecar).await;
    assert!(
        metrics.contains("countersign_checks_total{decision=\"allow\",shadow=\"false\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_approval_past_its_time_allows_nothing() {
    let pdp = start("2s").await;
    let asked = export("alice", "sales", "T-9");
    let denial = pdp.evaluate(&asked).await;
    let evaluation_id = denial["context"]["evaluation_id"].as_str().unwrap();
    let (_, task) = pdp
        .post("/access/v1/requests", &submission(&asked, evaluation_id))
        .await;
    let id = task["task"]["id"].as_str().unwrap().to_owned();
    let (code, out) = pdp.approve("dora", &id);
    assert_eq!(code, 0, "{out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = pdp
        .evaluate(&with_approval(asked, &json!({"id": id})))
        .await;
    assert_eq!(v["decision"], false, "{v}");
    assert_eq!(v["context"]["reason"], "approval_expired", "{v}");
}

fn audit_export(pdp: &Pdp) -> Vec<Value> {
    common::audit_export(&pdp.pki.dir().join("countersign.toml"))
}

fn approvals_list(pdp: &Pdp) -> (i32, String) {
    pdp_cli(pdp, "dora", &["list"])
}

fn pdp_cli(pdp: &Pdp, who: &str, args: &[&str]) -> (i32, String) {
    let out = approvals_cli(&pdp.sidecar, &pdp.pki, who, args)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), output_text(&out))
}
