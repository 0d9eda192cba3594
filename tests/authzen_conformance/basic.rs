use serde_json::{Value, json};

use super::*;

// ---- C.2 Basic: Access Evaluation ------------------------------------------------

#[tokio::test]
async fn c_2_2_1_fixture_permit() {
    let pdp = certification();
    let req = ask(user("alice"), action("read"), record("record-1"));
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_2_fixture_deny() {
    let pdp = certification();
    let req = ask(user("bob"), action("write"), record("record-1"));
    assert!(!pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_3_optional_context() {
    let pdp = certification();
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["context"] = json!({"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"});
    assert!(pdp.decide(&req).await);
    // The fixture's decisions hold with a context too (§C.1.6).
    for (rule, mut req, want) in fixture_rules() {
        req["context"] = json!({"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"});
        assert_eq!(pdp.decide(&req).await, want, "{rule} with a context");
    }
}

#[tokio::test]
async fn c_2_2_4_deny_on_resource_properties() {
    let pdp = certification();
    let req = ask(user("alice"), action("write"), archived_record_2());
    assert!(!pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_5_permit_on_subject_properties() {
    let pdp = certification();
    let req = ask(admin_bob(), action("write"), archived_record_2());
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_6_permit_on_action_properties() {
    let pdp = certification();
    let req = ask(user("alice"), delete(true), record("record-1"));
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_7_deny_on_action_properties() {
    let pdp = certification();
    let req = ask(user("alice"), delete(false), record("record-1"));
    assert!(!pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_8_additional_properties() {
    let pdp = certification();
    let req = json!({
        "subject": {"type": "user", "id": "alice",
                    "properties": {"department": "Sales", "role": "manager"}},
        "action": {"name": "read", "properties": {"method": "GET"}},
        "resource": {"type": "record", "id": "record-1",
                     "properties": {"status": "active", "owner": "bob"}},
    });
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_2_9_unknown_fields() {
    let pdp = certification();
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["foo"] = json!("bar");
    req["futureField"] = json!({"nested": true});
    assert!(pdp.decide(&req).await);
}

#[tokio::test]
async fn c_2_3_1_decision_is_a_boolean() {
    let pdp = certification();
    for (rule, req, want) in fixture_rules() {
        assert_eq!(pdp.decide(&req).await, want, "{rule}");
    }
}

#[tokio::test]
async fn c_2_3_2_response_context_is_an_object() {
    let pdp = certification();
    // A permit and a deny; `decide` checks any `context` is an object.
    assert!(
        pdp.decide(&ask(user("alice"), action("read"), record("record-1")))
            .await
    );
    assert!(
        !pdp.decide(&ask(user("bob"), action("write"), record("record-1")))
            .await
    );
}

#[tokio::test]
async fn c_2_4_1_missing_required_fields() {
    let pdp = certification();
    let full = ask(user("alice"), action("read"), record("record-1"));
    for field in ["subject", "action", "resource"] {
        let mut req = full.clone();
        req.as_object_mut().unwrap().remove(field);
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &format!("missing `{field}`: {req}"));
    }
}

#[tokio::test]
async fn c_2_4_2_missing_required_sub_fields() {
    let pdp = certification();
    let cases = [
        ask(json!({"id": "alice"}), action("read"), record("record-1")),
        ask(json!({"type": "user"}), action("read"), record("record-1")),
        ask(user("alice"), json!({}), record("record-1")),
        ask(user("alice"), action("read"), json!({"id": "record-1"})),
        ask(user("alice"), action("read"), json!({"type": "record"})),
    ];
    for req in cases {
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &req.to_string());
    }
}

#[tokio::test]
async fn c_2_4_3_invalid_content_type() {
    let pdp = certification();
    let body = ask(user("alice"), action("read"), record("record-1")).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        None,
    ] {
        let mut req = pdp
            .http
            .post(pdp.url("/access/v1/evaluation"))
            .bearer_auth(pdp.token)
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        pdp.send(req)
            .await
            .assert_refused(400, &format!("content-type {content_type:?}"));
    }
}

#[tokio::test]
async fn c_2_4_4_malformed_json() {
    let pdp = certification();
    for body in [
        r#"{"subject": {"type": "user", "id": "alice"}"#,
        "not json",
        r#"{"subject": {"type": "user", "id": "alice"},}"#,
        r#"{"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, "resource": {"type": "record", "id": "record-1"}} trailing"#,
        // The top level must be an object.
        r#"[{"subject": {"type": "user", "id": "alice"}}]"#,
    ] {
        let req = pdp.post_json(pdp.url("/access/v1/evaluation")).body(body);
        pdp.send(req).await.assert_refused(400, body);
    }
}

#[tokio::test]
async fn c_2_4_5_empty_request_body() {
    let pdp = certification();
    for path in ["/access/v1/evaluation", "/access/v1/evaluations"] {
        let req = pdp.post_json(pdp.url(path));
        pdp.send(req)
            .await
            .assert_refused(400, &format!("empty body to {path}"));
    }
}

#[tokio::test]
async fn c_2_4_6_invalid_field_types() {
    let pdp = certification();
    let cases = [
        ask(json!("alice"), action("read"), record("record-1")),
        ask(user("alice"), json!({"name": 123}), record("record-1")),
        ask(
            json!({"type": "user", "id": 7}),
            action("read"),
            record("record-1"),
        ),
        ask(
            user("alice"),
            action("read"),
            json!({"type": ["record"], "id": "record-1"}),
        ),
        ask(user("alice"), json!("read"), record("record-1")),
        ask(
            json!({"type": "user", "id": "alice", "properties": "admin"}),
            action("read"),
            record("record-1"),
        ),
    ];
    for req in cases {
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &req.to_string());
    }
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["context"] = json!(["not", "an", "object"]);
    pdp.evaluation(&req)
        .await
        .assert_refused(400, &req.to_string());
}

/// `POST path` with `body` and the header `X-Request-ID: id`.
pub(crate) async fn with_request_id(pdp: &Pdp, path: &str, body: &Value, id: &str) -> Answer {
    let req = pdp.post_json(pdp.url(path)).header("x-request-id", id);
    pdp.send(req.body(body.to_string())).await
}

#[tokio::test]
async fn c_2_5_1_x_request_id_echo() {
    let pdp = certification();
    let single = ask(user("alice"), action("read"), record("record-1"));
    let batch = json!({"subject": user("bob"), "resource": record("record-1"),
                       "evaluations": [{"action": action("read")}, {"action": action("write")}]});
    let bad = json!({"action": action("read")});
    for (i, (path, body, status)) in [
        ("/access/v1/evaluation", &single, 200),
        ("/access/v1/evaluations", &batch, 200),
        ("/access/v1/evaluation", &bad, 400),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bfe9eb29-ab87-4ca3-be83-d1d5d830571{i}");
        let a = with_request_id(&pdp, path, body, &id).await;
        assert_eq!(a.status, status, "{path} {body}\n-> {a:?}");
        assert_eq!(a.request_id.as_deref(), Some(id.as_str()), "{path}: {a:?}");
    }
}

#[tokio::test]
async fn c_2_5_2_x_request_id_absent() {
    let pdp = certification();
    let req = ask(user("alice"), action("read"), record("record-1"));
    // `post` sends no X-Request-ID; the PDP may make one up.
    let a = pdp.evaluation(&req).await;
    assert!(a.decision(&req));
    if let Some(id) = &a.request_id {
        assert!(!id.is_empty(), "{a:?}");
    }
}

#[tokio::test]
async fn c_2_6_idempotency() {
    let pdp = certification();
    for (rule, req, want) in fixture_rules() {
        for i in 0..5 {
            assert_eq!(
                pdp.decide(&req).await,
                want,
                "{rule}, asked {} times",
                i + 1
            );
        }
    }
}
