use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{Entities, EntityTypeName};
use serde_json::{Value, json};

use super::*;

fn settings() -> IdentitySettings {
    crate::request::identity::tests::settings(Some("x-user"))
}

/// Entities as JSON, parents in order (a set has none of its own).
fn json(entities: &Entities) -> Value {
    let mut v = entities.to_json_value().unwrap();
    for e in v.as_array_mut().unwrap() {
        if let Some(parents) = e["parents"].as_array_mut() {
            parents.sort_by_key(|p| p.to_string());
        }
    }
    v
}

/// What resolving afresh gives, as JSON to compare.
fn fresh(
    s: &IdentitySettings,
    claims: Option<&Value>,
    peer: &str,
    headers: &HashMap<String, String>,
) -> Value {
    let id = s
        .resolve(claims.and_then(Value::as_object), peer, headers)
        .unwrap();
    json(&Entities::from_entities([id.entity], None).unwrap())
}

fn cached(
    s: &IdentitySettings,
    claims: Option<&Value>,
    peer: &str,
    headers: &HashMap<String, String>,
) -> (String, Value) {
    let p = s
        .principal(claims.and_then(Value::as_object), peer, headers)
        .unwrap();
    (p.uid.to_string(), json(&p.entities))
}

#[test]
fn a_principal_seen_again_is_the_one_resolving_afresh_gives() {
    let s = settings();
    let none = HashMap::new();
    let alice = json!({"sub": "alice", "groups": ["analysts"], "exp": 1.7e9, "level": 3});
    for _ in 0..3 {
        let (uid, entities) = cached(&s, Some(&alice), "", &none);
        assert_eq!(uid, r#"User::"alice""#);
        assert_eq!(entities, fresh(&s, Some(&alice), "", &none));
    }
}

#[test]
fn any_change_in_the_claims_is_a_new_principal_not_the_remembered_one() {
    let s = settings();
    let none = HashMap::new();
    let base = json!({"sub": "bob", "groups": ["analysts"], "level": 1});
    cached(&s, Some(&base), "", &none);
    let changed = [
        json!({"sub": "bob", "groups": ["analysts", "data-owners"], "level": 1}),
        json!({"sub": "bob", "groups": [], "level": 1}),
        json!({"sub": "bob", "groups": ["analysts"], "level": 2}),
        json!({"sub": "bob", "groups": ["analysts"], "level": 1.5}),
        json!({"sub": "bob", "groups": ["analysts"], "level": -1}),
        json!({"sub": "bob", "groups": ["analysts"], "level": "1"}),
        json!({"sub": "bob", "groups": ["analysts"]}),
        json!({"sub": "bob2", "groups": ["analysts"], "level": 1}),
        json!({"sub": "bob", "groups": ["analysts"], "level": 1, "on_behalf_of": "carol"}),
    ];
    for claims in &changed {
        let (_, entities) = cached(&s, Some(claims), "", &none);
        assert_eq!(entities, fresh(&s, Some(claims), "", &none), "{claims}");
        // And the first is still itself.
        let (_, entities) = cached(&s, Some(&base), "", &none);
        assert_eq!(entities, fresh(&s, Some(&base), "", &none));
    }
    let agent = json!({"sub": "agent-7", "on_behalf_of": "carol"});
    let p = s.principal(agent.as_object(), "", &none).unwrap();
    assert_eq!(p.on_behalf_of.unwrap().to_string(), r#"User::"carol""#);
    let again = s.principal(agent.as_object(), "", &none).unwrap();
    assert_eq!(again.on_behalf_of.unwrap().to_string(), r#"User::"carol""#);
}

#[test]
fn other_settings_never_get_the_principal_another_mapper_resolved() {
    let none = HashMap::new();
    let claims = json!({"sub": "dana", "groups": ["ops"], "roles": ["admins"]});
    let first = settings();
    cached(&first, Some(&claims), "", &none);
    let mut other = settings();
    other.groups_claim = "roles".into();
    let (_, entities) = cached(&other, Some(&claims), "", &none);
    assert_eq!(entities, fresh(&other, Some(&claims), "", &none));
    assert_eq!(entities[0]["parents"][0]["id"], json!("admins"));
    other.user_type = EntityTypeName::from_str("Person").unwrap();
    let (uid, _) = cached(&other, Some(&claims), "", &none);
    assert_eq!(uid, r#"Person::"dana""#);
}

#[test]
fn peers_headers_and_the_anonymous_are_told_apart() {
    let s = settings();
    let none = HashMap::new();
    let header = HashMap::from([("x-user".to_owned(), "erin".to_owned())]);
    let cases = [
        (
            None,
            "spiffe://mesh/ns/a/sa/x",
            &none,
            r#"Workload::"spiffe://mesh/ns/a/sa/x""#,
        ),
        (
            None,
            "spiffe://mesh/ns/a/sa/y",
            &none,
            r#"Workload::"spiffe://mesh/ns/a/sa/y""#,
        ),
        (None, "", &header, r#"User::"erin""#),
        (None, "", &none, r#"Anonymous::"anonymous""#),
        // A peer named like the header's value is still a workload.
        (None, "erin", &none, r#"Workload::"erin""#),
    ];
    for _ in 0..2 {
        for (claims, peer, headers, want) in &cases {
            let (uid, entities) = cached(&s, *claims, peer, headers);
            assert_eq!(&uid, want);
            assert_eq!(entities, fresh(&s, *claims, peer, headers));
        }
    }
    // Refusals are not remembered as anyone.
    let blank = HashMap::from([("x-user".to_owned(), " ".to_owned())]);
    assert!(s.principal(None, "", &blank).is_err());
    assert!(s.principal(None, "", &blank).is_err());
}

#[test]
fn a_full_memory_starts_over_and_stays_right() {
    let s = settings();
    let none = HashMap::new();
    for i in 0..(KEEP * 2 + 3) {
        let claims = json!({"sub": format!("user-{i}"), "groups": [format!("g-{}", i % 7)]});
        let (uid, entities) = cached(&s, Some(&claims), "", &none);
        assert_eq!(uid, format!(r#"User::"user-{i}""#));
        assert_eq!(entities, fresh(&s, Some(&claims), "", &none));
    }
}

#[test]
fn a_very_large_token_is_resolved_every_time_not_remembered() {
    let s = settings();
    let none = HashMap::new();
    let small = json!({"sub": "dana", "groups": ["analysts"]});
    cached(&s, Some(&small), "", &none);
    assert_eq!(remembered().0, 1);
    let huge = json!({"sub": "erin", "groups": ["analysts"], "note": "x".repeat(LARGEST)});
    for _ in 0..2 {
        let (uid, entities) = cached(&s, Some(&huge), "", &none);
        assert_eq!(uid, r#"User::"erin""#);
        assert_eq!(entities, fresh(&s, Some(&huge), "", &none));
    }
    assert_eq!(remembered().0, 1, "the large token was remembered");
}

#[test]
fn large_tokens_never_hold_more_than_the_budget() {
    let s = settings();
    let none = HashMap::new();
    let note = "y".repeat(LARGEST / 2);
    for i in 0..(BUDGET / LARGEST * 4) {
        let claims = json!({"sub": format!("user-{i}"), "note": note});
        let (uid, entities) = cached(&s, Some(&claims), "", &none);
        assert_eq!(uid, format!(r#"User::"user-{i}""#));
        assert_eq!(entities, fresh(&s, Some(&claims), "", &none));
        let (entries, bytes) = remembered();
        assert!(
            entries >= 1 && bytes <= BUDGET,
            "{entries} entries, {bytes} bytes"
        );
        assert!(bytes >= entries * note.len());
    }
}
