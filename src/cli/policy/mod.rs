//! `countersign policy validate|check|test|diff`: what a team runs in its own CI.

mod diff;
mod report;
mod sample;
mod suite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cedar_policy::EntityUid;
use clap::{Args, Subcommand};

use super::EXIT_CONFIG;
use crate::config::{Config, ProcessEnv};
use crate::policy::{Decision, PolicyError, PolicyStore, Problem, Verdict};
use crate::request::RouteCoverage;
pub use sample::{Body, Decided, Sample};

/// Exit code of `policy check` for a deny.
pub const EXIT_DENY: u8 = 1;
/// Exit code of `policy check` when the input cannot be evaluated.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of `policy check` for a call that needs an approval.
pub const EXIT_APPROVAL: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate every *.cedar file, and the entity data (entities.json, *.entities.json), against the *.cedarschema in a directory.
    #[command(after_help = "Examples:
  countersign policy validate
  countersign policy validate ./policies --config countersign.toml

Exit codes: 0 valid, 1 invalid (each problem printed as file:line:col), 64 bad configuration.")]
    Validate {
        /// Policy directory; defaults to the configured one (./policies).
        dir: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Decide one request and print the decision and the determining policies.
    #[command(after_help = r#"Examples:
  # a Cedar request, spelled out
  countersign policy check --principal 'User::"alice"' --parent 'Group::"analysts"' \
      --action 'Action::"read"' --resource 'Dataset::"sales"'
  # a sample HTTP request, mapped by the configured route table
  countersign policy check --method POST --path /v1/datasets/sales/export \
      --claims '{"sub":"alice","groups":["data-owners"]}' --body '{"rows":10}'

Exit codes: 0 allow, 1 deny, 2 input that cannot be evaluated, 3 approval required, 64 bad configuration or policies."#)]
    Check(Box<CheckArgs>),
    /// Run the policy test suite: cases in `tests/*.toml` beside the policies.
    #[command(after_help = r#"Examples:
  countersign policy test
  countersign policy test ./policies --output junit > policy-tests.xml
  countersign policy test --tests ./policies/tests/exports.toml --output json

A test file holds `[[case]]` tables: a `name`, an `expect` (allow, deny or
approval_required), optionally the exact `policies` that decide, `approvers`,
`quorum` and text the `reason` contains, and a `[case.request]`: `method`,
`path`, `claims`, `headers`, `body`, `peer`, `host` (an HTTP request the
route table maps) or `principal`, `parents`, `action`, `resource`, `context`
(a Cedar request). See docs/rollout.md.

Exit codes: 0 every case passed, 1 a case failed, 2 a test file cannot be read, 64 bad configuration or policies."#)]
    Test(TestArgs),
    /// Decide a sample of requests with two policy sets and show what changes.
    #[command(after_help = r#"Examples:
  countersign policy diff --old ./policies-main --new ./policies --requests requests.jsonl
  countersign policy diff --old ./policies-main --new ./policies --requests recorded.jsonl --fail-on-change

Each line of the requests file is one JSON request, as in a test case's
`[case.request]`: {"method":"POST","path":"/v1/datasets/sales/export",
"claims":{"sub":"ci-agent","groups":["agents"]},"body":{"rows":10}}, or
{"principal":"User::\"alice\"","action":"Action::\"read\"","resource":"Dataset::\"sales\""}.
`serve --record FILE` writes such lines from live traffic.

Exit codes: 0 compared (1 with --fail-on-change when a decision changes), 2 a request cannot be read or decided (unless --skip-undecidable), 64 bad configuration or policies."#)]
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The policy set in force (e.g. a checkout of main).
    #[arg(long, value_name = "DIR")]
    old: PathBuf,
    /// The proposed policy set.
    #[arg(long, value_name = "DIR")]
    new: PathBuf,
    /// Requests to decide, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    requests: PathBuf,
    /// `text` (a table) or `json`.
    #[arg(long, value_enum, default_value_t = diff::Output::Text)]
    output: diff::Output,
    /// Exit 1 when any decision changes (for a policy pull request's CI).
    #[arg(long)]
    fail_on_change: bool,
    /// Leave out (and count) requests either set cannot decide, instead of stopping.
    #[arg(long)]
    skip_undecidable: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy directory; defaults to the configured one (./policies).
    dir: Option<PathBuf>,
    /// Test file, or directory of `*.toml` test files; defaults to DIR/tests.
    #[arg(long, value_name = "PATH")]
    tests: Option<PathBuf>,
    /// `text` for people, `json`, or `junit` (JUnit XML) for CI systems.
    #[arg(long, value_enum, default_value_t = report::Output::Text)]
    output: report::Output,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// TOML configuration file (route table, identity settings); defaults to $COUNTERSIGN_CONFIG, else the embedded default.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Policy directory; defaults to the configured one.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Principal, e.g. 'User::"alice"' (spelled-out mode).
    #[arg(long, requires_all = ["action", "resource"], conflicts_with_all = ["method", "path"])]
    principal: Option<String>,
    /// Parent of the principal, e.g. 'Group::"analysts"'; repeatable.
    #[arg(long, requires = "principal")]
    parent: Vec<String>,
    /// Action, e.g. 'Action::"export"'.
    #[arg(long, requires = "principal")]
    action: Option<String>,
    /// Resource, e.g. 'Dataset::"sales"'.
    #[arg(long, requires = "principal")]
    resource: Option<String>,
    /// Context as JSON, checked against the schema.
    #[arg(long, requires = "principal", value_name = "JSON")]
    context: Option<String>,

    /// HTTP method of a sample request (HTTP mode).
    #[arg(long, requires = "path")]
    method: Option<String>,
    /// Path (with query) of a sample request.
    #[arg(long, requires = "method")]
    path: Option<String>,
    /// Request header 'name: value'; repeatable.
    #[arg(long, value_name = "NAME: VALUE")]
    header: Vec<String>,
    /// Verified JWT claims as JSON, as Envoy's jwt_authn would pass them.
    #[arg(long, value_name = "JSON")]
    claims: Option<String>,
    /// mTLS peer principal, e.g. spiffe://mesh/ns/jobs/sa/exporter.
    #[arg(long, value_name = "ID")]
    peer: Option<String>,
    /// Request body.
    #[arg(long, value_name = "BODY")]
    body: Option<String>,
    /// Host header of the sample request.
    #[arg(long, default_value = "localhost")]
    host: String,
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Validate { dir, config } => validate(dir, config.config.as_deref()),
        PolicyCommand::Check(args) => check(*args),
        PolicyCommand::Test(args) => test(args),
        PolicyCommand::Diff(args) => policy_diff(args),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(path, &ProcessEnv).map_err(|e| {
        eprintln!("countersign: {}", super::config_problem(&e));
        ExitCode::from(EXIT_CONFIG)
    })
}

fn open_store(
    config: &Config,
    dir: Option<PathBuf>,
    with_routes: bool,
) -> Result<PolicyStore, (PolicyError, PathBuf)> {
    let dir = dir.unwrap_or_else(|| config.policy_dir.clone());
    let probes = match config.mapper.probes() {
        Ok(_) if !with_routes => vec![],
        Ok(p) => p,
        Err(e) => {
            let problem = Problem {
                file: config.origin.clone().into(),
                line: None,
                policy: None,
                message: e.to_string(),
            };
            return Err((PolicyError::Invalid(vec![problem]), dir));
        }
    };
    PolicyStore::open(&dir, probes).map_err(|e| (e, dir))
}

fn validate(dir: Option<PathBuf>, config_path: Option<&Path>) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A team validating its own directory has its own routes: the embedded
    // example's route table would only produce unrelated errors.
    let with_routes =
        dir.is_none() || config_path.is_some() || std::env::var_os("COUNTERSIGN_CONFIG").is_some();
    match open_store(&config, dir, with_routes) {
        Ok(store) => {
            let loaded = store.current();
            for w in &loaded.warnings {
                println!("warning: {w}");
            }
            let routes = with_routes.then(|| {
                RouteCoverage::of(&config.mapper, &loaded).with_authzen(config.authzen.is_some())
            });
            for w in routes.iter().flat_map(|r| r.warnings(&config.origin)) {
                println!("warning: {w}");
            }
            let rollout = &loaded.rollout;
            let marked = match (rollout.shadow.len(), rollout.always.len()) {
                (0, 0) => String::new(),
                (s, a) => format!(" ({s} in shadow, {a} always enforced)"),
            };
            let directory = &loaded.directory;
            let entities = match directory.files().len() {
                0 => String::new(),
                n => format!(", {} entities in {n} files", directory.len()),
            };
            println!(
                "ok: {} policies{marked} in {} files{entities}, valid against the schema{}",
                loaded.set.policies().count(),
                loaded.files.len(),
                match routes {
                    Some(r) => format!(" and the route table ({})", r.counted()),
                    None => " (route table not checked: pass --config to check yours)".to_owned(),
                }
            );
            ExitCode::SUCCESS
        }
        Err((PolicyError::Invalid(problems), _)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s) found", problems.len());
            ExitCode::FAILURE
        }
        Err((e, _)) => {
            eprintln!("countersign: {e} ({})", policy_hint(&e, "DIR"));
            ExitCode::FAILURE
        }
    }
}

/// What to do about policies that do not load; `flag` is how the command
/// takes a policy directory.
fn policy_hint(e: &PolicyError, flag: &str) -> String {
    match e {
        PolicyError::NotADirectory(_) => format!(
            "give the directory of your *.cedar files as {flag}, or set `policy.dir` in --config"
        ),
        PolicyError::Io { .. } => "check that the file is readable by you".to_owned(),
        PolicyError::NoSchema(_) => {
            "add the *.cedarschema file the policies are written against to that directory"
                .to_owned()
        }
        PolicyError::NoPolicies(_) => {
            format!("add *.cedar files there, or give the right directory as {flag}")
        }
        PolicyError::Invalid(_) => {
            "fix them; `countersign policy validate DIR` lists every problem as file:line:col"
                .to_owned()
        }
        PolicyError::Changing(_) => "run it again once the files are written".to_owned(),
    }
}

/// The configuration and its policies (or those in `dir`), with the route
/// table checked; `flag` is how the command takes a policy directory.
fn config_and_policies(
    config: &ConfigArg,
    dir: Option<PathBuf>,
    flag: &str,
) -> Result<(Config, PolicyStore), ExitCode> {
    let config = load_config(config.config.as_deref())?;
    let store = policies(&config, dir, flag)?;
    Ok((config, store))
}

/// The policies in `dir` (default: the configured ones), with the route
/// table checked; a set that does not load is reported.
fn policies(config: &Config, dir: Option<PathBuf>, flag: &str) -> Result<PolicyStore, ExitCode> {
    open_store(config, dir, true).map_err(|(e, dir)| {
        // Only problems in the files leave the directory unnamed.
        let from = match &e {
            PolicyError::Invalid(_) => format!(
                " from `{}`",
                std::path::absolute(&dir).unwrap_or(dir).display()
            ),
            _ => String::new(),
        };
        eprintln!(
            "countersign: cannot load policies{from}: {e} ({})",
            policy_hint(&e, flag)
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(args: CheckArgs) -> ExitCode {
    let (config, store) = match config_and_policies(&args.config, args.dir.clone(), "--dir") {
        Ok(both) => both,
        Err(code) => return code,
    };
    let sample = match args.sample() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("countersign: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if sample.principal.is_none() && sample.method.is_none() {
        eprintln!(
            "countersign: nothing to decide: give either --principal, --action and --resource (a Cedar request) or --method and --path (an HTTP request); see `countersign policy check --help`"
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    match sample.decide(&config, &store, false) {
        Ok(Decided {
            verdict,
            principal,
            action,
            resource,
        }) => match verdict {
            Verdict::Allow(d) => {
                print_decision(&d, &principal, &action, &resource);
                ExitCode::SUCCESS
            }
            Verdict::Deny(d) => {
                print_decision(&d, &principal, &action, &resource);
                ExitCode::from(EXIT_DENY)
            }
            Verdict::Approvable { denial, params } => {
                print_approvable(&denial, &params, &principal, &action, &resource);
                ExitCode::from(EXIT_APPROVAL)
            }
        },
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

impl CheckArgs {
    /// The flags as a [`Sample`].
    fn sample(&self) -> Result<Sample, String> {
        let mut headers = BTreeMap::new();
        for h in &self.header {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--header: expected `name: value`, got `{h}`"))?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let claims = match &self.claims {
            None => None,
            Some(json) => match serde_json::from_str(json) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                _ => {
                    return Err(
                        r#"--claims: expected a JSON object such as '{"sub":"alice"}'"#.into(),
                    );
                }
            },
        };
        let context = match &self.context {
            None => None,
            Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                format!(r#"--context: not JSON ({e}): give an object such as '{{"key":"value"}}'"#)
            })?),
        };
        Ok(Sample {
            principal: self.principal.clone(),
            parents: self.parent.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            context,
            method: self.method.clone(),
            path: self.path.clone(),
            host: Some(self.host.clone()),
            headers,
            claims,
            peer: self.peer.clone(),
            body: self.body.clone().map(Body::Text),
        })
    }
}

fn test(args: TestArgs) -> ExitCode {
    let (config, store) = match config_and_policies(&args.config, args.dir.clone(), "DIR") {
        Ok(both) => both,
        Err(code) => return code,
    };
    let tests = args.tests.unwrap_or_else(|| store.dir().join("tests"));
    let loaded = suite::files(&tests)
        .map_err(|m| vec![m])
        .and_then(|f| suite::load(&f));
    let suite = match loaded {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}", p.0);
            }
            eprintln!(
                "countersign: {} problem(s) in the test files; no case was run",
                problems.len()
            );
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let results = suite::run(suite, &config, &store);
    let uncovered = suite::uncovered(&results, &store);
    print!("{}", report::render(args.output, &results, &uncovered));
    if results.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn policy_diff(args: DiffArgs) -> ExitCode {
    let (config, old) = match config_and_policies(&args.config, Some(args.old.clone()), "--old") {
        Ok(both) => both,
        Err(code) => return code,
    };
    let new = match policies(&config, Some(args.new.clone()), "--new") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let requests = match diff::read_requests(&args.requests) {
        Ok(r) => r,
        Err(bad) => {
            for b in &bad {
                eprintln!("{}", b.0);
            }
            eprintln!("countersign: {} request(s) cannot be read", bad.len());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let (compared, bad) = diff::compare(&requests, &config, &old, &new, &args.requests);
    for b in &bad {
        eprintln!("{}", b.0);
    }
    if !bad.is_empty() {
        if !args.skip_undecidable {
            eprintln!(
                "countersign: {} request(s) cannot be decided (--skip-undecidable leaves them out)",
                bad.len()
            );
            return ExitCode::from(EXIT_BAD_INPUT);
        }
        eprintln!(
            "countersign: {} request(s) left out: they cannot be decided",
            bad.len()
        );
    }
    match args.output {
        diff::Output::Json => print!("{}", diff::json(&compared, &args.old, &args.new)),
        diff::Output::Text => print!("{}", diff::text(&compared, &args.old, &args.new)),
    }
    if args.fail_on_change && compared.iter().any(|c| c.change().is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_approvable(
    denial: &Decision,
    params: &crate::approval::ApprovalParams,
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
) {
    println!("decision:  approval_required");
    println!("reason:    {}", denial.reason());
    let groups = if params.approver_groups.is_empty() {
        "any approver Cedar permits".to_owned()
    } else {
        params.approver_groups.join(", ")
    };
    println!(
        "approvers: {} of {groups} (mode {})",
        params.quorum,
        params.mode.as_str()
    );
    println!("principal: {principal}");
    println!("action:    {action}");
    println!("resource:  {resource}");
}

fn print_decision(d: &Decision, principal: &EntityUid, action: &EntityUid, resource: &EntityUid) {
    let word = match d.outcome {
        crate::policy::Outcome::Allow => "allow",
        crate::policy::Outcome::Deny => "deny",
    };
    println!("decision:  {word}");
    println!("reason:    {}", d.reason());
    println!(
        "policies:  {}",
        if d.policies.is_empty() {
            "(none)".to_owned()
        } else {
            d.policies.join(", ")
        }
    );
    for e in &d.errors {
        println!("error:     {e}");
    }
    println!("principal: {principal}");
    println!("action:    {action}");
    println!("resource:  {resource}");
}
