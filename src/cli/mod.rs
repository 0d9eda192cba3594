//! Command-line interface: one file per subcommand.

pub mod approvals;
pub mod audit;
pub mod completions;
pub mod devcerts;
pub mod login;
pub mod policy;
pub mod serve;
pub mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a configuration or policy set that cannot be used
/// (EX_USAGE in sysexits.h), so supervisors can tell it from a crash.
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "countersign",
    version,
    about = "Authorization sidecar for Envoy: decides every request with Cedar policies",
    after_help = "Examples:
  countersign serve --config /etc/countersign/countersign.toml
  countersign policy validate ./policies
  countersign login
  countersign approvals list
  countersign completions bash > ~/.local/share/bash-completion/completions/countersign

Run `countersign COMMAND --help` for the options and examples of each command."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ext_authz sidecar (gRPC, with grpc.health.v1 on the same port).
    #[command(after_help = serve::after_help())]
    Serve {
        /// TOML configuration file; defaults to $COUNTERSIGN_CONFIG, else the embedded default.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Log lines as `text` or `json`; overrides `server.log_format` and $COUNTERSIGN_LOG_FORMAT.
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<crate::config::LogFormat>,
        /// Append a sample of checks to FILE as redacted requests (JSON lines) for `policy diff --requests`.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// The share of checks --record writes, above 0 and at most 1.
        #[arg(long, value_name = "RATE", default_value_t = 0.01, requires = "record", value_parser = record_rate)]
        record_rate: f64,
    },
    /// Tools for policy authors: validate a policy directory, try a request.
    #[command(
        subcommand,
        after_help = r#"Examples:
  countersign policy validate ./policies
  countersign policy check --method GET --path /v1/datasets/sales \
      --claims '{"sub":"alice","groups":["analysts"]}'

Run `countersign policy validate --help` or `countersign policy check --help` for more."#
    )]
    Policy(policy::PolicyCommand),
    /// For approvers: list, show, approve, deny, revoke and watch approval requests.
    Approvals(approvals::ApprovalsArgs),
    /// For approvers: sign in to the admin API with its identity provider.
    Login(login::LoginArgs),
    /// Forget the sign-in of `countersign login` (and revoke its refresh token).
    Logout(login::LogoutArgs),
    /// Show who the admin API takes you for, and how you signed in.
    Whoami(login::WhoamiArgs),
    /// The audit trail in Redis: export it as evidence, or follow it live.
    Audit(audit::AuditArgs),
    /// Write a throwaway CA and TLS certificates for the admin API (trying out only).
    DevCerts(devcerts::DevCertsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
}

/// A share of checks: above 0, at most 1.
fn record_rate(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "expected a share above 0 and at most 1, such as `0.01` (1 %), got `{v}`"
        )),
    }
}

/// A configuration that cannot be loaded, as a sentence that says what to
/// do about it.
fn config_problem(e: &crate::config::ConfigError) -> String {
    use crate::config::ConfigError;
    let hint = match e {
        ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "check the path given with --config or COUNTERSIGN_CONFIG"
        }
        ConfigError::Read { .. } => {
            "check that the file given with --config or COUNTERSIGN_CONFIG is readable by you"
        }
        ConfigError::Syntax { .. } | ConfigError::Invalid { .. } => {
            "fix it there; `countersign policy validate --config FILE` checks a whole configuration"
        }
    };
    format!("invalid configuration: {e} ({hint})")
}

/// A tokio runtime for a subcommand, or the exit code saying why not.
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("countersign: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve {
            config,
            log_format,
            record,
            record_rate,
        } => {
            let record = record.map(|path| crate::audit::record::RecordConfig {
                path,
                rate: record_rate,
            });
            serve::run(config.as_deref(), log_format, record)
        }
        Command::Policy(cmd) => policy::run(cmd),
        Command::Approvals(args) => approvals::run(args),
        Command::Login(args) => login::run_login(args),
        Command::Logout(args) => login::run_logout(args),
        Command::Whoami(args) => login::run_whoami(args),
        Command::DevCerts(args) => devcerts::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Completions(args) => completions::run(args),
    }
}
