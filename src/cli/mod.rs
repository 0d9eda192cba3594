//! Command-line interface: one file per subcommand.

pub mod approvals;
pub mod audit;
pub mod devcerts;
pub mod policy;
pub mod serve;

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
    about = "Authorization sidecar for Envoy: decides every request with Cedar policies"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ext_authz sidecar (gRPC, with grpc.health.v1 on the same port).
    #[command(
        after_help = "Examples:\n  countersign serve\n  countersign serve --config /etc/countersign/countersign.toml\n  COUNTERSIGN_LISTEN=0.0.0.0:9191 COUNTERSIGN_LOG=debug countersign serve\n\nExit codes: 0 after a clean shutdown, 64 for a bad configuration or a missing policy directory, 1 otherwise.\nA policy set with errors does not stop the sidecar: it denies every check and /readyz says not ready until the files are fixed."
    )]
    Serve {
        /// TOML configuration file; defaults to $COUNTERSIGN_CONFIG, else the embedded default.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Log lines as `text` or `json`; overrides `server.log_format` and $COUNTERSIGN_LOG_FORMAT.
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<crate::config::LogFormat>,
    },
    /// Tools for policy authors: validate a policy directory, try a request.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// For approvers: list, show, approve, deny, revoke and watch approval requests.
    Approvals(approvals::ApprovalsArgs),
    /// The audit trail in Redis: export it as evidence, or follow it live.
    Audit(audit::AuditArgs),
    /// Write a throwaway CA and TLS certificates for the admin API (trying out only).
    DevCerts(devcerts::DevCertsArgs),
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
        Command::Serve { config, log_format } => serve::run(config.as_deref(), log_format),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Approvals(args) => approvals::run(args),
        Command::DevCerts(args) => devcerts::run(args),
        Command::Audit(args) => audit::run(args),
    }
}
