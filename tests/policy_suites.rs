//! `countersign policy test` as a policy author's CI runs it: the example
//! suite, a failing case, malformed files, and JUnit output read by a
//! JUnit reader written by others (junitparser).

mod common;

use std::path::Path;
use std::process::Command;

use common::{countersign, output_text as text};

/// A test file in its own directory.
fn suite(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cases.toml"), text).unwrap();
    dir
}

const WRONG: &str = r#"
[[case]]
name = "an analyst reads a dataset"
expect = "allow"
[case.request]
method = "GET"
path = "/v1/datasets/sales"
claims = { sub = "alice", groups = ["analysts"] }

[[case]]
name = "an agent's export is allowed outright"
expect = "allow"
policies = ["agents-export-datasets"]
[case.request]
method = "POST"
path = "/v1/datasets/sales/export"
claims = { sub = "ci-agent", groups = ["agents"] }
body = { format = "csv", rows = 10 }
"#;

#[test]
fn the_example_suite_passes_and_decides_by_every_example_policy() {
    let o = countersign(&["policy", "test"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(
        out.contains("ok    policies/tests/datasets.toml:4  an analyst reads a dataset"),
        "{out}"
    );
    // Every example policy decides at least one case.
    assert!(!out.contains("decided no case"), "{out}");
}

#[test]
fn a_failing_case_says_what_differs_and_fails_the_run() {
    let dir = suite(WRONG);
    let o = countersign(&["policy", "test", "--tests", dir.path().to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("ok    "), "{out}");
    assert!(out.contains("1 passed, 1 failed"), "{out}");
    let file = dir.path().join("cases.toml");
    assert!(
        out.contains(&format!(
            "FAIL  {}:10  an agent's export is allowed outright",
            file.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("expected: allow by [agents-export-datasets]"),
        "{out}"
    );
    assert!(
        out.contains("got:      approval_required by [agent-exports-need-approval], approvers [data-owners], quorum 1"),
        "{out}"
    );
    assert!(
        out.contains("- decision: expected allow, got approval_required"),
        "{out}"
    );
    assert!(
        out.contains("missing agents-export-datasets; unexpected agent-exports-need-approval"),
        "{out}"
    );
}

#[test]
fn malformed_test_files_are_refused_with_file_and_line_and_nothing_runs() {
    let cases = [
        // A misspelt key is not silently ignored.
        (
            "[[case]]\nname = \"x\"\nexpcet = \"allow\"\n[case.request]\nmethod = \"GET\"\npath = \"/\"\n",
            ":3:1: unknown field `expcet`, expected one of `name`, `request`",
        ),
        (
            "[[case]]\nname = \"x\"\nexpect = \"permit\"\n[case.request]\nmethod = \"GET\"\npath = \"/\"\n",
            ":3:10: unknown variant `permit`, expected one of `allow`, `deny`, `approval_required`",
        ),
        ("[[case]\nname = 1\n", ":1:"),
        (
            "[[case]]\nname = \"x\"\nexpect = \"deny\"\nquorum = 2\n[case.request]\nmethod = \"GET\"\npath = \"/\"\n",
            ":1: case `x`: `approvers` and `quorum` belong to `expect = \"approval_required\"`",
        ),
        ("# nothing here\n", ": no `[[case]]` in the file"),
    ];
    for (body, message) in cases {
        let dir = suite(body);
        let o = countersign(&["policy", "test", "--tests", dir.path().to_str().unwrap()]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{body}: {out}");
        let file = dir.path().join("cases.toml");
        assert!(
            out.contains(&format!("{}{message}", file.display())),
            "{body}: {out}"
        );
        assert!(out.contains("no case was run"), "{out}");
    }
    let o = countersign(&["policy", "test", "--tests", "/nonexistent/tests"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("cannot read test directory `/nonexistent/tests`"),
        "{}",
        text(&o)
    );
}

#[test]
fn json_output_carries_each_case_with_expected_and_got() {
    let dir = suite(WRONG);
    let o = countersign(&[
        "policy",
        "test",
        "--tests",
        dir.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["passed"], 1);
    assert_eq!(doc["failed"], 1);
    let failed = &doc["cases"][1];
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["line"], 10);
    assert_eq!(failed["got"]["decision"], "approval_required");
    assert_eq!(failed["got"]["approvers"][0], "data-owners");
}

#[test]
fn junit_output_reads_back_with_a_junit_library() {
    let python = common::repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/test.sh, which installs junitparser into .venv"
    );
    let dir = suite(WRONG);
    let o = countersign(&[
        "policy",
        "test",
        "--tests",
        dir.path().to_str().unwrap(),
        "--output",
        "junit",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let xml = dir.path().join("report.xml");
    std::fs::write(&xml, &o.stdout).unwrap();
    let read = Command::new(&python)
        .arg(common::repo().join("tests/policy/read_junit.py"))
        .arg(&xml)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", text(&read));
    let doc: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(doc["tests"], 2, "{doc}");
    assert_eq!(doc["failures"], 1, "{doc}");
    let suite = &doc["suites"][0];
    let file = dir.path().join("cases.toml");
    assert_eq!(suite["name"], file.display().to_string());
    let cases = suite["cases"].as_array().unwrap();
    assert_eq!(cases[0]["results"].as_array().unwrap().len(), 0, "{doc}");
    let failure = &cases[1]["results"][0];
    assert_eq!(failure["kind"], "Failure", "{doc}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("decision: expected allow, got approval_required"),
        "{doc}"
    );
    assert!(
        failure["text"]
            .as_str()
            .unwrap()
            .contains("got:      approval_required"),
        "{doc}"
    );
    assert_eq!(
        cases[1]["classname"],
        format!("{}:10", file.display()),
        "{doc}"
    );
}

#[test]
fn the_suite_runs_against_a_teams_own_directory() {
    // A copy of the examples with one rule tightened: the suite catches it.
    let dir = common::policy_copy();
    let tests = common::repo().join("policies/tests");
    let path = dir.path().join("datasets.cedar");
    let cedar = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        cedar.replace(
            "principal in Group::\"analysts\", action == Action::\"read\"",
            "principal in Group::\"admins\", action == Action::\"read\"",
        ),
    )
    .unwrap();
    let o = countersign(&[
        "policy",
        "test",
        dir.path().to_str().unwrap(),
        "--tests",
        tests.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  "), "{out}");
    assert!(out.contains("an analyst reads a dataset"), "{out}");
    assert!(Path::new(&tests).exists());
}

const SAMPLE: &str = r#"# recorded requests
{"method":"GET","path":"/v1/datasets/sales","claims":{"sub":"alice","groups":["analysts"]}}
{"method":"POST","path":"/v1/datasets/sales/export","claims":{"sub":"dora","groups":["data-owners"]},"body":{"format":"csv","rows":500000}}
{"method":"POST","path":"/v1/datasets/sales/export","claims":{"sub":"ci-agent","groups":["agents"]},"body":{"format":"csv","rows":10}}
{"method":"DELETE","path":"/v1/datasets/sales","claims":{"sub":"root","groups":["admins"]}}
{"method":"DELETE","path":"/v1/datasets/old","claims":{"sub":"root","groups":["admins"]}}
"#;

/// The examples with the row limit tightened tenfold and deletes guarded.
fn tightened() -> tempfile::TempDir {
    let dir = common::policy_copy();
    let guard = r#"
@id("deletes-need-approval")
@approval("deny")
@approvers("data-owners")
forbid (principal, action == Action::"delete", resource)
unless { context.approval.granted };
"#;
    common::edit_policy(dir.path(), "datasets.cedar", |cedar| {
        cedar.replace("context.body.rows > 1000000", "context.body.rows > 100000") + guard
    });
    dir
}

#[test]
fn diff_names_exactly_what_a_tightened_rule_and_a_new_guard_change() {
    let new = tightened();
    let sample = suite("");
    let requests = sample.path().join("requests.jsonl");
    std::fs::write(&requests, SAMPLE).unwrap();
    let args = [
        "policy",
        "diff",
        "--old",
        "policies",
        "--new",
        new.path().to_str().unwrap(),
        "--requests",
        requests.to_str().unwrap(),
    ];
    let o = countersign(&args);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.starts_with("5 requests decided"), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| {
            l.starts_with("allow") || l.starts_with("deny") || l.starts_with("approval_required ")
        })
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                "allow",
                "->",
                "approval_required",
                "2",
                "User::\"root\"",
                "(2)"
            ],
            vec!["allow", "->", "deny", "1", "User::\"dora\"", "(1)"],
        ],
        "{out}"
    );
    assert!(
        out.contains("line 3: POST /v1/datasets/sales/export by User::\"dora\": allow by [data-owners-export] -> deny by [export-row-limit]"),
        "{out}"
    );
    assert_eq!(out.matches("  line ").count(), 3, "{out}");
    assert!(
        out.contains("data-owners                      1 -> 3"),
        "{out}"
    );

    // For a pull request's CI: a change fails the step when asked to.
    let o = countersign(&[&args[..], &["--fail-on-change"]].concat());
    assert_eq!(o.status.code(), Some(1));
    let o = countersign(&[&args[..], &["--output", "json"]].concat());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["requests"], 5);
    assert_eq!(doc["changed"].as_array().unwrap().len(), 3);
    assert_eq!(doc["changed"][0]["change"], "allow -> deny");
    assert_eq!(doc["changed"][1]["new"]["approvers"][0], "data-owners");

    // The same set twice changes nothing.
    let same = diff_args("policies", &requests, &["--fail-on-change"]);
    let same: Vec<&str> = same.iter().map(String::as_str).collect();
    let o = countersign(&same);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no decision changes"), "{}", text(&o));
}

#[test]
fn diff_refuses_a_request_it_cannot_read_naming_the_line() {
    let sample = suite("");
    let requests = sample.path().join("requests.jsonl");
    std::fs::write(
        &requests,
        "{\"method\":\"GET\",\"path\":\"/healthz\"}\n{\"method\":\"GET\",\"pth\":\"/\"}\n",
    )
    .unwrap();
    let args = diff_args("policies", &requests, &[]);
    let o = countersign(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("{}:2: unknown field `pth`", requests.display())),
        "{out}"
    );
}

/// `policy diff` from the examples to `new`.
fn diff_args(new: &str, requests: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "policy",
        "diff",
        "--old",
        "policies",
        "--new",
        new,
        "--requests",
    ]
    .map(String::from)
    .to_vec();
    args.push(requests.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn a_decision_from_an_evaluation_error_fails_a_case_that_does_not_expect_one() {
    let dir = common::policy_copy();
    common::edit_policy(dir.path(), "datasets.cedar", |text| {
        text + "\n@id(\"overflowing\")\npermit (principal, action == Action::\"read\", resource)\nwhen { context.time * 9223372036854775807 > 0 };\n"
    });
    let cases = |errors: &str| {
        format!(
            "[[case]]\nname = \"an analyst reads\"\nexpect = \"deny\"\n{errors}\n[case.request]\nmethod = \"GET\"\npath = \"/v1/datasets/sales\"\nclaims = {{ sub = \"alice\", groups = [\"analysts\"] }}\n"
        )
    };
    let quiet = suite(&cases(""));
    let o = countersign(&[
        "policy",
        "test",
        dir.path().to_str().unwrap(),
        "--tests",
        quiet.path().to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("- evaluation errors: "), "{out}");
    assert!(out.contains("set `errors = true`"), "{out}");
    // A failing policy decides nothing: not counted as covered.
    let uncovered = out
        .lines()
        .find(|l| l.contains("decided no case"))
        .unwrap_or("");
    assert!(uncovered.contains("overflowing"), "{out}");

    let expected = suite(&cases("errors = true"));
    let o = countersign(&[
        "policy",
        "test",
        dir.path().to_str().unwrap(),
        "--tests",
        expected.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

const ENTITY_CASES: &str = r#"
[[case]]
name = "a data owner by the entity data alone exports"
expect = "allow"
policies = ["data-owners-export"]
[case.request]
method = "POST"
path = "/v1/datasets/sales/export"
claims = { sub = "alice" }
body = { format = "csv", rows = 10 }

[[case]]
name = "spelled out, the same membership"
expect = "allow"
[case.request]
principal = 'User::"alice"'
action = 'Action::"export"'
resource = 'Dataset::"sales"'
context = { http = { method = "POST", path = "/", host = "h", query = {}, headers = {} }, source = {}, time = 0 }
"#;

#[test]
fn validate_and_test_read_the_entity_data_beside_the_policies() {
    let dir = common::policy_copy();
    let path = dir.path().to_str().unwrap();
    let data = dir.path().join("entities.json");
    std::fs::write(
        &data,
        r#"[{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": [{"type": "Group", "id": "data-owners"}]}]"#,
    )
    .unwrap();
    let o = countersign(&["policy", "validate", path]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(", 1 entities in 1 files,"),
        "{}",
        text(&o)
    );

    // The tokens carry no group: the membership is the data's.
    let cases = suite(ENTITY_CASES);
    let cases = cases.path().to_str().unwrap();
    let o = countersign(&["policy", "test", path, "--tests", cases]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("2 passed, 0 failed"), "{}", text(&o));
    std::fs::write(&data, "[]").unwrap();
    let o = countersign(&["policy", "test", path, "--tests", cases]);
    assert!(text(&o).contains("0 passed, 2 failed"), "{}", text(&o));

    std::fs::write(
        &data,
        r#"[{"uid": {"type": "User", "id": "alice"}, "attrs": {"salary": 1}, "parents": []}]"#,
    )
    .unwrap();
    let o = countersign(&["policy", "validate", path]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("entities.json: ") && text(&o).contains("`salary`"),
        "{}",
        text(&o)
    );
}
