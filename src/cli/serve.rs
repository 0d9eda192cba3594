//! `countersign serve`: load and validate everything, bind, serve.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use super::EXIT_CONFIG;
use crate::audit::record::RecordConfig;
use crate::config::{Config, LogFormat, ProcessEnv};
use crate::server::Listeners;

/// `serve --help` after the options: examples, ports, the environment
/// (from the overrides' own table) and exit codes.
pub fn after_help() -> String {
    let mut vars = vec![("COUNTERSIGN_CONFIG", "the configuration file, as --config")];
    vars.extend(crate::config::overrides());
    let width = vars.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    let vars: String = vars
        .iter()
        .map(|(var, field)| format!("  {var:width$}  {field}\n"))
        .collect();
    format!(
        "Examples:
  countersign serve
  countersign serve --config /etc/countersign/countersign.toml --log-format json
  COUNTERSIGN_LISTEN=0.0.0.0:9191 COUNTERSIGN_LOG=debug countersign serve
  countersign serve --record requests.jsonl --record-rate 0.01

Ports (the embedded configuration's defaults):
  127.0.0.1:9191  ext_authz and grpc.health.v1, for Envoy (server.listen)
  127.0.0.1:9193  /healthz, /readyz and /metrics, plain HTTP (server.metrics_listen; `off` disables)
  127.0.0.1:9192  the approvers' admin API over TLS, only when admin.tls_cert and admin.tls_key are set (admin.listen)

Environment (each replaces the configuration field named):
{vars}  OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_* variables: span export (docs/operations.md#traces)
  NO_COLOR: plain log lines even on a terminal

Exit codes: 0 after a clean shutdown, 64 for a bad configuration or a missing policy directory, 1 otherwise.
A policy set with errors does not stop the sidecar: it denies every check and /readyz says not ready until the files are fixed."
    )
}

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
