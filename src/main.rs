//! The `countersign` binary: parse the command line and run a subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    countersign::cli::run(countersign::cli::Cli::parse())
}
