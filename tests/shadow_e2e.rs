//! Shadow mode end to end: real Envoy (envoy/envoy.yaml), the real binary
//! with routes in shadow mode, real Redis, spans over real OTLP/gRPC, the
//! approvers' CLI, and a policy taken out of shadow by a reload.

mod common;

use std::time::Duration;

use common::otlp::{Collector, Received};
use common::stack::stack_with;
use common::{edit_policy, eventually, policy_copy, token, token_with};
use serde_json::json;

const EXPORT: &str = "/v1/datasets/sales/export";
const BODY: &str = r#"{"format":"csv","rows":10}"#;

/// The export, audit-settings and default routes in shadow mode; the rest
/// of the embedded configuration enforced.
fn shadow_routes(config: String) -> String {
    let export = "action = \"export\"\nresource = 'Dataset::\"{id}\"'\nbody = true\n";
    let audit = "action = \"configure_audit\"\nresource = 'AuditLog::\"settings\"'\nbody = true\n";
    let default = "resource_type = \"Path\"\n";
    for part in [export, audit, default] {
        assert!(config.contains(part), "the example config changed: {part}");
    }
    config
        .replacen(export, &format!("{export}enforcement = \"shadow\"\n"), 1)
        .replacen(audit, &format!("{audit}enforcement = \"shadow\"\n"), 1)
        .replacen(default, &format!("{default}enforcement = \"shadow\"\n"), 1)
}

/// Turning audit logging off is refused in shadow mode too; a new forbid
/// on one dataset is tried out in shadow on an enforced route.
fn policies() -> tempfile::TempDir {
    let dir = policy_copy();
    edit_policy(dir.path(), "audit-logging.cedar", |text| {
        text.replace(
            "@id(\"audit-logging-stays-on\")",
            "@id(\"audit-logging-stays-on\")\n@enforce(\"always\")",
        )
    });
    edit_policy(dir.path(), "datasets.cedar", |text| {
        text + "\n@id(\"plans-are-secret\")\n@shadow\nforbid (principal, action == Action::\"read\", resource == Dataset::\"plans\");\n"
    });
    dir
}

fn check_span<'a>(spans: &'a [Received], path: &str) -> Option<&'a Received> {
    spans
        .iter()
        .find(|s| s.name() == "countersign.check" && s.attr("url.path").as_deref() == Some(path))
}

#[tokio::test]
async fn shadow_mode_through_envoy_lets_refusals_through_and_records_them() {
    let collector = Collector::start().await;
    let s = stack_with(policies(), Some(collector.port), &shadow_routes).await;
    assert!(s.sidecar.logged("SHADOW MODE").await, "{}", s.sidecar.log());
    assert!(s.sidecar.logged("policies in shadow").await);

    // The default route would refuse an anonymous caller: it gets through.
    assert_eq!(s.get("/v1/reports/weekly", None).await, 200);
    // Enforced routes still refuse.
    assert_eq!(s.get("/v1/datasets/sales", None).await, 403);

    // A guarded export reaches the upstream and opens a shadow request.
    let agent = token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}));
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Opened off the check's path: there in a moment.
    let listed = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let (code, out) = s.cli("dora", &["list"]);
        async move { code == 0 && out.contains("pending (shadow)") }
    })
    .await;
    assert!(listed, "{}", s.cli("dora", &["list"]).1);
    let (_, json) = s.cli("dora", &["list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["shadow"], true);
    let (_, shown) = s.cli("dora", &["show", &id]);
    assert!(
        shown.contains("shadow          yes: opened in shadow mode, for practice"),
        "{shown}"
    );

    // An always-enforced forbid refuses on a shadow route.
    let admin = token("root", &["admins"]);
    let off = s
        .view()
        .call(
            reqwest::Method::PUT,
            "/v1/audit/settings",
            &admin,
            Some(r#"{"enabled":false}"#),
            None,
        )
        .await;
    assert_eq!(off.status, 403);
    assert_eq!(off.body["policies"], json!(["audit-logging-stays-on"]));

    // A policy in shadow on an enforced route: recorded, not enforced...
    let alice = token("alice", &["analysts"]);
    assert_eq!(s.get("/v1/datasets/plans", Some(&alice)).await, 200);

    let metrics = format!("http://{}/metrics", s.sidecar.metrics_addr);
    let scrape = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    for line in [
        r#"countersign_checks_total{decision="allow",shadow="true"} 3"#,
        r#"countersign_checks_total{decision="deny",shadow="false"} 2"#,
        r#"countersign_shadow_decisions_total{decision="deny"} 2"#,
        r#"countersign_shadow_decisions_total{decision="approval_required"} 1"#,
    ] {
        assert!(scrape.contains(line), "{line}\n{scrape}");
    }

    let ok = eventually(Duration::from_secs(20), Duration::from_millis(200), || {
        let spans = collector.spans();
        async move {
            ["/v1/reports/weekly", EXPORT, "/v1/datasets/plans"]
                .iter()
                .all(|p| check_span(&spans, p).is_some())
        }
    })
    .await;
    assert!(ok, "check spans not received");
    let spans = collector.spans();
    let anonymous = check_span(&spans, "/v1/reports/weekly").unwrap();
    assert_eq!(
        anonymous.attr("countersign.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        anonymous.attr("countersign.shadow").as_deref(),
        Some("true")
    );
    assert_eq!(
        anonymous.attr("countersign.shadow.decision").as_deref(),
        Some("deny")
    );
    assert_eq!(
        anonymous.attr("countersign.shadow.policies").as_deref(),
        Some("anonymous-denied")
    );
    let export = check_span(&spans, EXPORT).unwrap();
    assert_eq!(
        export.attr("countersign.shadow.decision").as_deref(),
        Some("approval_required")
    );
    // The shadow request is no approval of the call.
    assert_eq!(export.attr("countersign.approval.id"), None);
    assert!(!id.is_empty());
    let plans = check_span(&spans, "/v1/datasets/plans").unwrap();
    assert_eq!(
        plans.attr("countersign.shadow.policies").as_deref(),
        Some("plans-are-secret")
    );

    // ...until the mark is dropped: enforced from the reload on.
    edit_policy(s.policies.path(), "datasets.cedar", |t| {
        t.replace("@shadow\n", "")
    });
    let enforced = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        let s = &s;
        let alice = &alice;
        async move { s.get("/v1/datasets/plans", Some(alice)).await == 403 }
    })
    .await;
    assert!(enforced, "{}", s.sidecar.log());
    assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await, 200);
}
