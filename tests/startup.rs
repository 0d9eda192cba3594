//! What the binary tells a new user trying countersign out, checked as
//! that user meets it: by running it.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{countersign, output_text as text};

/// A configuration file in `dir` holding `body` and the repository's
/// policies (absolute, since a relative `policy.dir` is the file's).
fn config_file(dir: &Path, body: &str) -> String {
    let path = dir.join("countersign.toml");
    let policies = common::repo().join("policies");
    let text = format!("[policy]\ndir = {:?}\n\n{body}", policies.display());
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn policy_validate_counts_routes_and_names_guarded_actions_no_route_maps() {
    // The embedded configuration routes every guarded example action.
    let o = countersign(&["policy", "validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("and the route table (11 routes, 1 MCP endpoint)"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");

    // A file without `[[routes]]`: the export falls to the default route.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let o = countersign(&["policy", "validate", "--config", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("and the route table (0 routes)"), "{out}");
    let warnings: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("warning: guarded action"))
        .collect();
    assert_eq!(warnings.len(), 2, "{out}");
    let (routable, names) = (warnings[0], named(warnings[0]));
    assert_eq!(
        names, "bind_role, delete_deployment, deploy, export, grant_role, rotate, scale",
        "{routable}"
    );
    for action in names.split(", ") {
        assert!(
            routable.contains(&format!("`action = \"{action}\"`")),
            "{routable}"
        );
    }
    assert!(
        routable.contains("decided as the default route's `http_request`"),
        "{routable}"
    );
    assert!(
        routable.contains(&format!("`{config}`, which has no `[[routes]]` at all")),
        "{routable}"
    );
    // A tool's action: a route cannot carry its context, an endpoint can.
    assert_eq!(named(warnings[1]), "export_dataset", "{}", warnings[1]);
    assert!(
        warnings[1].contains("add an `[[mcp]]` endpoint"),
        "{}",
        warnings[1]
    );

    // An MCP endpoint reaches the tools whose calls fit the schema, not a
    // route action such as `export` (its call would get McpServer).
    let mcp = "[[mcp]]\npath = \"/mcp\"\nserver = \"datasets\"\n\n[mcp.resources]\nexport_dataset = 'Dataset::\"{arguments.dataset}\"'\n";
    let config = config_file(dir.path(), mcp);
    let o = countersign(&["policy", "validate", "--config", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("(0 routes, 1 MCP endpoint)"), "{out}");
    let warnings: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("warning: guarded action"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(named(warnings[0]).contains("export"), "{}", warnings[0]);
    assert!(!warnings[0].contains("export_dataset"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("(nor does any MCP tool call)"),
        "{}",
        warnings[0]
    );
}

/// The actions a warning names, before ` is declared` / ` are declared`:
/// `a, b`.
fn named(warning: &str) -> String {
    let list = warning
        .split(" declared in the schema")
        .next()
        .unwrap()
        .trim_start_matches('s')
        .trim_end_matches(" are")
        .trim_end_matches(" is");
    list.replace('`', "").trim().to_owned()
}

#[test]
fn serve_logs_routes_guarded_actions_and_the_unrouted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let sidecar = common::Sidecar::start(
        &common::repo().join("policies"),
        &[("COUNTERSIGN_CONFIG", config.as_str())],
    );
    let log = sidecar.log();
    let listening = log
        .lines()
        .find(|l| l.contains("countersign listening"))
        .unwrap();
    assert!(listening.contains("routes=0"), "{listening}");
    assert!(
        listening.contains("guarded_actions=bind_role,delete_deployment,deploy,export,"),
        "{listening}"
    );
    // Logged right after the line the harness waits for.
    let warned = |log: &str| {
        log.contains("guarded actions `bind_role`") && log.contains("no route maps to them")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !warned(&sidecar.log()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(warned(&sidecar.log()), "{}", sidecar.log());
}

#[tokio::test]
async fn serve_warns_once_of_an_unreachable_store_without_its_password() {
    let port = common::free_port();
    let url = format!("redis://countersign:s3cret-pw@127.0.0.1:{port}/");
    let sidecar = common::Sidecar::start(
        &common::repo().join("policies"),
        &[("COUNTERSIGN_REDIS_URL", url.as_str())],
    );
    let redacted =
        format!("approval store at `redis://countersign:***@127.0.0.1:{port}/` is unreachable: ");
    assert!(sidecar.logged(&redacted).await, "{}", sidecar.log());
    let log = sidecar.log();
    assert!(
        log.contains("guarded calls are refused until it is reachable"),
        "{log}"
    );
    assert!(!log.contains("s3cret-pw"), "{log}");
    assert_eq!(log.matches("is unreachable").count(), 1, "{log}");
}

#[test]
fn policy_dir_errors_name_the_absolute_directory() {
    let missing = common::repo().join("no-such-policies");
    let o = countersign(&["policy", "validate", "no-such-policies"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("`{}` does not exist", missing.display())),
        "{}",
        text(&o)
    );

    let o = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("serve")
        .env_remove("COUNTERSIGN_CONFIG")
        .env("COUNTERSIGN_POLICY_DIR", "no-such-policies")
        .env("COUNTERSIGN_LISTEN", "127.0.0.1:0")
        .env("COUNTERSIGN_METRICS_LISTEN", "off")
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("`{}` does not exist", missing.display())),
        "{}",
        text(&o)
    );
}

#[test]
fn serve_help_lists_the_ports_and_every_environment_override() {
    let o = countersign(&["serve", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout).into_owned();

    // The ports are the embedded configuration's.
    let embedded = countersign::config::Config::load(None, &HashMap::new()).unwrap();
    let probes = embedded.metrics_listen.unwrap().to_string();
    for (addr, what) in [
        (embedded.listen.to_string(), "ext_authz"),
        (probes, "/healthz, /readyz and /metrics"),
    ] {
        let line = help.lines().find(|l| l.contains(&addr));
        assert!(
            line.is_some_and(|l| l.contains(what)),
            "`{addr}` ({what}) not in:\n{help}"
        );
    }
    assert!(
        help.contains("127.0.0.1:9192  the approvers' admin API"),
        "{help}"
    );

    // Every variable the configuration reads, from its table and from the
    // source (a variable read outside the table would be missed otherwise).
    let env_rs = std::fs::read_to_string(common::repo().join("src/config/env.rs")).unwrap();
    let in_source = env_rs
        .split('"')
        .filter(|w| w.starts_with("COUNTERSIGN_") && !w.contains(' '));
    let mut vars: Vec<&str> = countersign::config::overrides().map(|(v, _)| v).collect();
    vars.extend(in_source);
    vars.push("COUNTERSIGN_CONFIG");
    assert!(vars.len() > 10, "{vars:?}");
    for var in vars {
        assert!(
            help.contains(&format!("  {var} ")),
            "`{var}` not in:\n{help}"
        );
    }
}

/// The variables `eval "$(countersign dev-certs ARGS)"` sets, as a shell
/// sees them.
fn evaluated(args: &str) -> HashMap<String, String> {
    let bin = env!("CARGO_BIN_EXE_countersign");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("eval \"$('{bin}' dev-certs {args})\" && env"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("COUNTERSIGN_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn dev_certs_with_groups_sets_the_approvers_for_serve() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("my certs");
    let vars = evaluated(&format!(
        "'{}' --approver dora --approver sam --group dora=data-owners --group sam=security,on-call",
        certs.display()
    ));
    assert_eq!(
        vars["COUNTERSIGN_ADMIN_APPROVERS"],
        "dora=data-owners,sam=security+on-call"
    );
    // What `countersign serve` makes of them.
    let config = countersign::config::Config::load(None, &vars).unwrap();
    let admin = config.admin.expect("the admin API is on");
    let groups: Vec<(&str, Vec<&str>)> = admin
        .approvers
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                a.groups.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("dora", vec!["data-owners"]),
            ("sam", vec!["security", "on-call"])
        ]
    );
    assert_eq!(
        vars["COUNTERSIGN_ADMIN_CERT"],
        certs.join("dora.pem").display().to_string()
    );

    // A group for someone without a certificate, and a malformed one.
    let o = countersign(&[
        "dev-certs",
        dir.path().to_str().unwrap(),
        "--approver",
        "dora",
        "--group",
        "sara=security",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("add `--approver sara`"), "{}", text(&o));
    let o = countersign(&["dev-certs", "x", "--group", "dora"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("expected `NAME=GROUP[,GROUP]` such as `dora=data-owners`, got `dora`"),
        "{}",
        text(&o)
    );
}
