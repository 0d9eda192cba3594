//! A reload validates only the policies that changed (the others were
//! validated against the same schema before), and loads exactly what a cold
//! load of the same directory does: the same set, the same refusals with
//! the same locations, and the last good set kept when the change is broken.

mod common;

use std::path::Path;

use countersign::policy::load::load_dir;
use countersign::policy::{Loaded, PolicyError, PolicyStore};

const TEAM_SCHEMA: &str = r#"
entity Team { level: Long };
action team_op appliesTo { principal: [User], resource: [Team], context: {} };
"#;

const TEAM_A: &str = r#"permit (principal == User::"carol", action == Action::"team_op", resource);

@id("team-a-op")
permit (principal in Group::"team-a", action == Action::"team_op", resource)
when { resource.level > 2 };

@id("team-a-read")
permit (principal in Group::"team-a", action == Action::"read", resource is Dataset);
"#;

const TEAM_B: &str = r#"@id("team-b-op")
forbid (principal, action == Action::"team_op", resource)
unless { principal in Group::"team-b" };

@id("team-b-export")
permit (principal in Group::"team-b", action == Action::"export", resource is Dataset);
"#;

/// The example policies and schema, plus two teams' files on an action of
/// their own, loaded; and how many policies that is.
fn opened() -> (tempfile::TempDir, PolicyStore, usize) {
    let dir = common::policy_copy();
    write(dir.path(), "team.cedarschema", TEAM_SCHEMA);
    write(dir.path(), "team-a.cedar", TEAM_A);
    write(dir.path(), "team-b.cedar", TEAM_B);
    let store = PolicyStore::open(dir.path(), vec![]).unwrap();
    let all = store.current().set.policies().count();
    (dir, store, all)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Everything a load decides with, in a comparable form.
fn fingerprint(l: &Loaded) -> Vec<String> {
    let mut out: Vec<String> = l
        .set
        .policies()
        .map(|p| format!("policy {} = {p}", p.id()))
        .collect();
    out.extend(l.files.iter().map(|f| format!("file {}", f.display())));
    out.extend(l.warnings.iter().map(|w| format!("warning {w}")));
    out.extend(l.guards.iter().map(|(id, p)| format!("guard {id} {p:?}")));
    out.extend(l.rollout.shadow.iter().map(|id| format!("shadow {id}")));
    out.extend(l.rollout.always.iter().map(|id| format!("always {id}")));
    out.push(format!("guard all {}", l.guarded_actions.all));
    out.extend(
        l.guarded_actions
            .actions
            .iter()
            .map(|a| format!("guarded {a}")),
    );
    for action in l.schema.actions() {
        let mut ids: Vec<String> = l
            .policies_for(action)
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        out.push(format!("slice {action} {ids:?}"));
    }
    out.sort();
    out
}

/// A refusal, as `policy validate` prints it, sorted (Cedar reports one
/// policy's errors in no set order).
fn refusal(e: &PolicyError) -> Vec<String> {
    match e {
        PolicyError::Invalid(problems) => {
            let mut out: Vec<String> = problems.iter().map(ToString::to_string).collect();
            out.sort();
            out
        }
        other => panic!("not a refusal: {other}"),
    }
}

/// Reloads `store` and checks the result against a cold load of its
/// directory: the same set, or the same refusal with the set in force
/// unchanged. Returns how many policies the reload validated.
fn reload_as_cold(store: &PolicyStore) -> Result<usize, Vec<String>> {
    let before = fingerprint(&store.current());
    let cold = load_dir(store.dir(), &[]);
    match (store.reload(), cold) {
        (Ok(warm), Ok(cold)) => {
            assert_eq!(fingerprint(&warm), fingerprint(&cold));
            assert_eq!(fingerprint(&store.current()), fingerprint(&cold));
            Ok(warm.validated)
        }
        (Err(warm), Err(cold)) => {
            assert_eq!(refusal(&warm), refusal(&cold));
            assert_eq!(
                fingerprint(&store.current()),
                before,
                "the last good set stays"
            );
            assert!(store.is_ready());
            Err(refusal(&warm))
        }
        (warm, cold) => panic!(
            "reload {:?} but cold load {:?}",
            warm.map(|l| l.set.policies().count()),
            cold.map(|l| l.set.policies().count())
        ),
    }
}

/// Reloads `store` as [`reload_as_cold`], expecting a refusal with a
/// problem that holds `at` and names `policy`.
fn refused(store: &PolicyStore, at: &str, policy: &str) -> Vec<String> {
    let refused = reload_as_cold(store).unwrap_err();
    assert!(
        refused.iter().any(|p| p.contains(at) && p.contains(policy)),
        "{refused:?}"
    );
    refused
}

#[test]
fn a_reload_validates_what_changed_and_loads_what_a_cold_load_does() {
    let (dir, store, all) = opened();
    let d = dir.path();
    assert_eq!(store.current().validated, all);
    assert_eq!(reload_as_cold(&store), Ok(0), "nothing changed");

    // One policy edited: only it is validated.
    let team_a = TEAM_A.replace("level > 2", "level > 3");
    write(d, "team-a.cedar", &team_a);
    assert_eq!(reload_as_cold(&store), Ok(1));

    // A broken edit is refused, located, and changes nothing in force.
    let broken = TEAM_B.replace(
        "unless { principal in Group::\"team-b\" }",
        "unless { principal.nope }",
    );
    write(d, "team-b.cedar", &broken);
    let broken_once = refused(&store, "team-b.cedar:3:10", "team-b-op");
    // ...and refused again, whatever it left behind.
    assert_eq!(reload_as_cold(&store).unwrap_err(), broken_once);

    // Fixed back: its policy is validated again.
    write(d, "team-b.cedar", TEAM_B);
    assert_eq!(reload_as_cold(&store), Ok(1));

    // A policy moved to another file keeps its id and text: validated
    // before, it is not validated again.
    let moved = "@id(\"team-a-read\")\npermit (principal in Group::\"team-a\", action == Action::\"read\", resource is Dataset);\n";
    write(d, "team-a.cedar", &team_a.replace(moved, ""));
    write(d, "team-b.cedar", &format!("{TEAM_B}\n{moved}"));
    assert_eq!(reload_as_cold(&store), Ok(0));
    // A policy without `@id` is named by its file and place: moved, it is
    // another policy.
    let carol = "permit (principal == User::\"carol\", action == Action::\"team_op\", resource);\n";
    write(
        d,
        "team-a.cedar",
        &team_a.replace(moved, "").replace(carol, ""),
    );
    write(d, "team-c.cedar", carol);
    assert_eq!(reload_as_cold(&store), Ok(1));
    assert!(
        store
            .current()
            .policies_for(&"Action::\"team_op\"".parse().unwrap())
            .policies()
            .any(|p| p.id().to_string() == "team-c.cedar#0")
    );

    // The same id in two files is refused, however both were validated.
    write(d, "team-c.cedar", &format!("{carol}\n{moved}"));
    refused(&store, "duplicate policy id", "team-a-read");
    write(d, "team-c.cedar", carol);
    assert_eq!(reload_as_cold(&store), Ok(0));
}

#[test]
fn a_schema_change_validates_every_policy_again() {
    let (dir, store, all) = opened();
    let d = dir.path();

    // `level` becomes a string: `resource.level > 2`, valid and validated
    // before, is refused now.
    write(
        d,
        "team.cedarschema",
        &TEAM_SCHEMA.replace("Long", "String"),
    );
    refused(&store, "team-a.cedar:", "team-a-op");

    // Any other schema text, even one that means the same: every policy
    // is validated again.
    write(
        d,
        "team.cedarschema",
        &format!("// the teams' own\n{TEAM_SCHEMA}"),
    );
    assert_eq!(reload_as_cold(&store), Ok(all));
    assert_eq!(reload_as_cold(&store), Ok(0));
}
