use serde_json::{Value, json};

use super::*;
use crate::basic::with_request_id;

// ---- C.5 Transport and C.6 Discovery, over HTTPS --------------------------------------

#[tokio::test]
async fn c_5_transport() {
    let tls = certification_tls();
    let pdp = &tls.pdp;
    assert!(pdp.base.starts_with("https://"));
    let permit = ask(user("alice"), action("read"), record("record-1"));
    // 1, 2: HTTPS with application/json in, 200 and application/json out
    // (a charset parameter is application/json too).
    assert!(pdp.decide(&permit).await);
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let a = pdp
            .send(
                pdp.http
                    .post(pdp.url("/access/v1/evaluation"))
                    .bearer_auth(pdp.token)
                    .header("content-type", ct)
                    .body(permit.to_string()),
            )
            .await;
        assert!(a.decision(&permit), "content-type {ct}");
    }
    let batch = json!({"subject": user("bob"), "resource": record("record-1"),
                       "evaluations": [{"action": action("read")}, {"action": action("write")}]});
    assert_eq!(pdp.decide_all(&batch).await, [true, false]);
    // 3: a missing required field is a 400.
    pdp.evaluation(&json!({"action": action("read"), "resource": record("record-1")}))
        .await
        .assert_refused(400, "missing subject over HTTPS");
    // 4: X-Request-ID echoed.
    let a = with_request_id(pdp, "/access/v1/evaluation", &permit, "c-5-4").await;
    assert_eq!(a.request_id.as_deref(), Some("c-5-4"), "{a:?}");
    // 5: unknown fields ignored.
    let mut unknown = permit.clone();
    unknown["extension"] = json!({"any": ["thing"]});
    unknown["subject"]["nickname"] = json!("al");
    assert!(pdp.decide(&unknown).await);
}

#[tokio::test]
async fn c_6_metadata() {
    let tls = certification_tls();
    let pdp = &tls.pdp;
    let a = pdp
        .send(
            pdp.http
                .get(pdp.url("/.well-known/authzen-configuration"))
                .bearer_auth(pdp.token),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.is_json(), "{a:?}");
    let m = &a.body;
    assert!(m.is_object(), "{a:?}");
    // §C.6.5: policy_decision_point is the base URL the metadata was
    // fetched from (no trailing slash, query or fragment).
    assert_eq!(m["policy_decision_point"], json!(pdp.base), "{m}");
    let https = |key: &str| {
        let url = m[key]
            .as_str()
            .unwrap_or_else(|| panic!("`{key}` is not a string: {m}"));
        assert!(url.starts_with("https://"), "`{key}` is not HTTPS: {m}");
        url.to_owned()
    };
    let evaluation = https("access_evaluation_endpoint");
    // Every advertised endpoint is where the API is.
    let permit = ask(user("alice"), action("read"), record("record-1"));
    let via = |url: String, body: Value| pdp.send(pdp.post_json(url).body(body.to_string()));
    assert!(via(evaluation, permit.clone()).await.decision(&permit));
    if m.get("access_evaluations_endpoint").is_some() {
        let batch = json!({"subject": user("bob"), "resource": record("record-1"),
                           "evaluations": [{"action": action("read")}, {"action": action("write")}]});
        let url = https("access_evaluations_endpoint");
        assert_eq!(
            via(url, batch.clone()).await.decisions(&batch),
            [true, false]
        );
    }
    for key in [
        "search_subject_endpoint",
        "search_resource_endpoint",
        "search_action_endpoint",
    ] {
        if m.get(key).is_some() {
            let url = https(key);
            let a = via(url, permit.clone()).await;
            assert_ne!(a.status, 404, "`{key}` is advertised but not served: {a:?}");
        }
    }
    if let Some(caps) = m.get("capabilities") {
        let all_strings = caps
            .as_array()
            .is_some_and(|c| c.iter().all(Value::is_string));
        assert!(all_strings, "capabilities is not an array of strings: {m}");
    }
    if let Some(jwt) = m.get("signed_metadata") {
        // A JWS in compact form whose claims carry `iss`.
        use base64::Engine;
        let parts: Vec<&str> = jwt.as_str().unwrap_or("").split('.').collect();
        assert_eq!(parts.len(), 3, "signed_metadata is not a JWT: {m}");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .unwrap_or_default();
        assert!(
            claims["iss"].is_string(),
            "signed_metadata has no `iss`: {claims}"
        );
    }
}
