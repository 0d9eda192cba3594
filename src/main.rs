//! The `countersign` binary: parse the command line and run a subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    countersign::cli::run(countersign::cli::Cli::parse())
}
