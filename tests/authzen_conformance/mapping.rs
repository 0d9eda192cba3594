use serde_json::{Value, json};

use super::*;

// ---- The mapping into Cedar ------------------------------------------------------------

#[tokio::test]
async fn stored_attributes_win_and_requests_fill_in_what_is_not_stored() {
    let pdp = certification();
    // record-2 is archived in entities.json: saying otherwise changes nothing.
    let unarchived =
        json!({"type": "record", "id": "record-2", "properties": {"status": "active"}});
    assert!(
        !pdp.decide(&ask(user("alice"), action("write"), unarchived))
            .await
    );
    // bob is an admin in entities.json, whatever the request says.
    let demoted = json!({"type": "user", "id": "bob", "properties": {"role": "viewer"}});
    assert!(
        pdp.decide(&ask(demoted, action("write"), archived_record_2()))
            .await
    );
    // carol is not in entities.json: her request's properties are her
    // attributes (rule 6: "a subject with role admin").
    let carol = json!({"type": "user", "id": "carol", "properties": {"role": "admin"}});
    assert!(
        pdp.decide(&ask(carol.clone(), action("write"), archived_record_2()))
            .await
    );
    let carol_plain = user("carol");
    assert!(
        !pdp.decide(&ask(carol_plain, action("write"), archived_record_2()))
            .await
    );
    // A record entities.json does not know, archived by the request alone.
    let record_9 =
        json!({"type": "record", "id": "record-9", "properties": {"status": "archived"}});
    assert!(
        pdp.decide(&ask(carol, action("write"), record_9.clone()))
            .await
    );
    assert!(
        !pdp.decide(&ask(user("alice"), action("write"), record_9))
            .await
    );
}

#[tokio::test]
async fn unknown_types_undeclared_actions_and_ill_typed_properties_are_400() {
    let pdp = certification();
    let cases = [
        // No such entity types in the schema.
        ask(
            json!({"type": "spaceship", "id": "x"}),
            action("read"),
            record("record-1"),
        ),
        ask(
            user("alice"),
            action("read"),
            json!({"type": "document", "id": "record-1"}),
        ),
        // No such action.
        ask(user("alice"), action("fly"), record("record-1")),
        // `read` does not apply to a `user` resource.
        ask(user("alice"), action("read"), user("bob")),
        // Declared attributes with the wrong type.
        ask(
            json!({"type": "user", "id": "alice", "properties": {"role": 7}}),
            action("read"),
            record("record-1"),
        ),
        ask(
            user("alice"),
            action("read"),
            json!({"type": "record", "id": "record-1", "properties": {"status": true}}),
        ),
        ask(
            user("alice"),
            json!({"name": "delete", "properties": {"soft": "yes"}}),
            record("record-1"),
        ),
        // `context.action` is reserved for `action.properties`: a soft
        // delete said only there is not read as one.
        json!({"subject": user("alice"), "action": action("delete"),
            "resource": record("record-1"), "context": {"action": {"soft": true}}}),
    ];
    for req in cases {
        pdp.evaluation(&req)
            .await
            .assert_refused(400, &req.to_string());
    }
}

/// A gateway reading the first of two same-named members would see
/// another request than the PDP: such bodies are refused whole, and so is
/// a malformed default that every item replaces.
#[tokio::test]
async fn duplicate_members_and_malformed_defaults_are_400() {
    let pdp = certification();
    let twice = r#"{"subject": {"type": "user", "id": "bob"}, "subject": {"type": "user", "id": "alice"},
        "action": {"name": "write"}, "resource": {"type": "record", "id": "record-1"}}"#;
    let in_properties = r#"{"subject": {"type": "user", "id": "bob", "properties": {"role": "admin", "role": "x"}},
        "action": {"name": "write"}, "resource": {"type": "record", "id": "record-1"}}"#;
    for body in [twice, in_properties] {
        pdp.send(pdp.post_json(pdp.url("/access/v1/evaluation")).body(body))
            .await
            .assert_refused(400, body);
    }
    let req = json!({"subject": "alice", "action": action("read"),
        "evaluations": [{"subject": user("alice"), "resource": record("record-1")}]});
    pdp.evaluations(&req)
        .await
        .assert_refused(400, &req.to_string());
}

#[tokio::test]
async fn batch_items_that_cannot_be_mapped_are_denied_alone() {
    let pdp = certification();
    let req = json!({
        "subject": user("alice"),
        "action": action("read"),
        "evaluations": [
            {"resource": record("record-1")},
            {"resource": {"type": "spaceship", "id": "x"}},
            {"action": action("fly"), "resource": record("record-1")},
            {"resource": record("record-2")},
        ],
    });
    assert_eq!(pdp.decide_all(&req).await, [true, false, false, true]);
}

// ---- The interop "Todo" scenario ---------------------------------------------------------

#[tokio::test]
async fn todo_interop_decisions_all_match() {
    let pdp = Pdp::start("authzen-todo", TODO_TOKEN, None);
    let file = repo().join("tests/authzen/todo-decisions-1_0-02.json");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let single = cases["evaluation"].as_array().unwrap();
    let batches = cases["evaluations"].as_array().unwrap();
    assert_eq!((single.len(), batches.len()), (40, 3));
    let mut mismatches = Vec::new();
    // As the interop's runner (interop/authzen-todo-backend/test/runner.ts)
    // judges: a single evaluation by its `decision`, a batch by its whole
    // `evaluations` array; and every answer must be a 200.
    for (i, case) in single.iter().enumerate() {
        let a = pdp.evaluation(&case["request"]).await;
        if a.status != 200 || a.body["decision"] != case["expected"] {
            mismatches.push(format!(
                "evaluation #{i}: {}\n  expected decision {}, got {} {}",
                case["request"], case["expected"], a.status, a.text
            ));
        }
    }
    for (i, case) in batches.iter().enumerate() {
        let a = pdp.evaluations(&case["request"]).await;
        if a.status != 200 || a.body["evaluations"] != case["expected"] {
            mismatches.push(format!(
                "evaluations #{i}: {}\n  expected {}, got {} {}",
                case["request"], case["expected"], a.status, a.text
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of 43 Todo cases do not match:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

// ---- AuthZEN clients from PyPI -----------------------------------------------------------

#[tokio::test]
async fn python_authzen_clients_get_the_answers_of_raw_calls() {
    let pdp = certification();
    let single: Vec<Value> = fixture_rules().into_iter().map(|(_, r, _)| r).collect();
    let batch = vec![
        json!({"subject": user("bob"), "resource": record("record-1"),
               "evaluations": [{"action": action("read")}, {"action": action("write")}]}),
        json!({"action": action("write"), "resource": archived_record_2(),
               "evaluations": [{"subject": user("alice")}, {"subject": admin_bob()}]}),
        json!({"subject": user("alice"), "action": action("write"),
               "resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}},
               "evaluations": [{}, {"resource": archived_record_2()}]}),
    ];
    let mut raw_single = Vec::new();
    for r in &single {
        raw_single.push(pdp.decide(r).await);
    }
    let mut raw_batch = Vec::new();
    for r in &batch {
        raw_batch.push(pdp.decide_all(r).await);
    }
    let want: Vec<bool> = fixture_rules().into_iter().map(|(_, _, d)| d).collect();
    assert_eq!(raw_single, want);
    let cases = json!({"base": pdp.base, "token": pdp.token, "single": single, "batch": batch});
    let answers = python_clients(&cases);
    assert_eq!(
        answers["apparitor"]["single"],
        json!(raw_single),
        "{answers}"
    );
    assert_eq!(answers["apparitor"]["batch"], json!(raw_batch), "{answers}");
    assert_eq!(answers["decern"]["single"], json!(raw_single), "{answers}");
    // An unknown token is an error to both, with the PDP's 401.
    assert_eq!(answers["apparitor"]["bad_token"], json!(401), "{answers}");
    assert_eq!(answers["decern"]["bad_token"], json!(401), "{answers}");
}

/// `tests/authzen/client_check.py` run with `.venv/bin/python` (where
/// scripts/test.sh installs the clients) on `cases`; its JSON answer.
fn python_clients(cases: &Value) -> Value {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "no .venv: run scripts/test.sh, or `python3 -m venv .venv && .venv/bin/pip install -r tests/authzen/requirements.txt`"
    );
    let script = repo().join("tests/authzen/client_check.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed (are tests/authzen/requirements.txt installed in .venv?):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
