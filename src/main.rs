//! The `countersign` binary: parse the command line and run a subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// A check allocates and frees a few hundred small blocks; with glibc's
/// malloc that was a fifth of its CPU (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    countersign::cli::run(countersign::cli::Cli::parse())
}
