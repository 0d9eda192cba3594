//! `countersign serve`: load and validate everything, bind, serve.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use super::EXIT_CONFIG;
use crate::audit::record::RecordConfig;
use crate::config::{Config, LogFormat, ProcessEnv};
use crate::server::Listeners;

pub fn run(
    config_path: Option<&Path>,
    log_format: Option<LogFormat>,
    record: Option<RecordConfig>,
) -> ExitCode {
    let mut config = match Config::load(config_path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("countersign: {}", super::config_problem(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    config.record = record;
    // INVARIANT: the filter was validated by Config::load.
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format.unwrap_or(config.log_format) {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            logs.with_ansi(ansi).init();
        }
    }

    let prepared = match crate::server::prepare(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("countersign: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match super::runtime(true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let served = runtime.block_on(async move {
        let listeners = Listeners::bind(&prepared.config).await?;
        prepared
            .serve(listeners, crate::server::shutdown_signal())
            .await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign: {e}");
            ExitCode::FAILURE
        }
    }
}
