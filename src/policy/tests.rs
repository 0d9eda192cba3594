use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityUid, PolicySet, Request, RestrictedExpression,
};

use super::*;

const SCHEMA: &str = r#"
entity Group;
entity User in [Group] { level?: Long };
entity Doc;
action read appliesTo { principal: [User], resource: [Doc], context: { n?: Long } };
"#;

fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("schema.cedarschema"), SCHEMA).unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

fn uid(s: &str) -> EntityUid {
    EntityUid::from_str(s).unwrap()
}

fn decide(store: &PolicyStore, user: Entity, context: Context) -> Decision {
    let req = Request::new(
        user.uid(),
        uid(r#"Action::"read""#),
        uid(r#"Doc::"d""#),
        context,
        None,
    )
    .unwrap();
    store.evaluate(&req, &Entities::from_entities([user], None).unwrap())
}

fn alice() -> Entity {
    Entity::new_no_attrs(uid(r#"User::"alice""#), [uid(r#"Group::"readers""#)].into())
}

fn open(d: &Path) -> PolicyStore {
    PolicyStore::open(d, vec![]).unwrap()
}

#[test]
fn decisions_name_the_determining_policies_by_their_id_annotation() {
    let d = dir(&[(
        "p.cedar",
        r#"@id("readers-read") permit (principal in Group::"readers", action, resource);
           permit (principal == User::"alice", action, resource);"#,
    )]);
    let got = decide(&open(d.path()), alice(), Context::empty());
    assert_eq!(got.outcome, Outcome::Allow);
    assert_eq!(
        got.policies,
        vec!["p.cedar#1".to_owned(), "readers-read".to_owned()]
    );

    let bob = Entity::new_no_attrs(uid(r#"User::"bob""#), Default::default());
    let got = decide(&open(d.path()), bob, Context::empty());
    assert_eq!(
        (got.outcome, got.reason()),
        (Outcome::Deny, "no policy permits this request".into())
    );
}

#[test]
fn an_erroring_forbid_with_a_matching_permit_denies() {
    // `principal.level` is optional; reading it without `has` errors at run
    // time for a user without it. Cedar skips the erroring forbid, so on its
    // own the permit would allow.
    let d = dir(&[(
        "p.cedar",
        r#"@id("all-read") permit (principal, action, resource);
           @id("low-level-forbidden") forbid (principal, action, resource) when { principal.level < 3 };"#,
    )]);
    let store = PolicyStore::open(d.path(), vec![]);
    // Strict validation refuses the unguarded optional read...
    assert!(matches!(store, Err(PolicyError::Invalid(_))));
    // ...so build the set without the validator to reach the runtime guard.
    let set = PolicySet::from_str(
        r#"@id("all-read") permit (principal, action, resource);
           @id("low-level-forbidden") forbid (principal, action, resource) when { principal.level < 3 };"#,
    )
    .unwrap();
    let d = dir(&[("ok.cedar", r#"permit (principal, action, resource);"#)]);
    let store = open(d.path());
    let loaded = store.current();
    store.current.store(Arc::new(Loaded {
        set,
        schema: loaded.schema.clone(),
        files: vec![],
        warnings: vec![],
        guards: Default::default(),
        guarded_actions: Default::default(),
        slices: Default::default(),
        rollout: Default::default(),
        declared: Default::default(),
        shapes: Default::default(),
        directory: Default::default(),
        validated: 0,
    }));

    let got = decide(&store, alice(), Context::empty());
    assert_eq!(got.outcome, Outcome::Deny);
    // Cedar's own ids here: the set was built without the loader's renaming.
    assert_eq!(got.policies, vec!["policy1".to_owned()], "{got:?}");
    assert!(
        got.errors
            .iter()
            .any(|e| e.contains("does not have the attribute `level`")),
        "{got:?}"
    );
    assert!(
        got.reason().starts_with("policy evaluation failed in"),
        "{}",
        got.reason()
    );
}

#[test]
fn a_runtime_error_in_a_validated_policy_denies() {
    // Validated, yet it overflows at run time when context.n is huge.
    let d = dir(&[(
        "p.cedar",
        r#"@id("all-read") permit (principal, action, resource);
           @id("n-bounded") forbid (principal, action, resource) when { context has n && context.n + 1 > 10 };"#,
    )]);
    let store = open(d.path());
    let ctx = |n: i64| {
        Context::from_pairs([("n".to_owned(), RestrictedExpression::new_long(n))]).unwrap()
    };
    assert_eq!(decide(&store, alice(), ctx(1)).outcome, Outcome::Allow);
    assert_eq!(decide(&store, alice(), ctx(20)).outcome, Outcome::Deny);
    let overflow = decide(&store, alice(), ctx(i64::MAX));
    assert_eq!(overflow.outcome, Outcome::Deny, "{overflow:?}");
    assert_eq!(overflow.policies, vec!["n-bounded".to_owned()]);
}

#[test]
fn invalid_policies_are_reported_with_file_line_and_policy() {
    let d = dir(&[
        (
            "a.cedar",
            "@id(\"ok\") permit (principal, action, resource);\n",
        ),
        (
            "b.cedar",
            "\n\n@id(\"typo\")\npermit (principal, action == Action::\"raed\", resource);\n",
        ),
        (
            "c.cedar",
            "permit (principal, action, resource) when { 1 + };\n",
        ),
        (
            "d.cedar",
            "@id(\"ok\") forbid (principal, action, resource);\n",
        ),
    ]);
    let Err(PolicyError::Invalid(problems)) = PolicyStore::open(d.path(), vec![]) else {
        panic!("expected invalid");
    };
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let name = p.file.file_name().unwrap().to_string_lossy().into_owned();
            format!(
                "{name}:{:?}:{}",
                p.line.map(|l| l.0),
                p.policy.clone().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        lines.contains(&"b.cedar:Some(4):typo".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"c.cedar:Some(1):".to_owned()), "{lines:?}");
    assert!(
        lines.contains(&"d.cedar:Some(1):ok".to_owned()),
        "duplicate id: {lines:?}"
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn a_directory_without_schema_or_policies_is_refused() {
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        PolicyStore::open(empty.path(), vec![]),
        Err(PolicyError::NoSchema(_))
    ));
    let d = dir(&[]);
    assert!(matches!(
        PolicyStore::open(d.path(), vec![]),
        Err(PolicyError::NoPolicies(_))
    ));
    assert!(matches!(
        PolicyStore::open(&d.path().join("missing"), vec![]),
        Err(PolicyError::NotADirectory(_))
    ));
}

#[test]
fn hidden_entries_are_skipped_so_configmap_mounts_load_once() {
    let d = dir(&[(
        "p.cedar",
        r#"@id("x") permit (principal, action, resource);"#,
    )]);
    std::fs::create_dir(d.path().join("..data")).unwrap();
    std::fs::write(
        d.path().join("..data/p.cedar"),
        r#"@id("x") permit (principal, action, resource);"#,
    )
    .unwrap();
    assert_eq!(open(d.path()).current().set.policies().count(), 1);
}

#[test]
fn a_broken_reload_keeps_the_last_good_set_and_is_counted() {
    let d = dir(&[(
        "p.cedar",
        r#"@id("readers") permit (principal in Group::"readers", action, resource);"#,
    )]);
    let store = open(d.path());
    assert_eq!(
        decide(&store, alice(), Context::empty()).outcome,
        Outcome::Allow
    );

    std::fs::write(
        d.path().join("p.cedar"),
        "permit (principal, action, resource) when {",
    )
    .unwrap();
    assert!(store.reload().is_err());
    assert_eq!(store.stats.failures.load(Ordering::Relaxed), 1);
    assert_eq!(
        decide(&store, alice(), Context::empty()).outcome,
        Outcome::Allow
    );

    std::fs::write(
        d.path().join("p.cedar"),
        r#"@id("none") forbid (principal, action, resource);"#,
    )
    .unwrap();
    store.reload().unwrap();
    assert_eq!(store.stats.reloads.load(Ordering::Relaxed), 1);
    let got = decide(&store, alice(), Context::empty());
    assert_eq!(
        (got.outcome, got.policies),
        (Outcome::Deny, vec!["none".to_owned()])
    );
}

#[test]
fn probes_that_do_not_fit_the_schema_fail_the_load() {
    let d = dir(&[("p.cedar", "permit (principal, action, resource);")]);
    let probe = Probe {
        label: "route `GET /x`".into(),
        principal: uid(r#"User::"p""#),
        action: uid(r#"Action::"write""#),
        resource: uid(r#"Doc::"p""#),
        context: Context::empty(),
        unread_body: false,
    };
    let Err(PolicyError::Invalid(problems)) = PolicyStore::open(d.path(), vec![probe]) else {
        panic!("expected invalid");
    };
    assert!(
        problems[0]
            .message
            .starts_with("route `GET /x` does not fit the schema"),
        "{problems:?}"
    );
}

#[test]
fn the_example_policies_load_with_the_embedded_route_table() {
    let config = crate::config::Config::load(None, &std::collections::HashMap::new()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let store = PolicyStore::open(&dir, config.mapper.probes().unwrap()).unwrap();
    assert!(store.current().set.policies().count() >= 5);
}

#[test]
fn same_named_files_in_subdirectories_get_distinct_ids_and_symlinked_dirs_are_not_followed() {
    let d = dir(&[]);
    for sub in ["a", "b"] {
        std::fs::create_dir(d.path().join(sub)).unwrap();
        std::fs::write(
            d.path().join(sub).join("p.cedar"),
            "permit (principal, action, resource);",
        )
        .unwrap();
    }
    // A loop that a recursive walk following symlinks would never leave.
    std::os::unix::fs::symlink(d.path(), d.path().join("a/loop")).unwrap();
    let store = open(d.path());
    let got = decide(&store, alice(), Context::empty());
    assert_eq!(
        got.policies,
        vec!["a/p.cedar#0".to_owned(), "b/p.cedar#0".to_owned()]
    );
}

const GROUPED_SCHEMA: &str = r#"
entity Group;
entity User in [Group];
entity Doc;
action writes;
action read, list appliesTo { principal: [User], resource: [Doc], context: { n?: Long } };
action write, delete in [writes] appliesTo { principal: [User], resource: [Doc], context: { n?: Long } };
"#;

/// Every kind of action scope, a condition that fails at run time and one
/// that reads the context.
const GROUPED_POLICIES: &str = r#"
@id("readers") permit (principal in Group::"readers", action in [Action::"read", Action::"list"], resource);
@id("writers") permit (principal in Group::"writers", action in Action::"writes", resource);
@id("big-writes") forbid (principal, action in Action::"writes", resource) when { context has n && context.n > 5 };
@id("overflows") forbid (principal, action == Action::"read", resource) when { context has n && context.n + 9223372036854775807 > 0 };
@id("no-negative") forbid (principal, action, resource) when { context has n && context.n < -100 };
@id("bob-deletes") permit (principal == User::"bob", action == Action::"delete", resource);
@id("secret-unlisted") forbid (principal, action == Action::"list", resource == Doc::"secret");
"#;

fn grouped() -> (tempfile::TempDir, PolicyStore) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("schema.cedarschema"), GROUPED_SCHEMA).unwrap();
    std::fs::write(d.path().join("p.cedar"), GROUPED_POLICIES).unwrap();
    let store = open(d.path());
    (d, store)
}

fn ask(store: &PolicyStore, user: &Entity, action: &str, doc: &str, n: Option<i64>) -> Decision {
    let req = grouped_request(user, action, doc, n);
    store.evaluate(
        &req,
        &Entities::from_entities([user.clone()], None).unwrap(),
    )
}

fn grouped_request(user: &Entity, action: &str, doc: &str, n: Option<i64>) -> Request {
    let pairs = n.map(|n| ("n".to_owned(), RestrictedExpression::new_long(n)));
    Request::new(
        user.uid(),
        uid(&format!(r#"Action::"{action}""#)),
        uid(&format!(r#"Doc::"{doc}""#)),
        Context::from_pairs(pairs).unwrap(),
        None,
    )
    .unwrap()
}

fn member(name: &str, group: &str) -> Entity {
    Entity::new_no_attrs(
        uid(&format!(r#"User::"{name}""#)),
        [uid(&format!(r#"Group::"{group}""#))].into(),
    )
}

#[test]
fn a_forbid_on_an_action_group_applies_to_its_member_actions() {
    let (_d, store) = grouped();
    let wally = member("wally", "writers");
    let small = ask(&store, &wally, "write", "d", Some(3));
    assert_eq!(
        (small.outcome, small.policies),
        (Outcome::Allow, vec!["writers".to_owned()])
    );
    let big = ask(&store, &wally, "delete", "d", Some(7));
    assert_eq!(
        (big.outcome, big.policies),
        (Outcome::Deny, vec!["big-writes".to_owned()])
    );
}

#[test]
fn each_action_evaluates_only_its_slice_and_decides_as_the_whole_set() {
    let (_d, store) = grouped();
    let loaded = store.current();
    let ids = |a: &str| {
        let mut v: Vec<String> = loaded
            .policies_for(&uid(&format!(r#"Action::"{a}""#)))
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids("read"), ["no-negative", "overflows", "readers"]);
    assert_eq!(
        ids("delete"),
        ["big-writes", "bob-deletes", "no-negative", "writers"]
    );

    // The reference: the whole set, with the action hierarchy the schema
    // declares in the entities, as Cedar's own documentation evaluates it.
    let authorizer = Authorizer::new();
    let users = [
        member("alice", "readers"),
        member("wally", "writers"),
        member("bob", "nobody"),
    ];
    let mut compared = 0;
    for user in &users {
        let reference = Entities::from_entities([user.clone()], Some(&loaded.schema)).unwrap();
        for action in ["read", "list", "write", "delete"] {
            for doc in ["d", "secret"] {
                for n in [None, Some(-200), Some(-1), Some(3), Some(7)] {
                    let req = grouped_request(user, action, doc, n);
                    let want = authorizer.is_authorized(&req, &loaded.set, &reference);
                    let got = store.evaluate(
                        &req,
                        &Entities::from_entities([user.clone()], None).unwrap(),
                    );
                    let mut reasons: Vec<String> = want
                        .diagnostics()
                        .reason()
                        .map(ToString::to_string)
                        .collect();
                    reasons.sort();
                    let errored: Vec<String> = want
                        .diagnostics()
                        .errors()
                        .map(|e| match e {
                            cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                                e.policy_id().to_string()
                            }
                        })
                        .collect();
                    let context = format!("{user:?} {action} {doc} {n:?}");
                    if errored.is_empty() {
                        let outcome = match want.decision() {
                            cedar_policy::Decision::Allow => Outcome::Allow,
                            cedar_policy::Decision::Deny => Outcome::Deny,
                        };
                        assert_eq!(
                            (got.outcome, &got.policies),
                            (outcome, &reasons),
                            "{context}"
                        );
                    } else {
                        assert_eq!(
                            (got.outcome, &got.policies),
                            (Outcome::Deny, &errored),
                            "{context}"
                        );
                    }
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 3 * 4 * 2 * 5);
}
