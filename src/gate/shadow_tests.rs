//! Shadow mode and policies in shadow, on the memory store with the example
//! policies: what the caller gets, what is recorded, and what approvers see.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::Outcome;
use super::tests::{EXPORT, World, agent, approver, world_in};
use crate::approval::store::{AuditCursor, ListFilter};
use crate::approval::{ApprovalStore, MemoryStore, Ruling, Status};
use crate::config::{Config, EMBEDDED};

/// The example policies, each file passed through `edit`.
pub(super) fn policies(edit: impl Fn(&str, String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(examples).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            let text = edit(&name, std::fs::read_to_string(&p).unwrap());
            std::fs::write(dir.path().join(name), text).unwrap();
        }
    }
    dir
}

/// The embedded configuration, with `policy.enforcement` as given.
fn config(enforcement: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    let text = EMBEDDED.replacen(
        "watch = true",
        &format!("watch = true\nenforcement = \"{enforcement}\""),
        1,
    );
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), &HashMap::new()).unwrap()
}

/// Turning audit logging off stays refused in shadow mode.
fn always_enforced(name: &str, text: String) -> String {
    if name == "audit-logging.cedar" {
        text.replace(
            "@id(\"audit-logging-stays-on\")",
            "@id(\"audit-logging-stays-on\")\n@enforce(\"always\")",
        )
    } else {
        text
    }
}

impl World {
    /// Every audit entry, as field maps.
    async fn audit(&self) -> Vec<HashMap<String, String>> {
        self.store
            .audit_range(&mut AuditCursor::from("-"), "+", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.fields.into_iter().collect())
            .collect()
    }

    /// The approval requests, once `n` are there (shadow requests open
    /// off the check's path).
    async fn requests(&self, n: usize) -> Vec<crate::approval::Approval> {
        for _ in 0..200 {
            let list = self.approvals.list(&all()).await.unwrap();
            if list.len() >= n {
                return list;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("fewer than {n} approval requests opened");
    }

    /// An admin turns audit logging off.
    async fn audit_off(&self) -> Outcome {
        self.decide_body(
            "PUT",
            "/v1/audit/settings",
            json!({"sub": "root", "groups": ["admins"]}),
            None,
            br#"{"enabled":false}"#,
        )
        .await
    }

    async fn metrics(&self) -> String {
        self.approvals
            .sink()
            .metrics()
            .render(&self.policies, &*self.store)
            .await
    }
}

fn all() -> ListFilter {
    ListFilter {
        limit: 100,
        ..ListFilter::default()
    }
}

#[tokio::test]
async fn shadow_mode_lets_refused_calls_through_and_records_what_enforcement_would_do() {
    let dir = policies(always_enforced);
    let store = Arc::new(MemoryStore::new());
    let w = world_in(config("shadow"), dir.path(), store.clone());

    // A guarded export passes, and opens a shadow request for approvers.
    let got = w.decide_as("POST", EXPORT, agent(), None).await;
    assert!(matches!(got, Outcome::Allow { .. }), "{got:?}");
    let opened = w.requests(1).await;
    assert_eq!(opened.len(), 1);
    let shadow = &opened[0];
    assert!(shadow.info.shadow);
    assert_eq!(shadow.status, Status::Pending);
    assert_eq!(shadow.info.approver_groups, ["data-owners"]);
    // The identical call passes again and finds the same request.
    let again = w.decide_as("POST", EXPORT, agent(), None).await;
    assert!(matches!(again, Outcome::Allow { .. }), "{again:?}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(w.approvals.list(&all()).await.unwrap().len(), 1);

    let audit = w.audit().await;
    let decision = audit
        .iter()
        .find(|e| e.get("event").map(String::as_str) == Some("decision"))
        .unwrap();
    assert_eq!(decision["decision"], "allow");
    assert_eq!(decision["shadow"], "true");
    assert_eq!(decision["shadow_decision"], "approval_required");
    assert_eq!(decision["shadow_policies"], "agent-exports-need-approval");
    // The shadow request is no approval of this call.
    assert_eq!(
        decision
            .get("approval_id")
            .map(String::as_str)
            .unwrap_or(""),
        ""
    );

    // An anonymous read is let through too; turning audit logging off is not.
    let read = w
        .decide_as("GET", "/v1/datasets/sales", json!({"sub": "x"}), None)
        .await;
    assert!(matches!(read, Outcome::Allow { .. }), "{read:?}");
    let off = w.audit_off().await;
    let Outcome::Deny { policies, .. } = &off else {
        panic!("{off:?}")
    };
    assert_eq!(policies, &["audit-logging-stays-on"]);

    // Counted as what the callers got, and as what the policies decided.
    let metrics = w.metrics().await;
    for line in [
        r#"countersign_checks_total{decision="allow",shadow="true"} 3"#,
        r#"countersign_checks_total{decision="deny",shadow="false"} 1"#,
        r#"countersign_shadow_decisions_total{decision="approval_required"} 2"#,
        r#"countersign_shadow_decisions_total{decision="deny"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }

    // Approvers may practise on it; approving it allows nothing once
    // enforced: the enforced call opens its own request.
    let dora = approver("dora", &["data-owners"]);
    let ruled = w
        .approvals
        .rule(&dora, &shadow.id, Ruling::Approve, "practice")
        .await
        .unwrap();
    assert_eq!(ruled.status, Status::Approved);
    let enforced = world_in(config("enforce"), dir.path(), store);
    let got = enforced.decide_as("POST", EXPORT, agent(), None).await;
    let Outcome::ApprovalRequired { approval, .. } = &got else {
        panic!("{got:?}")
    };
    assert_ne!(approval.id, shadow.id);
    assert!(!approval.info.shadow);
    assert_eq!(approval.status, Status::Pending);
}

#[tokio::test]
async fn a_policy_in_shadow_is_recorded_not_enforced_until_a_reload_drops_the_mark() {
    let guard = r#"
@id("deletes-need-a-data-owner")
@shadow
@approval("deny")
@approvers("data-owners")
forbid (principal, action == Action::"delete", resource)
unless { context.approval.granted };
"#;
    let dir = policies(|name, text| {
        if name == "datasets.cedar" {
            text + guard
        } else {
            text
        }
    });
    let w = world_in(config("enforce"), dir.path(), Arc::new(MemoryStore::new()));
    let admin = || json!({"sub": "root", "groups": ["admins"]});

    let got = w
        .decide_body("DELETE", "/v1/datasets/old", admin(), None, b"")
        .await;
    assert!(matches!(got, Outcome::Allow { .. }), "{got:?}");
    let opened = w.requests(1).await;
    assert_eq!(opened.len(), 1);
    assert!(opened[0].info.shadow);
    assert_eq!(opened[0].info.policies, ["deletes-need-a-data-owner"]);
    let audit = w.audit().await;
    let decision = audit
        .iter()
        .find(|e| e.get("event").map(String::as_str) == Some("decision"))
        .unwrap();
    assert_eq!(decision["shadow_decision"], "approval_required");
    // Calls the shadow policy cannot apply to are not shadow decisions.
    let export = w.decide_as("POST", EXPORT, agent(), None).await;
    assert!(matches!(export, Outcome::ApprovalRequired { .. }));

    // Enforced from the reload on, with no restart.
    let path = dir.path().join("datasets.cedar");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("@shadow\n", "")).unwrap();
    w.policies.reload().unwrap();
    let got = w
        .decide_body("DELETE", "/v1/datasets/old", admin(), None, b"")
        .await;
    let Outcome::ApprovalRequired { approval, .. } = &got else {
        panic!("{got:?}")
    };
    assert!(!approval.info.shadow);
}

#[test]
fn rollout_annotations_that_cannot_mean_anything_are_refused_at_load() {
    let cases = [
        (
            "@shadow(\"soon\") forbid (principal, action, resource);",
            "`@shadow` takes no value",
        ),
        (
            "@enforce(\"always\") permit (principal, action, resource);",
            "`@enforce(\"always\")` belongs on a `forbid`",
        ),
        (
            "@enforce(\"sometimes\") forbid (principal, action, resource);",
            "`@enforce` takes `\"always\"`",
        ),
        (
            "@shadow @enforce(\"always\") forbid (principal, action, resource);",
            "cannot be both",
        ),
    ];
    for (policy, message) in cases {
        let dir = policies(|name, text| {
            if name == "secrets.cedar" {
                format!("{text}\n{policy}\n")
            } else {
                text
            }
        });
        let err = crate::policy::PolicyStore::open(dir.path(), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(message) && err.contains("secrets.cedar"),
            "{policy}: {err}"
        );
    }
}

#[tokio::test]
async fn a_policy_in_shadow_grants_no_approver_and_refuses_none() {
    let dora = approver("dora", &["data-owners"]);
    // The permit that lets data owners approve exports, put in shadow:
    // nobody may approve.
    let dir = policies(|_, text| {
        text.replace(
            "@id(\"data-owners-approve-exports\")\n",
            "@id(\"data-owners-approve-exports\")\n@shadow\n",
        )
    });
    let w = world_in(config("enforce"), dir.path(), Arc::new(MemoryStore::new()));
    let got = w.decide_as("POST", EXPORT, agent(), None).await;
    let Outcome::ApprovalRequired { approval, .. } = &got else {
        panic!("{got:?}")
    };
    let refused = w
        .approvals
        .rule(&dora, &approval.id, Ruling::Approve, "Q3 report")
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A forbid in shadow refuses no data owner.
    let forbid = "\n@id(\"no-data-owner-approves\")\n@shadow\nforbid (principal in Group::\"data-owners\", action == Action::\"approve\", resource);\n";
    let dir = policies(|name, text| {
        if name == "datasets.cedar" {
            text + forbid
        } else {
            text
        }
    });
    let w = world_in(config("enforce"), dir.path(), Arc::new(MemoryStore::new()));
    let got = w.decide_as("POST", EXPORT, agent(), None).await;
    let Outcome::ApprovalRequired { approval, .. } = &got else {
        panic!("{got:?}")
    };
    let ruled = w
        .approvals
        .rule(&dora, &approval.id, Ruling::Approve, "Q3 report")
        .await
        .unwrap();
    assert_eq!(ruled.status, Status::Approved);
}

#[tokio::test]
async fn in_shadow_mode_an_always_enforced_forbid_stands_even_beside_a_failing_policy() {
    // A permit whose evaluation overflows, next to the always-enforced
    // forbid: Cedar then names only the failing policy.
    let failing = r#"
@id("overflowing-permit")
permit (principal, action == Action::"configure_audit", resource)
when { context.time * 9223372036854775807 > 0 };
"#;
    let dir = policies(|name, text| {
        let text = always_enforced(name, text);
        if name == "audit-logging.cedar" {
            text + failing
        } else {
            text
        }
    });
    let w = world_in(config("shadow"), dir.path(), Arc::new(MemoryStore::new()));
    let off = w.audit_off().await;
    assert!(matches!(off, Outcome::Deny { .. }), "{off:?}");
}

#[test]
fn a_policy_set_that_does_not_load_denies_everything_in_shadow_mode_too() {
    let dir = policies(|name, text| {
        if name == "datasets.cedar" {
            text + "\npermit (principal, action == Action::\"raed\", resource);\n"
        } else {
            text
        }
    });
    let (store, problem) = crate::policy::PolicyStore::open_or_deny_all(dir.path(), vec![]);
    assert!(problem.is_some());
    let action: cedar_policy::EntityUid = r#"Action::"read""#.parse().unwrap();
    let request = |_| {
        cedar_policy::Request::new(
            r#"User::"alice""#.parse().unwrap(),
            action.clone(),
            r#"Dataset::"sales""#.parse().unwrap(),
            cedar_policy::Context::empty(),
            None,
        )
        .map_err(|e| e.to_string())
    };
    let got = store
        .decide_enforced(request, &cedar_policy::Entities::empty(), &action, true)
        .unwrap();
    assert!(
        matches!(got.verdict, crate::policy::Verdict::Deny(_)),
        "{got:?}"
    );
}
