//! The `countersign` command line as a policy author's CI would run it.

mod common;

use std::process::{Command, Output};

fn countersign(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .current_dir(common::repo())
        .env_remove("COUNTERSIGN_CONFIG")
        .env_remove("COUNTERSIGN_POLICY_DIR")
        .output()
        .unwrap()
}

fn policy_check(args: &[&str]) -> Output {
    countersign(&[&["policy", "check"], args].concat())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn policy_validate_accepts_the_examples_and_locates_problems() {
    let o = countersign(&["policy", "validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).starts_with("ok: "), "{}", text(&o));

    let dir = common::policy_copy();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "\n@id(\"typo\")\npermit (principal, action == Action::\"raed\", resource);\n",
    )
    .unwrap();
    let o = countersign(&["policy", "validate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(out.contains("bad.cedar:3:"), "{out}");
    assert!(out.contains("policy `typo`"), "{out}");
    assert!(out.contains(r#"did you mean `Action::"read"`?"#), "{out}");
}

#[test]
fn policy_check_exit_code_follows_the_decision() {
    let allow = policy_check(&[
        "--method",
        "GET",
        "--path",
        "/v1/datasets/sales",
        "--claims",
        r#"{"sub":"alice","groups":["analysts"]}"#,
    ]);
    assert_eq!(allow.status.code(), Some(0), "{}", text(&allow));
    assert!(text(&allow).contains("policies:  analysts-read-datasets"));

    let deny = policy_check(&["--method", "GET", "--path", "/v1/datasets/sales"]);
    assert_eq!(deny.status.code(), Some(1), "{}", text(&deny));
    assert!(text(&deny).contains("decision:  deny"));
    assert!(text(&deny).contains("principal: Anonymous::\"anonymous\""));

    let bad = policy_check(&["--principal", "alice", "--action", "x", "--resource", "y"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("--principal: expected an entity"),
        "{}",
        text(&bad)
    );
}

#[test]
fn serve_with_a_bad_config_exits_64_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    std::fs::write(&path, "[server]\nlisten = \"localhost\"\n").unwrap();
    let o = countersign(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let out = text(&o);
    assert!(
        out.contains(&format!("{}: field `server.listen`", path.display())),
        "{out}"
    );

    // A policy directory that does not exist is a configuration error. (A
    // directory whose policies do not load starts the sidecar denying
    // everything and not ready: see audit_e2e.)
    let missing = common::repo().join("no-such-policies");
    let o = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("serve")
        .env("COUNTERSIGN_POLICY_DIR", &missing)
        .env("COUNTERSIGN_LISTEN", "127.0.0.1:0")
        .env("COUNTERSIGN_METRICS_LISTEN", "off")
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(
        text(&o).contains(&format!("`{}` does not exist", missing.display())),
        "{}",
        text(&o)
    );
}

#[test]
fn policy_check_reports_a_call_that_needs_an_approval() {
    let o = policy_check(&[
        "--method",
        "POST",
        "--path",
        "/v1/datasets/sales/export",
        "--claims",
        r#"{"sub":"agent-7","groups":["agents"]}"#,
        "--body",
        r#"{"format":"csv"}"#,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("decision:  approval_required"));
    assert!(
        text(&o).contains("approvers: 1 of data-owners (mode deny)"),
        "{}",
        text(&o)
    );
}

#[test]
fn dev_certs_writes_a_ca_a_server_and_approver_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let o = countersign(&[
        "dev-certs",
        dir.path().to_str().unwrap(),
        "--approver",
        "dora",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "dora.pem",
        "dora-key.pem",
    ] {
        let pem = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(pem.starts_with("-----BEGIN "), "{f}");
    }
    assert!(
        text(&o).contains("COUNTERSIGN_ADMIN_TLS_CERT="),
        "{}",
        text(&o)
    );
}

#[test]
fn policy_validate_of_a_teams_own_directory_checks_its_schema_not_the_example_routes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        "entity Team; entity Repo; action push appliesTo { principal: [Team], resource: [Repo] };",
    )
    .unwrap();
    std::fs::write(dir.path().join("p.cedar"), r#"@id("core-pushes") permit (principal == Team::"core", action == Action::"push", resource);"#).unwrap();
    let o = countersign(&["policy", "validate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("route table not checked"), "{}", text(&o));
}

#[test]
fn policy_check_spelled_out_also_reports_approval_required() {
    let ctx = r#"{"http":{"method":"POST","path":"/","host":"h","query":{},"headers":{}},"source":{},"time":0}"#;
    let o = policy_check(&[
        "--principal",
        r#"User::"agent-7""#,
        "--parent",
        r#"Group::"agents""#,
        "--action",
        r#"Action::"export""#,
        "--resource",
        r#"Dataset::"sales""#,
        "--context",
        ctx,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("decision:  approval_required"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("approvers: 1 of data-owners"),
        "{}",
        text(&o)
    );
}
