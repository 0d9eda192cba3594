//! Entity data beside the policies on the Check path: group membership and
//! resource attributes the request does not carry, and their reload.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::Outcome;
use super::shadow_tests::policies;
use super::tests::{BODY, EXPORT, world_in};
use crate::approval::MemoryStore;
use crate::config::Config;

/// The example policies, with datasets that may name an owner who reads them.
fn with_owners() -> tempfile::TempDir {
    policies(|name, text| match name {
        "schema.cedarschema" => {
            text.replacen("entity Dataset;", "entity Dataset { owner?: User };", 1)
        }
        "datasets.cedar" => format!(
            "{text}\n@id(\"owners-read\")\npermit (principal, action == Action::\"read\", resource is Dataset)\nwhen {{ resource has owner && resource.owner == principal }};\n"
        ),
        _ => text,
    })
}

fn is_allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allow { .. })
}

#[tokio::test]
async fn a_group_the_jwt_does_not_carry_comes_from_entities_json_until_it_is_taken_out() {
    let dir = with_owners();
    let data = dir.path().join("entities.json");
    let alice_in = |groups: &[&str]| {
        let parents: Vec<_> = groups
            .iter()
            .map(|g| json!({"type": "Group", "id": g}))
            .collect();
        json!([{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": parents}])
            .to_string()
    };
    std::fs::write(&data, alice_in(&["data-owners"])).unwrap();
    let config = Config::load(None, &HashMap::new()).unwrap();
    let w = world_in(config, dir.path(), Arc::new(MemoryStore::new()));
    // The token names alice and no group.
    let export = || w.decide_body("POST", EXPORT, json!({"sub": "alice"}), None, BODY);

    assert!(is_allowed(&export().await), "{:?}", export().await);
    let bob = w
        .decide_body("POST", EXPORT, json!({"sub": "bob"}), None, BODY)
        .await;
    assert!(!is_allowed(&bob), "{bob:?}");

    // A broken edit is refused and the last good data stays in force.
    std::fs::write(&data, r#"[{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": [{"type": "Dataset", "id": "x"}]}]"#).unwrap();
    let err = w.policies.reload().unwrap_err().to_string();
    assert!(
        err.contains("entities.json") && err.contains("Dataset"),
        "{err}"
    );
    assert!(is_allowed(&export().await));

    std::fs::write(&data, alice_in(&[])).unwrap();
    w.policies.reload().unwrap();
    let denied = export().await;
    assert!(
        matches!(&denied, Outcome::Deny { reason, .. } if reason == "no policy permits this request"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn the_resource_picks_up_its_stored_attributes() {
    let dir = with_owners();
    let data = json!([
        {"uid": {"type": "Dataset", "id": "sales"}, "attrs": {"owner": {"type": "User", "id": "carol"}}, "parents": []},
    ]);
    std::fs::write(dir.path().join("entities.json"), data.to_string()).unwrap();
    let config = Config::load(None, &HashMap::new()).unwrap();
    let w = world_in(config, dir.path(), Arc::new(MemoryStore::new()));
    let read = async |dataset: &str, who: &str| {
        let path = format!("/v1/datasets/{dataset}");
        w.decide_body("GET", &path, json!({"sub": who}), None, b"")
            .await
    };
    assert!(is_allowed(&read("sales", "carol").await));
    assert!(!is_allowed(&read("sales", "dave").await));
    // A dataset the data does not hold has no owner: as without the data.
    assert!(!is_allowed(&read("hr", "carol").await));
}

#[tokio::test]
async fn a_request_whose_entities_do_not_combine_with_the_data_is_denied() {
    // Groups may hold users here, so a token can close a cycle.
    let dir = policies(|name, text| match name {
        "schema.cedarschema" => text.replacen("entity Group;", "entity Group in [User];", 1),
        _ => text,
    });
    let data = json!([{"uid": {"type": "Group", "id": "loop"}, "attrs": {}, "parents": [{"type": "User", "id": "alice"}]}]);
    std::fs::write(dir.path().join("entities.json"), data.to_string()).unwrap();
    let config = Config::load(None, &HashMap::new()).unwrap();
    let w = world_in(config, dir.path(), Arc::new(MemoryStore::new()));
    let claims = json!({"sub": "alice", "groups": ["loop", "analysts"]});
    let got = w
        .decide_body("GET", "/v1/datasets/sales", claims, None, b"")
        .await;
    assert!(
        matches!(&got, Outcome::Deny { reason, .. } if reason.contains("do not combine with the entity data")),
        "{got:?}"
    );
}
