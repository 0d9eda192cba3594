//! Command-line interface: one file per subcommand.

pub mod approvals;
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
        after_help = "Examples:\n  countersign serve\n  countersign serve --config /etc/countersign/countersign.toml\n  COUNTERSIGN_LISTEN=0.0.0.0:9191 COUNTERSIGN_LOG=debug countersign serve\n\nExit codes: 0 after a clean shutdown, 64 for a bad configuration or policy set, 1 otherwise."
    )]
    Serve {
        /// TOML configuration file; defaults to $COUNTERSIGN_CONFIG, else the embedded default.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Tools for policy authors: validate a policy directory, try a request.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// For approvers: list, show, approve, deny, revoke and watch approval requests.
    Approvals(approvals::ApprovalsArgs),
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
        Command::Serve { config } => serve::run(config.as_deref()),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Approvals(args) => approvals::run(args),
        Command::DevCerts(args) => devcerts::run(args),
    }
}
