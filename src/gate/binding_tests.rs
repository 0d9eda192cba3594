//! What an approval binds beyond the call itself, and what a retry is told:
//! on the memory store with the example policies.

use std::collections::HashMap;
use std::sync::Arc;

use super::Outcome;
use super::shadow_tests::policies;
use super::tests::{BODY, EXPORT, World, agent, approver, world, world_in};
use crate::approval::{MemoryStore, Ruling, Status};
use crate::config::Config;

/// The example policies in a directory of their own, and a gate on them.
fn editable() -> (tempfile::TempDir, World) {
    let dir = policies(|_, text| text);
    let config = Config::load(None, &HashMap::new()).unwrap();
    let w = world_in(config, dir.path(), Arc::new(MemoryStore::new()));
    (dir, w)
}

#[tokio::test]
async fn a_retry_with_the_token_of_a_denied_request_is_told_who_denied_it_and_why() {
    let w = world();
    let Outcome::ApprovalRequired {
        approval, token, ..
    } = w.decide_body("POST", EXPORT, agent(), None, BODY).await
    else {
        panic!("an agent's export needs an approval")
    };
    let dora = approver("dora", &["data-owners"]);
    let denied = w
        .approvals
        .rule(&dora, &approval.id, Ruling::Deny, "not this quarter")
        .await
        .unwrap();
    assert_eq!(denied.status, Status::Denied);

    let with_token = w
        .decide_body("POST", EXPORT, agent(), token.as_deref(), BODY)
        .await;
    let without = w.decide_body("POST", EXPORT, agent(), None, BODY).await;
    for outcome in [&with_token, &without] {
        assert!(
            matches!(outcome, Outcome::Deny { reason, .. }
                if reason.contains("denied by dora: not this quarter")),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn an_approval_is_not_used_once_the_guard_that_required_it_changed() {
    let (dir, w) = editable();
    let Outcome::ApprovalRequired {
        approval, token, ..
    } = w.decide_body("POST", EXPORT, agent(), None, BODY).await
    else {
        panic!("an agent's export needs an approval")
    };
    assert!(
        approval.info.rules.contains("quorum=1"),
        "{:?}",
        approval.info
    );
    let dora = approver("dora", &["data-owners"]);
    w.approvals
        .rule(&dora, &approval.id, Ruling::Approve, "quarterly report")
        .await
        .unwrap();

    // The guard is tightened after the approval: two approvers now.
    let file = dir.path().join("data-export.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    let tightened = text.replace("@show(", "@quorum(\"2\")\n@show(");
    assert_ne!(text, tightened);
    std::fs::write(&file, tightened).unwrap();
    w.policies.reload().unwrap();

    let used = w
        .decide_body("POST", EXPORT, agent(), token.as_deref(), BODY)
        .await;
    assert!(
        matches!(&used, Outcome::Deny { reason, .. }
            if reason.contains("granted under other rules") && reason.contains("now: policies=agent-exports-need-approval mode=deny approvers=data-owners quorum=2")),
        "{used:?}"
    );
    // The identical call asks again, under the new rules.
    let Outcome::ApprovalRequired {
        approval: again, ..
    } = w.decide_body("POST", EXPORT, agent(), None, BODY).await
    else {
        panic!("the call needs a new approval")
    };
    assert_ne!(again.id, approval.id);
    assert_eq!((again.status, again.info.quorum), (Status::Pending, 2));
}

#[tokio::test]
async fn a_call_carrying_what_an_approver_would_not_see_cannot_be_approved() {
    let (dir, w) = editable();
    let hidden_field = br#"{"format":"csv","rows":10,"destination":"s3://attacker"}"#;
    let hidden_query = format!("{EXPORT}?format=csv&destination=s3://attacker");
    for (path, body, named) in [
        (EXPORT, &hidden_field[..], "body field `destination`"),
        (hidden_query.as_str(), BODY, "query parameter `destination`"),
    ] {
        let got = w.decide_body("POST", path, agent(), None, body).await;
        assert!(
            matches!(&got, Outcome::Deny { reason, .. }
                if reason.contains("cannot be approved") && reason.contains(named)
                    && !reason.contains("s3://attacker")),
            "{path}: {got:?}"
        );
    }
    assert!(w.audit_events().await.iter().all(|e| e != "requested"));
    // Allow-listed query parameters and shown fields are what approvers see.
    let shown = format!("{EXPORT}?format=csv");
    let Outcome::ApprovalRequired { approval, .. } =
        w.decide_body("POST", &shown, agent(), None, BODY).await
    else {
        panic!("a call showing everything it carries can be approved")
    };
    assert_eq!(approval.info.parameters["format"], "csv");
    assert_eq!(approval.info.parameters["body.rows"], "10");

    // `@show("*")` shows every field and every query parameter.
    let file = dir.path().join("data-export.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(r#"@show("format, rows")"#, r#"@show("*")"#),
    )
    .unwrap();
    w.policies.reload().unwrap();
    let Outcome::ApprovalRequired { approval, .. } = w
        .decide_body(
            "POST",
            &format!("{hidden_query}&to=a&to=b"),
            agent(),
            None,
            hidden_field,
        )
        .await
    else {
        panic!("everything is shown, so the call can be approved")
    };
    let p = &approval.info.parameters;
    assert_eq!(p["body.destination"], "s3://attacker");
    assert_eq!(p["query.destination"], "s3://attacker");
    assert_eq!(p["query.to"], r#"["a","b"]"#, "every value, in order");
}

#[tokio::test]
async fn a_body_on_a_route_that_does_not_read_it_cannot_be_approved() {
    let w = world();
    let deployer = serde_json::json!({"sub": "dee", "groups": ["deployers"]});
    // Refused at once: a call without the body would be held for on-call.
    let got = w
        .decide_body(
            "DELETE",
            "/v1/deployments/web",
            deployer,
            None,
            br#"{"force":true}"#,
        )
        .await;
    assert!(
        matches!(&got, Outcome::Deny { reason, .. } if reason.contains("a body that this route does not read")),
        "{got:?}"
    );
    assert!(w.audit_events().await.iter().all(|e| e != "requested"));
}

#[test]
fn a_guard_on_a_route_that_does_not_read_its_body_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    let text = crate::config::EMBEDDED.replacen(
        "action = \"grant_role\"\nresource = 'Service::\"acme.iam.v1.Roles\"'\nbody = true\n",
        "action = \"grant_role\"\nresource = 'Service::\"acme.iam.v1.Roles\"'\n",
        1,
    );
    assert_ne!(text, crate::config::EMBEDDED);
    std::fs::write(&path, text).unwrap();
    let config = Config::load(Some(&path), &HashMap::new()).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let err = crate::policy::PolicyStore::open(&examples, config.mapper.probes().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policy `privilege-changes-need-approval`")
            && err.contains(
                "route `POST /acme.iam.v1.Roles/GrantRole` does not read the request body"
            ),
        "{err}"
    );
}

#[tokio::test]
async fn a_workload_cannot_approve_its_own_request_with_a_certificate_naming_it() {
    let w = world();
    let Outcome::ApprovalRequired { approval, .. } =
        w.decide_body("POST", EXPORT, agent(), None, BODY).await
    else {
        panic!("an agent's export needs an approval")
    };
    let mut asked = (*approval).clone();
    let spiffe = "spiffe://mesh/ns/agents/sa/exporter";
    asked.info.principal = format!(r#"Workload::"{spiffe}""#);
    asked.info.on_behalf_of = None;
    let config = Config::load(None, &HashMap::new()).unwrap();
    let rules = crate::approval::approvers::Approvers::from_config(w.policies.clone(), &config);
    let refused = rules.refusal(&approver(spiffe, &["data-owners"]), &asked);
    assert!(
        refused
            .as_deref()
            .is_some_and(|r| r.contains("asked for this call")),
        "{refused:?}"
    );
    assert_eq!(
        rules.refusal(&approver("dora", &["data-owners"]), &asked),
        None
    );
}
