use std::path::Path;
use std::str::FromStr;

use cedar_policy::{Context, EntityUid, EvalResult, Request};
use serde_json::json;

use super::*;
use crate::policy::{Outcome, PolicyError, PolicyStore, load::load_dir};

const SCHEMA: &str = r#"
entity Department { name: String };
entity Group in [Group] { name?: String };
entity User in [Group] { level?: Long, department?: Department, email?: String };
entity Doc { owner?: User } tags String;
entity Unrelated;
action read appliesTo { principal: [User], resource: [Doc], context: {} };
"#;

const POLICIES: &str = r#"
@id("staff-read") permit (principal in Group::"staff", action, resource);
@id("own-department")
permit (principal, action, resource)
when { resource has owner && resource.owner has department && principal has department
       && resource.owner.department == principal.department };
"#;

fn dir(files: &[(&str, serde_json::Value)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(d.path().join("p.cedar"), POLICIES).unwrap();
    for (name, data) in files {
        std::fs::write(d.path().join(name), data.to_string()).unwrap();
    }
    d
}

fn uid(s: &str) -> EntityUid {
    EntityUid::from_str(s).unwrap()
}

fn user(id: &str, parents: &[&str]) -> serde_json::Value {
    json!({
        "uid": {"type": "User", "id": id},
        "attrs": {},
        "parents": parents.iter().map(|g| json!({"type": "Group", "id": g})).collect::<Vec<_>>(),
    })
}

fn group(id: &str, parents: &[&str]) -> serde_json::Value {
    json!({
        "uid": {"type": "Group", "id": id},
        "attrs": {},
        "parents": parents.iter().map(|g| json!({"type": "Group", "id": g})).collect::<Vec<_>>(),
    })
}

fn directory(files: &[(&str, serde_json::Value)]) -> Directory {
    load_dir(dir(files).path(), &[]).unwrap().directory
}

/// The problems a directory's load reports, as `file: message`.
fn problems(files: &[(&str, serde_json::Value)]) -> Vec<String> {
    let d = dir(files);
    match load_dir(d.path(), &[]) {
        Err(PolicyError::Invalid(problems)) => problems
            .iter()
            .map(|p| {
                let name = p.file.strip_prefix(d.path()).unwrap_or(&p.file);
                format!("{}: {}", name.display(), p.message)
            })
            .collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

/// Decides `principal` reading `resource` with the JWT-like `carried`
/// principal merged with the directory, as the gate does.
fn decide(store: &PolicyStore, carried: Entity, resource: &str) -> Outcome {
    let req = Request::new(
        carried.uid(),
        uid(r#"Action::"read""#),
        uid(resource),
        Context::empty(),
        None,
    )
    .unwrap();
    let entities = Entities::from_entities([carried], None).unwrap();
    let merged = store.with_directory(&entities, &uid(resource)).unwrap();
    store
        .evaluate(&req, merged.as_ref().unwrap_or(&entities))
        .outcome
}

fn attr(entities: &Entities, who: &str, name: &str) -> Option<EvalResult> {
    entities.get(&uid(who))?.attr(name).map(Result::unwrap)
}

#[test]
fn membership_comes_from_the_data_transitively_and_across_files() {
    // The user is in `a` (one file); `a` is in `b`, `b` in `staff` (another).
    let mut named_b = group("b", &["staff"]);
    named_b["attrs"] = json!({"name": "B"});
    let d = dir(&[
        ("entities.json", json!([user("alice", &["a"])])),
        (
            "groups.entities.json",
            json!([group("a", &["b"]), named_b, group("staff", &[])]),
        ),
    ]);
    let store = PolicyStore::open(d.path(), vec![]).unwrap();
    let loaded = store.current();
    assert_eq!(loaded.directory.len(), 4);
    assert_eq!(loaded.directory.files().len(), 2);
    let alice = Entity::with_uid(uid(r#"User::"alice""#));
    assert_eq!(decide(&store, alice, r#"Doc::"d""#), Outcome::Allow);
    // Not in the data, no groups of its own: no permit applies.
    let bob = Entity::with_uid(uid(r#"User::"bob""#));
    assert_eq!(decide(&store, bob, r#"Doc::"d""#), Outcome::Deny);
    // A group the request carries (a JWT claim) reaches its stored ancestors.
    let carol = Entity::new_no_attrs(uid(r#"User::"carol""#), [uid(r#"Group::"b""#)].into());
    assert_eq!(decide(&store, carol, r#"Doc::"d""#), Outcome::Allow);

    // Copied: alice and the ancestor that has data (`b`, named); not the
    // bare ones, whose membership alice's ancestors already carry.
    let merged = merged(&loaded.directory, Entity::with_uid(uid(r#"User::"alice""#)));
    let mut copied: Vec<String> = merged.iter().map(|e| e.uid().to_string()).collect();
    copied.sort();
    assert_eq!(copied, [r#"Group::"b""#, r#"User::"alice""#]);
    for g in ["a", "b", "staff"] {
        let g = uid(&format!(r#"Group::"{g}""#));
        assert!(merged.is_ancestor_of(&g, &uid(r#"User::"alice""#)), "{g}");
    }
    assert_eq!(
        attr(&merged, r#"Group::"b""#, "name"),
        Some(EvalResult::String("B".into()))
    );
}

#[test]
fn an_entity_typed_attribute_reaches_its_entity_and_what_that_names() {
    let data = json!([
        {"uid": {"type": "Doc", "id": "plan"}, "attrs": {"owner": {"type": "User", "id": "bob"}}, "parents": []},
        {"uid": {"type": "User", "id": "bob"}, "attrs": {"department": {"type": "Department", "id": "sales"}}, "parents": []},
        {"uid": {"type": "Department", "id": "sales"}, "attrs": {"name": "Sales"}, "parents": []},
        {"uid": {"type": "Department", "id": "ops"}, "attrs": {"name": "Ops"}, "parents": []},
        {"uid": {"type": "Unrelated", "id": "x"}, "attrs": {}, "parents": []},
    ]);
    let d = dir(&[("entities.json", data)]);
    let store = PolicyStore::open(d.path(), vec![]).unwrap();
    let carried = |dept: &str| {
        let department =
            RestrictedExpression::new_entity_uid(uid(&format!(r#"Department::"{dept}""#)));
        Entity::new(
            uid(r#"User::"dana""#),
            [("department".to_owned(), department)].into(),
            Default::default(),
        )
        .unwrap()
    };
    assert_eq!(
        decide(&store, carried("sales"), r#"Doc::"plan""#),
        Outcome::Allow
    );
    assert_eq!(
        decide(&store, carried("ops"), r#"Doc::"plan""#),
        Outcome::Deny
    );

    // Only what the request reaches: the document, its owner, the owner's
    // department and the caller's, never the rest of the data.
    let entities = Entities::from_entities([carried("ops")], None).unwrap();
    let merged = store
        .current()
        .directory
        .for_request(&entities, &uid(r#"Doc::"plan""#))
        .unwrap()
        .unwrap();
    let uids = |e: &Entities| {
        let mut got: Vec<String> = e.iter().map(|e| e.uid().to_string()).collect();
        got.sort();
        got
    };
    assert_eq!(
        uids(&merged),
        [
            r#"Department::"ops""#,
            r#"Department::"sales""#,
            r#"Doc::"plan""#,
            r#"User::"bob""#,
            r#"User::"dana""#,
        ]
    );
    // A principal the data holds reaches what its stored attributes name.
    let bob = Entities::from_entities([Entity::with_uid(uid(r#"User::"bob""#))], None).unwrap();
    let merged = store
        .current()
        .directory
        .for_request(&bob, &uid(r#"Doc::"other""#))
        .unwrap()
        .unwrap();
    assert_eq!(uids(&merged), [r#"Department::"sales""#, r#"User::"bob""#]);
}

#[test]
fn the_stored_data_wins_attribute_by_attribute_and_parents_are_the_union() {
    let mut stored = user("alice", &["staff"]);
    stored["attrs"] = json!({"level": 2});
    let directory = directory(&[("entities.json", json!([stored, group("staff", &[])]))]);
    let carried = Entity::new(
        uid(r#"User::"alice""#),
        [
            ("level".to_owned(), RestrictedExpression::new_long(9)),
            (
                "email".to_owned(),
                RestrictedExpression::new_string("alice@example.com".into()),
            ),
        ]
        .into(),
        [uid(r#"Group::"from-jwt""#)].into(),
    )
    .unwrap();
    let merged = merged(&directory, carried);
    let alice = r#"User::"alice""#;
    assert_eq!(attr(&merged, alice, "level"), Some(EvalResult::Long(2)));
    assert_eq!(
        attr(&merged, alice, "email"),
        Some(EvalResult::String("alice@example.com".into()))
    );
    for g in [r#"Group::"staff""#, r#"Group::"from-jwt""#] {
        assert!(merged.is_ancestor_of(&uid(g), &uid(alice)), "{g}");
    }
}

#[test]
fn a_stored_entity_keeps_its_tags_when_a_request_adds_to_it() {
    let doc = json!({"uid": {"type": "Doc", "id": "d"}, "attrs": {}, "parents": [],
                     "tags": {"classification": "secret"}});
    let directory = directory(&[("entities.json", json!([doc]))]);
    let carried = Entity::new_with_tags(
        uid(r#"Doc::"d""#),
        [(
            "owner".to_owned(),
            RestrictedExpression::new_entity_uid(uid(r#"User::"x""#)),
        )],
        [],
        [(
            "classification".to_owned(),
            RestrictedExpression::new_string("public".into()),
        )],
    )
    .unwrap();
    let merged = merged(&directory, carried);
    let doc = merged.get(&uid(r#"Doc::"d""#)).unwrap();
    assert_eq!(
        doc.tag("classification").map(Result::unwrap),
        Some(EvalResult::String("secret".into()))
    );
    assert!(doc.attr("owner").is_some());
}

#[test]
fn entity_data_the_schema_does_not_declare_is_refused_with_the_file_named() {
    let got = problems(&[(
        "entities.json",
        json!([{"uid": {"type": "Team", "id": "t"}, "attrs": {}, "parents": []}]),
    )]);
    assert!(
        got.len() == 1 && got[0].starts_with("entities.json: ") && got[0].contains("Team"),
        "{got:?}"
    );

    let mut wrong_type = user("alice", &[]);
    wrong_type["attrs"] = json!({"level": "high"});
    let got = problems(&[("people.entities.json", json!([wrong_type]))]);
    assert!(
        got.len() == 1 && got[0].starts_with("people.entities.json: ") && got[0].contains("level"),
        "{got:?}"
    );

    let mut undeclared = user("alice", &[]);
    undeclared["attrs"] = json!({"salary": 1});
    let got = problems(&[("entities.json", json!([undeclared]))]);
    assert!(got.len() == 1 && got[0].contains("salary"), "{got:?}");

    // A parent of a type the schema does not allow there.
    let got = problems(&[(
        "entities.json",
        json!([{"uid": {"type": "Group", "id": "g"}, "attrs": {}, "parents": [{"type": "User", "id": "u"}]}]),
    )]);
    assert!(got.len() == 1 && got[0].contains("User"), "{got:?}");

    let got = problems(&[("entities.json", json!({"not": "a list"}))]);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn an_entity_defined_in_two_files_names_both() {
    let got = problems(&[
        ("a.entities.json", json!([user("alice", &[])])),
        (
            "b.entities.json",
            json!([user("alice", &["staff"]), user("bob", &[])]),
        ),
    ]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("b.entities.json: entity `User::\"alice\"` is already defined in `")
            && got[0].contains("a.entities.json"),
        "{got:?}"
    );
}

#[test]
fn a_cycle_across_files_is_refused() {
    let got = problems(&[
        ("a.entities.json", json!([group("a", &["b"])])),
        ("b.entities.json", json!([group("b", &["a"])])),
    ]);
    assert!(
        got.len() == 1
            && got[0]
                .contains("`a.entities.json`, `b.entities.json` together do not form a hierarchy")
            && got[0].contains("cycle containing vertex `Group::"),
        "{got:?}"
    );
}

#[test]
fn without_an_entities_file_the_data_is_empty_and_requests_pass_as_they_are() {
    let d = dir(&[("other.json", json!({"ignored": true}))]);
    let store = PolicyStore::open(d.path(), vec![]).unwrap();
    let directory = &store.current().directory;
    assert!(directory.is_empty() && directory.files().is_empty());
    let alice = Entity::new_no_attrs(uid(r#"User::"alice""#), [uid(r#"Group::"staff""#)].into());
    let entities = Entities::from_entities([alice.clone()], None).unwrap();
    assert!(
        store
            .with_directory(&entities, &uid(r#"Doc::"d""#))
            .unwrap()
            .is_none()
    );
    let merged = merged(directory, alice);
    assert!(merged.deep_eq(&entities));
    assert_eq!(
        decide(
            &store,
            Entity::with_uid(uid(r#"User::"bob""#)),
            r#"Doc::"d""#
        ),
        Outcome::Deny
    );
}

#[test]
fn a_request_that_reaches_no_stored_entity_is_left_as_it_is() {
    let directory = directory(&[("entities.json", json!([group("staff", &[])]))]);
    let bob = Entities::from_entities([Entity::with_uid(uid(r#"User::"bob""#))], None).unwrap();
    assert!(
        directory
            .for_request(&bob, &uid(r#"Doc::"d""#))
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_watcher_reloads_when_an_entities_file_changes() {
    let d = dir(&[(
        "entities.json",
        json!([user("alice", &["staff"]), group("staff", &[])]),
    )]);
    let store = std::sync::Arc::new(PolicyStore::open(d.path(), vec![]).unwrap());
    let _watch = crate::policy::watch::spawn(store.clone()).unwrap();
    let alice = || Entity::with_uid(uid(r#"User::"alice""#));
    assert_eq!(decide(&store, alice(), r#"Doc::"d""#), Outcome::Allow);

    std::fs::write(
        d.path().join("entities.json"),
        json!([user("alice", &[]), group("staff", &[])]).to_string(),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while store
        .stats
        .reloads
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "no reload");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(decide(&store, alice(), r#"Doc::"d""#), Outcome::Deny);
}

/// What the AuthZEN front door does: carried entities merged, then
/// decided, here on an action in an action group (whose entity the
/// decision adds beside the schema's own copy).
#[test]
fn entities_merged_with_the_schema_decide_an_action_in_a_group() {
    let d = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(examples).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let pat = json!([{"uid": {"type": "User", "id": "pat"}, "attrs": {}, "parents": [{"type": "Group", "id": "deployers"}]}]);
    std::fs::write(d.path().join("entities.json"), pat.to_string()).unwrap();
    let store = PolicyStore::open(d.path(), vec![]).unwrap();
    let loaded = store.current();
    let carried = Entity::new(
        uid(r#"User::"pat""#),
        [(
            "email".to_owned(),
            RestrictedExpression::new_string("pat@example.com".into()),
        )]
        .into(),
        Default::default(),
    )
    .unwrap();
    let entities = merged(&loaded.directory, carried.clone());
    let deploy = uid(r#"Action::"deploy""#);
    let request = |granted: bool| {
        let context = json!({
            "http": {"method": "POST", "path": "/", "host": "h", "query": {}, "headers": {}},
            "source": {}, "time": 0, "approval": {"granted": granted},
        });
        let context = Context::from_json_value(context, Some((&loaded.schema, &deploy))).unwrap();
        Request::new(
            uid(r#"User::"pat""#),
            deploy.clone(),
            uid(r#"Deployment::"web""#),
            context,
            None,
        )
        .map_err(|e| e.to_string())
    };
    let approvable = |v: &crate::policy::Verdict| {
        matches!(v, crate::policy::Verdict::Approvable { denial, .. }
            if denial.policies == ["infrastructure-changes-need-approval"])
    };
    let verdict = store.decide(request, &entities).unwrap();
    assert!(approvable(&verdict), "{verdict:?}");

    // Mapped with the schema (every action entity in), then merged at the
    // gate: the actions are left to the decision.
    let mapped = Entities::from_entities([carried], Some(&loaded.schema)).unwrap();
    assert!(mapped.get(&deploy).is_some());
    let merged = store
        .with_directory(&mapped, &uid(r#"Deployment::"web""#))
        .unwrap()
        .unwrap();
    assert_eq!(merged.len(), 1);
    let verdict = store.decide(request, &merged).unwrap();
    assert!(approvable(&verdict), "{verdict:?}");
}

/// `carried` merged as the gate merges a request's principal, with a
/// resource the data does not define.
fn merged(directory: &Directory, carried: Entity) -> Entities {
    let carried = Entities::from_entities([carried], None).unwrap();
    directory
        .for_request(&carried, &uid(r#"Nowhere::"none""#))
        .unwrap()
        .unwrap_or(carried)
}
