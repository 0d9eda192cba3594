//! `countersign policy validate|check`: what a team runs in its own CI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use cedar_policy::{Context, Entities, Entity, EntityUid, Request};
use clap::{Args, Subcommand};

use super::EXIT_CONFIG;
use crate::config::{Config, ProcessEnv};
use crate::policy::{Decision, Outcome, PolicyError, PolicyStore, Problem, Verdict};
use crate::request::HttpRequest;

/// Exit code of `policy check` for a deny.
pub const EXIT_DENY: u8 = 1;
/// Exit code of `policy check` when the input cannot be evaluated.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of `policy check` for a call that needs an approval.
pub const EXIT_APPROVAL: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate every *.cedar file against the *.cedarschema in a directory.
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
            println!(
                "ok: {} policies in {} files, valid against the schema{}",
                loaded.set.policies().count(),
                loaded.files.len(),
                if with_routes {
                    " and the route table"
                } else {
                    " (route table not checked: pass --config to check yours)"
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
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let config = match load_config(args.config.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_store(&config, args.dir.clone(), true) {
        Ok(s) => s,
        Err((e, dir)) => {
            eprintln!(
                "countersign: cannot load policies from `{}`: {e} ({})",
                dir.display(),
                policy_hint(&e, "--dir")
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // `Ok(None)`: the call needs an approval (already printed).
    let evaluated = if args.principal.is_some() {
        spelled_out(&args, &store)
    } else if args.method.is_some() {
        http(&args, &config, &store)
    } else {
        Err("nothing to decide: give either --principal, --action and --resource (a Cedar request) or --method and --path (an HTTP request); see `countersign policy check --help`".to_owned())
    };
    match evaluated {
        Ok(Some((decision, principal, action, resource))) => {
            print_decision(&decision, &principal, &action, &resource);
            match decision.outcome {
                Outcome::Allow => ExitCode::SUCCESS,
                Outcome::Deny => ExitCode::from(EXIT_DENY),
            }
        }
        Ok(None) => ExitCode::from(EXIT_APPROVAL),
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

type Evaluated = (Decision, EntityUid, EntityUid, EntityUid);

fn uid(flag: &str, v: &str) -> Result<EntityUid, String> {
    EntityUid::from_str(v)
        .map_err(|_| format!(r#"--{flag}: expected an entity such as `User::"alice"`, got `{v}`"#))
}

fn spelled_out(args: &CheckArgs, store: &PolicyStore) -> Result<Option<Evaluated>, String> {
    let principal = uid("principal", args.principal.as_deref().unwrap_or_default())?;
    let action = uid("action", args.action.as_deref().unwrap_or_default())?;
    let resource = uid("resource", args.resource.as_deref().unwrap_or_default())?;
    let parents = args
        .parent
        .iter()
        .map(|p| uid("parent", p))
        .collect::<Result<_, _>>()?;
    let loaded = store.current();
    let context: serde_json::Value = match &args.context {
        None => serde_json::json!({}),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            format!(r#"--context: not JSON ({e}): give an object such as '{{"key":"value"}}'"#)
        })?,
    };
    if !context.is_object() {
        return Err(r#"--context: expected a JSON object such as '{"key":"value"}'"#.into());
    }
    // As the sidecar does: decide without an approval, then with one.
    let request = |granted: bool| -> Result<Request, String> {
        let mut ctx = context.clone();
        if ctx.get("approval").is_none() {
            ctx["approval"] = serde_json::json!({ "granted": granted });
        }
        let ctx = Context::from_json_value(ctx, Some((&loaded.schema, &action)))
            .map_err(|e| {
                format!("--context: does not fit the schema: {e} (give the attributes the schema declares for this action's context)")
            })?;
        Request::new(principal.clone(), action.clone(), resource.clone(), ctx, Some(&loaded.schema)).map_err(|e| {
            format!("the request does not fit the schema: {e} (give --context with the attributes the schema declares for this action, or describe an HTTP request with --method/--path)")
        })
    };
    let entities =
        Entities::from_entities([Entity::new_no_attrs(principal.clone(), parents)], None)
            .map_err(|e| e.to_string())?;
    let decision = match store.decide(request, &entities)? {
        Verdict::Allow(d) | Verdict::Deny(d) => d,
        Verdict::Approvable { denial, params, .. } => {
            print_approvable(&denial, &params, &principal, &action, &resource);
            return Ok(None);
        }
    };
    Ok(Some((decision, principal, action, resource)))
}

fn http(
    args: &CheckArgs,
    config: &Config,
    store: &PolicyStore,
) -> Result<Option<Evaluated>, String> {
    let mut headers = HashMap::new();
    for h in &args.header {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header: expected `name: value`, got `{h}`"))?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let claims = match &args.claims {
        None => None,
        Some(json) => match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => {
                return Err(r#"--claims: expected a JSON object such as '{"sub":"alice"}'"#.into());
            }
        },
    };
    let body = args.body.as_deref().unwrap_or_default();
    if !body.is_empty() {
        headers
            .entry("content-type".into())
            .or_insert_with(|| "application/json".into());
    }
    let req = HttpRequest {
        method: args.method.as_deref().unwrap_or_default(),
        path: args.path.as_deref().unwrap_or_default(),
        host: &args.host,
        scheme: "https",
        headers: &headers,
        body: body.as_bytes(),
        source_address: "127.0.0.1",
        source_principal: args.peer.as_deref().unwrap_or_default(),
        jwt_claims: claims.as_ref(),
        request_id: "",
        time: None,
    };
    let mapped = config
        .mapper
        .map(&req)
        .map_err(|e| {
            format!("the sample request cannot be mapped: {e} (check --method, --path, --header, --claims and --body against the `routes` and `[identity]` of --config)")
        })?;
    let verdict = store
        .decide(|granted| mapped.request(granted), &mapped.entities)
        .map_err(|e| {
            format!("the sample request cannot be mapped: {e} (check --method, --path, --header, --claims and --body against the `routes` and `[identity]` of --config)")
        })?;
    let decision = match verdict {
        Verdict::Allow(d) | Verdict::Deny(d) => d,
        Verdict::Approvable { denial, params, .. } => {
            print_approvable(
                &denial,
                &params,
                &mapped.principal,
                &mapped.action,
                &mapped.resource,
            );
            return Ok(None);
        }
    };
    Ok(Some((
        decision,
        mapped.principal,
        mapped.action,
        mapped.resource,
    )))
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
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
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
