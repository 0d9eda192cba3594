//! The `countersign` command line as a policy author's CI would run it.

mod common;

use std::process::{Command, Output};

use common::countersign;

fn policy_check(args: &[&str]) -> Output {
    countersign(&[&["policy", "check"], args].concat())
}

use common::output_text as text;

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
        text(&bad).contains("principal: expected an entity"),
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
fn policy_check_refuses_body_keys_that_fold_to_a_declared_attribute() {
    let export = |body: &str| {
        policy_check(&[
            "--method",
            "POST",
            "--path",
            "/v1/datasets/sales/export",
            "--claims",
            r#"{"sub":"dora","groups":["data-owners"]}"#,
            "--body",
            body,
        ])
    };
    // The row limit applies to the rows a data owner asks for.
    let o = export(r#"{"format":"csv","rows":2000000}"#);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Go's encoding/json reads each of these as `rows`; the policy would
    // see `rows` = 10, or no `rows` at all.
    for body in [
        "{\"format\":\"csv\",\"rows\":10,\"row\u{17f}\":2000000}",
        r#"{"format":"csv","ROWS":2000000}"#,
        "{\"format\":\"csv\",\"row\u{17f}\":2000000}",
        "{\"FORMAT\":\"csv\",\"rows\":1}",
    ] {
        let o = export(body);
        assert_eq!(o.status.code(), Some(2), "{body}: {}", text(&o));
        assert!(text(&o).contains("only in case"), "{}", text(&o));
    }
    let o = export(r#"{"format":"csv","rows":10,"note":"q3"}"#);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
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

#[test]
fn completions_print_a_script_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef countersign"),
        ("fish", "complete -c countersign"),
        ("elvish", "edit:completion:arg-completer"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let o = countersign(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("approvals"), "{shell}: {script}");
        assert!(o.stderr.is_empty(), "{shell}: {}", text(&o));
    }
    let o = countersign(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("possible values: bash"), "{}", text(&o));
}

/// The words of a shell command line, quotes removed (no expansion).
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let (mut single, mut double) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => (single, in_word) = (!single, true),
            '"' if !single => (double, in_word) = (!double, true),
            '\\' if !single => {
                word.extend(chars.next());
                in_word = true;
            }
            c if c.is_whitespace() && !single && !double => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!single && !double, "unbalanced quotes in `{line}`");
    if in_word {
        out.push(word);
    }
    out
}

/// The command lines under `Examples:` in a help text, continuation lines
/// joined.
fn examples(help: &str) -> Vec<String> {
    let mut lines = help
        .lines()
        .skip_while(|l| *l != "Examples:")
        .skip(1)
        .take_while(|l| l.starts_with("  "));
    let mut out = Vec::new();
    while let Some(l) = lines.next() {
        let mut l = l.trim().to_owned();
        while let Some(head) = l.strip_suffix('\\') {
            l = format!("{head} {}", lines.next().unwrap_or_default().trim());
        }
        if !l.starts_with('#') {
            out.push(l);
        }
    }
    out
}

/// Every command path, the root (empty) first.
fn command_paths(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(path.clone());
    for sub in cmd.get_subcommands() {
        let mut p = path.clone();
        p.push(sub.get_name().to_owned());
        command_paths(sub, p, out);
    }
}

#[test]
fn every_command_has_examples_in_its_help_and_they_parse() {
    use clap::{CommandFactory, Parser};
    let mut paths = Vec::new();
    command_paths(&countersign::cli::Cli::command(), vec![], &mut paths);
    // Guard against a walk that finds nothing.
    assert!(paths.len() > 15, "{paths:?}");
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = countersign(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        let help = String::from_utf8_lossy(&o.stdout);
        let lines = examples(&help);
        assert!(
            !lines.is_empty(),
            "`countersign {}` has no `Examples:` in its help:\n{help}",
            path.join(" ")
        );
        let mut invocations = 0;
        for line in &lines {
            // `NAME=value countersign ... > file`: the command, as clap sees it.
            let argv: Vec<String> = words(line)
                .into_iter()
                .skip_while(|w| {
                    w.split_once('=').is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    })
                })
                .take_while(|w| !matches!(w.as_str(), ">" | ">>" | "<" | "|" | "2>"))
                .collect();
            if argv.first().map(String::as_str) != Some("countersign") {
                continue;
            }
            if let Err(e) = countersign::cli::Cli::try_parse_from(&argv) {
                panic!(
                    "example `{line}` of `countersign {}` does not parse:\n{e}",
                    path.join(" ")
                );
            }
            if argv[1..].starts_with(&path) {
                invocations += 1;
            }
        }
        assert!(
            invocations > 0,
            "no example of `countersign {}` runs it:\n{help}",
            path.join(" ")
        );
    }
}

#[test]
fn approvals_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_str().unwrap();
    countersign::cli::devcerts::write_all(dir.path(), &["dora".to_owned()]).unwrap();
    let port = common::free_port().to_string();
    let admin = format!("https://127.0.0.1:{port}");
    let run = |args: &[&str]| {
        let o = common::approvals_command(args)
            .args(["--admin", &admin])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let ca = format!("{certs}/ca.pem");
    let (cert, key) = (format!("{certs}/dora.pem"), format!("{certs}/dora-key.pem"));

    let e = run(&["list"]);
    assert!(e.contains("give --ca (or COUNTERSIGN_ADMIN_CA)"), "{e}");
    let e = run(&["list", "--ca", &format!("{certs}/nope.pem")]);
    assert!(
        e.contains("nope.pem` does not exist: check the path"),
        "{e}"
    );
    let e = run(&["list", "--ca", &key]);
    assert!(
        e.contains("holds no PEM certificate") && e.contains("ca.pem"),
        "{e}"
    );
    let e = run(&["list", "--ca", &ca, "--cert", &cert, "--key", &cert]);
    assert!(
        e.contains("--key (or COUNTERSIGN_ADMIN_KEY)") && e.contains("no PEM private key"),
        "{e}"
    );
    let e = run(&["list", "--ca", &ca, "--cert", &cert]);
    assert!(
        e.contains("give --key (or COUNTERSIGN_ADMIN_KEY) as well"),
        "{e}"
    );
    // Nothing listens on the port.
    let e = run(&["list", "--ca", &ca, "--cert", &cert, "--key", &key]);
    assert!(
        e.contains(&format!("cannot reach the admin API at `{admin}`"))
            && e.contains("`admin.listen`"),
        "{e}"
    );
    // One line, as the others.
    assert!(
        e.starts_with("countersign: ") && e.lines().count() == 1,
        "{e}"
    );
    // A bad argument: clap names the values.
    let o = countersign(&["approvals", "list", "--status", "waiting"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("possible values: pending"),
        "{}",
        text(&o)
    );
}

/// A sidecar with the admin API and one pending request whose resource
/// is long; `(redis, pki, policies, sidecar, id)`.
async fn sidecar_with_a_request() -> (
    common::Redis,
    common::tls::Pki,
    tempfile::TempDir,
    common::Sidecar,
    String,
) {
    let (redis, pki, policies, sidecar, _, id) =
        sidecar_with(|new| new.info.resource = LONG_RESOURCE.into()).await;
    (redis, pki, policies, sidecar, id)
}

/// A sidecar with the admin API and one pending request, changed by `edit`
/// before it is opened; `(redis, pki, policies, sidecar, store, id)`.
async fn sidecar_with(
    edit: impl FnOnce(&mut countersign::approval::NewApproval),
) -> (
    common::Redis,
    common::tls::Pki,
    tempfile::TempDir,
    common::Sidecar,
    countersign::approval::RedisStore,
    String,
) {
    #[allow(unused_imports)]
    use countersign::approval::ApprovalStore;
    use countersign::approval::store::CheckRef;
    let redis = common::Redis::start().await;
    let pki = common::tls::Pki::new();
    let policies = common::policy_copy();
    let redis_table = format!("url = \"{}\"\nprefix = \"cli:\"", redis.url());
    let config = common::stack::config(pki.dir(), &redis_table, &pki);
    let sidecar = common::Sidecar::start(
        policies.path(),
        &[("COUNTERSIGN_CONFIG", config.to_str().unwrap())],
    );
    // The sidecar's own store settings, to open a request as a check would.
    let loaded =
        countersign::config::Config::load(Some(&config), &std::collections::HashMap::new())
            .unwrap();
    let store = common::services::redis_store(loaded.store);
    let mut new = common::export_request("cli-fp", &["data-owners"], Default::default());
    edit(&mut new);
    let id = store
        .open(&new, CheckRef::default())
        .await
        .unwrap()
        .approval
        .id;
    (redis, pki, policies, sidecar, store, id)
}

const LONG_RESOURCE: &str = r#"Dataset::"quarterly-sales-by-region-and-product-line""#;

/// (exit code, stdout+stderr), with a terminal's `\r\n` as `\n`.
fn run(mut cmd: Command) -> (i32, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        text(&o).replace("\r\n", "\n"),
    )
}

/// A list table's row for `id`, and whether each entity shows whole or cut
/// with `…`.
fn assert_row_cut_to_fit(out: &str, id: &str, width: usize) {
    for line in out.lines() {
        assert!(
            line.chars().count() <= width,
            "{} > {width}: `{line}`\n{out}",
            line.chars().count()
        );
    }
    let row = out
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("pending"), "{row}");
    for full in [r#"User::"agent-7""#, r#"Action::"export""#, LONG_RESOURCE] {
        let cut = row.split("  ").map(str::trim).find(|cell| {
            *cell == full
                || cell
                    .strip_suffix('…')
                    .is_some_and(|head| !head.is_empty() && full.starts_with(head))
        });
        assert!(
            cut.is_some(),
            "`{full}` neither whole nor cut with `…` in `{row}`"
        );
    }
    assert!(row.contains('…'), "{row}");
}

#[tokio::test]
async fn approvals_list_fits_columns_and_colours_only_a_terminal_without_no_color() {
    let (_redis, pki, _policies, sidecar, id) = sidecar_with_a_request().await;
    let list = |args: &[&str]| common::approvals_cli(&sidecar, &pki, "dora", args);

    // Piped, no COLUMNS: every cell whole, no colour.
    let (code, out) = run(list(&["list"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(LONG_RESOURCE) && !out.contains('…'), "{out}");
    assert!(!out.contains('\x1b'), "{out}");

    // Piped with COLUMNS=60: no line longer, the entities cut with `…`,
    // the id whole.
    let mut cmd = list(&["list"]);
    cmd.env("COLUMNS", "60");
    let (code, out) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert_row_cut_to_fit(&out, &id, 60);

    // JSON is never cut.
    let mut cmd = list(&["list", "--output", "json"]);
    cmd.env("COLUMNS", "60");
    let (code, out) = run(cmd);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["resource"], LONG_RESOURCE);

    // On a terminal (of unknown size: 80 columns), coloured...
    let (code, out) = run(common::in_terminal(&list(&["list"])));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\x1b[33mpending\x1b[0m"), "{out:?}");
    let plain = out.replace("\x1b[33m", "").replace("\x1b[0m", "");
    assert_row_cut_to_fit(&plain, &id, 80);

    // ...but not with NO_COLOR set, nor in JSON.
    let mut cmd = list(&["list"]);
    cmd.env("NO_COLOR", "1").env("COLUMNS", "60");
    let (code, out) = run(common::in_terminal(&cmd));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains('\x1b'), "{out:?}");
    assert_row_cut_to_fit(&out, &id, 60);
    let mut cmd = list(&["show", &id]);
    cmd.env("NO_COLOR", "1");
    let (code, out) = run(common::in_terminal(&cmd));
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains('\x1b') && out.contains(LONG_RESOURCE),
        "{out:?}"
    );
    let (code, out) = run(common::in_terminal(&list(&["list", "--output", "json"])));
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains('\x1b') && out.contains("quarterly-sales"),
        "{out:?}"
    );

    // An id that does not exist: where to look.
    let (code, out) = run(list(&["approve", "ap-0000000000000000", "--reason", "ok"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("countersign approvals list --status all"),
        "{out}"
    );
}

/// What an agent put in a parameter, and what a first approver put in a
/// reason, reach the next approver's terminal as text: no escape sequence
/// (CSI, OSC), bidi override or line break takes effect.
#[tokio::test]
async fn approvals_show_and_list_print_hostile_parameters_and_reasons_as_text() {
    #[allow(unused_imports)]
    use countersign::approval::ApprovalStore;
    let hostile = [
        ("body.destination", "s3://evil\u{1b}[2K\rs3://reports"),
        (
            "body.link",
            "\u{1b}]8;;https://evil.example\u{7}report\u{1b}]8;;\u{7}",
        ),
        ("body.owner", "alice\u{202e}nimda\u{2066}x\u{2069}\u{200f}"),
        ("body.rows", "10\nparameter       body.limit = 10"),
        (
            "body.format",
            "csv\u{2028}parameter       body.safe = yes\u{61c}",
        ),
    ];
    let (_redis, pki, _policies, sidecar, store, id) = sidecar_with(|new| {
        new.params.quorum = 2;
        new.info.quorum = 2;
        new.info.resource = "Dataset::\"sales\u{9b}31m\"".into();
        new.info.parameters = hostile
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    })
    .await;
    // The first of two approvers leaves a reason that would erase the line
    // above it and print a benign one instead.
    store
        .vote(
            &id,
            "erin".into(),
            countersign::approval::Ruling::Approve,
            "ok\u{1b}[1A\u{1b}[2K\rdecision        approve by security\u{2029}",
        )
        .await
        .unwrap();
    let cli = |args: &[&str]| common::approvals_cli(&sidecar, &pki, "dora", args);
    for out in [
        run(cli(&["show", &id])),
        run(common::in_terminal(&cli(&["show", &id]))),
        run(cli(&["list"])),
    ]
    .map(|(code, out)| {
        assert_eq!(code, 0, "{out}");
        // The status's own colour on a terminal is the only escape.
        out.replace("\x1b[33m", "").replace("\x1b[0m", "")
    }) {
        for raw in [
            '\u{1b}', '\u{9b}', '\u{7}', '\u{202e}', '\u{2066}', '\u{2028}', '\u{2029}', '\u{61c}',
        ] {
            assert!(!out.contains(raw), "{:?} in {out:?}", raw);
        }
        assert!(out.contains(r#"Dataset::"sales\u{9b}31m""#), "{out}");
    }
    let (_, show) = run(cli(&["show", &id]));
    // One line per parameter and one per decision: none forged.
    let count = |head: &str| show.lines().filter(|l| l.starts_with(head)).count();
    assert_eq!(count("parameter "), hostile.len(), "{show}");
    assert_eq!(count("decision "), 1, "{show}");
    for shown in [
        r"body.destination = s3://evil\u{1b}[2K\u{d}s3://reports",
        r"body.link = \u{1b}]8;;https://evil.example\u{7}report\u{1b}]8;;\u{7}",
        r"body.owner = alice\u{202e}nimda\u{2066}x\u{2069}\u{200f}",
        r"body.rows = 10\u{a}parameter       body.limit = 10",
        r"body.format = csv\u{2028}parameter       body.safe = yes\u{61c}",
        r"by erin at ",
        r": ok\u{1b}[1A\u{1b}[2K\u{d}decision        approve by security\u{2029}",
    ] {
        assert!(show.contains(shown), "`{shown}` not in {show}");
    }
}
