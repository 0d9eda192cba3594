use serde_json::{Value, json};

use super::*;

// ---- C.3 Batch: Access Evaluations -------------------------------------------------

#[tokio::test]
async fn c_3_2_1_batch_with_evaluations_array() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "evaluations": [{"resource": record("record-1")}, {"resource": record("record-2")}],
    });
    let got = pdp.decide_all(&req).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0], "alice reads record-1 (rule 1)");
}

#[tokio::test]
async fn c_3_2_2_batch_fixture_decisions() {
    let pdp = certification();
    let req = json!({
        "subject": user("bob"),
        "resource": record("record-1"),
        "evaluations": [{"action": action("read")}, {"action": action("write")}],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_2_3_batch_resource_properties() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("write"),
        "evaluations": [
            {"resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}}},
            {"resource": archived_record_2()},
        ],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_2_4_batch_subject_properties() {
    let pdp = certification();
    let req = json!({
        "action": action("write"),
        "resource": archived_record_2(),
        "evaluations": [{"subject": user("alice")}, {"subject": admin_bob()}],
    });
    assert_eq!(pdp.decide_all(&req).await, [false, true]);
}

#[tokio::test]
async fn c_3_2_5_batch_without_defaults() {
    let pdp = certification();
    let req = json!({
        "evaluations": [
            ask(user("alice"), action("read"), record("record-1")),
            ask(user("bob"), action("write"), record("record-1")),
        ],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_2_6_batch_context_inheritance() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "context": {"time": "2025-06-27T18:03-07:00"},
        "evaluations": [
            {"resource": record("record-1")},
            {"resource": record("record-2"),
             "context": {"time": "2025-06-27T19:00-07:00", "source": "batch-override"}},
        ],
    });
    assert_eq!(pdp.decide_all(&req).await.len(), 2);
}

#[tokio::test]
async fn c_3_2_7_batch_top_level_defaults() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("write"),
        "resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}},
        "evaluations": [{}, {"resource": archived_record_2()}],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_3_batch_response_format() {
    let pdp = certification();
    // §C.3.3.1-3: as many answers as items, in their order, each a decision:
    // all eight fixture rules in one batch, then in reverse.
    let rules = fixture_rules();
    let mut items: Vec<Value> = rules.iter().map(|(_, r, _)| r.clone()).collect();
    let mut want: Vec<bool> = rules.iter().map(|(_, _, d)| *d).collect();
    for _ in 0..2 {
        let req = json!({"evaluations": items});
        let a = pdp.evaluations(&req).await;
        assert_eq!(a.decisions(&req), want);
        // §C.3.3.4: a top-level decision SHOULD be omitted; a PEP ignores it.
        if let Some(d) = a.body.get("decision") {
            assert!(d.is_boolean(), "{a:?}");
        }
        items.reverse();
        want.reverse();
    }
}

#[tokio::test]
async fn c_3_4_1_item_errors_under_execute_all() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [{"resource": record("record-1")}, {}],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false]);
}

#[tokio::test]
async fn c_3_4_2_missing_evaluations_array() {
    let pdp = certification();
    let req = ask(user("alice"), action("read"), record("record-1"));
    let a = pdp.evaluations(&req).await;
    assert!(a.decision(&req));
}

#[tokio::test]
async fn c_3_4_3_empty_evaluations_array() {
    let pdp = certification();
    let mut req = ask(user("alice"), action("read"), record("record-1"));
    req["evaluations"] = json!([]);
    let a = pdp.evaluations(&req).await;
    assert!(a.decision(&req));
}

// ---- Batch semantics -------------------------------------------------------------------

#[tokio::test]
async fn batch_short_circuit_semantics_stop_at_the_first_deciding_answer() {
    let pdp = certification();
    // bob: read (permit), write (deny), read (permit), write (deny).
    let batch = |semantic: &str| {
        json!({"subject": user("bob"), "resource": record("record-1"),
               "options": {"evaluations_semantic": semantic},
               "evaluations": [{"action": action("read")}, {"action": action("write")},
                               {"action": action("read")}, {"action": action("write")}]})
    };
    assert_eq!(
        pdp.decide_all(&batch("execute_all")).await,
        [true, false, true, false]
    );
    assert_eq!(
        pdp.decide_all(&batch("deny_on_first_deny")).await,
        [true, false]
    );
    assert_eq!(
        pdp.decide_all(&batch("permit_on_first_permit")).await,
        [true]
    );
    // A failed item is a deny for deny_on_first_deny too.
    let failing = json!({"subject": user("alice"), "action": action("read"),
                         "options": {"evaluations_semantic": "deny_on_first_deny"},
                         "evaluations": [{}, {"resource": record("record-1")}]});
    assert_eq!(pdp.decide_all(&failing).await, [false]);
    // No such semantic.
    let req = batch("execute_some");
    pdp.evaluations(&req)
        .await
        .assert_refused(400, &req.to_string());
}
