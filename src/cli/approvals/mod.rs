//! `countersign approvals ...`: the approvers' client for the admin API.
//!
//! - this file: the arguments, and `run`.
//! - `connect.rs`: the connection flags (shared with `login`, `logout` and
//!   `whoami`), TLS to the admin API, the PEM files, which credentials to
//!   present, and errors that say which flag or variable to fix.
//! - `commands.rs`: one call per subcommand.
//! - `render.rs`: tables, one request in full, `watch` lines, JSON.

mod commands;
pub(crate) mod connect;
mod render;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use connect::Connection;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign approvals list
  countersign approvals approve ap-5f1c2e9a0b7d4c31 --reason 'quarterly report, ticket OPS-42'
  countersign approvals list --admin https://127.0.0.1:9192 --ca dev-certs/ca.pem \\
      --cert dev-certs/dora.pem --key dev-certs/dora-key.pem

Credentials, first that is given: --cert and --key, then --token, then the sign-in that
`countersign login` cached for this --admin (renewed with its refresh token when it expires
within 30 s). With none of them: `countersign login`.

Connection flags may be set once in the environment instead (COUNTERSIGN_ADMIN_ADDR,
COUNTERSIGN_ADMIN_CA, COUNTERSIGN_ADMIN_CERT, COUNTERSIGN_ADMIN_KEY, COUNTERSIGN_ADMIN_TOKEN,
COUNTERSIGN_IDP_CA); `countersign dev-certs` prints them for its certificates.

Tables fit the terminal: when stdout is a terminal, no line is longer than its width
(or COLUMNS, if set), the widest free-text cells ending in `…`. When stdout is not a
terminal, cells are cut only if COLUMNS is set. Colour only on a terminal, and not when
NO_COLOR is set. `--output json` is never cut nor coloured: use it in scripts.")]
pub struct ApprovalsArgs {
    #[command(flatten)]
    conn: Connection,
    /// Output format: `table` for people, `json` for scripts (never cut, never coloured).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum ApprovalsCommand {
    /// List approval requests, newest first.
    #[command(after_help = r#"Examples:
  countersign approvals list
  countersign approvals list --status all --action 'Action::"export"' --output json
  COLUMNS=100 countersign approvals list --principal 'User::"agent-7"' | less

The table fits the terminal's width (COLUMNS overrides it); piped, it is cut only if
COLUMNS is set. Use --output json for scripts."#)]
    List {
        /// pending, approved, denied, revoked, consumed, expired or all.
        #[arg(
            long,
            default_value = "pending",
            value_parser = ["pending", "approved", "denied", "revoked", "consumed", "expired", "all"]
        )]
        status: String,
        /// Only this principal, e.g. 'User::"agent-7"'.
        #[arg(long)]
        principal: Option<String>,
        /// Only this action, e.g. 'Action::"export"'.
        #[arg(long)]
        action: Option<String>,
        /// At most this many requests.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one request in full.
    #[command(after_help = "Examples:
  countersign approvals show ap-5f1c2e9a0b7d4c31
  countersign approvals show ap-5f1c2e9a0b7d4c31 --output json

Every value is printed in full, whatever the width.")]
    Show {
        /// The request's id, as `countersign approvals list` shows it.
        id: String,
    },
    /// Approve a request (counts towards its quorum).
    #[command(after_help = "Examples:
  countersign approvals approve ap-5f1c2e9a0b7d4c31 --reason 'quarterly report, ticket OPS-42'
  countersign approvals approve ap-5f1c2e9a0b7d4c31 --token \"$APPROVER_TOKEN\"")]
    Approve {
        /// The request's id, as `countersign approvals list` shows it.
        id: String,
        /// Why; required when the guarding policy says so.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a request; one deny ends it.
    #[command(after_help = "Examples:
  countersign approvals deny ap-5f1c2e9a0b7d4c31 --reason 'not during the freeze'
  countersign approvals deny ap-5f1c2e9a0b7d4c31 --reason 'wrong dataset' --output json")]
    Deny {
        /// The request's id, as `countersign approvals list` shows it.
        id: String,
        /// Why; shown to the requester and kept in the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw an approved request that still has uses left.
    #[command(after_help = "Examples:
  countersign approvals revoke ap-5f1c2e9a0b7d4c31 --reason 'approved by mistake'
  countersign approvals list --status approved")]
    Revoke {
        /// The request's id, as `countersign approvals list --status approved` shows it.
        id: String,
        /// Why; kept in the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print requests and decisions as they happen.
    #[command(after_help = "Examples:
  countersign approvals watch
  countersign approvals watch --output json

On a terminal each line fits its width (COLUMNS overrides it), the request's
principal, action and resource ending in `…` when cut.")]
    Watch,
}

pub fn run(args: ApprovalsArgs) -> ExitCode {
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(commands::execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::FAILURE
        }
    }
}
