//! `countersign audit export|tail`: the audit stream as evidence. Reads
//! Redis directly, with the sidecar's configuration (`redis.url`,
//! `redis.prefix`), so it works while the sidecar is down.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};

use crate::approval::store::{AuditCursor, AuditEntry};
use crate::approval::{ApprovalStore, RedisStore};
use crate::config::{Config, ProcessEnv};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  countersign audit export --since 24h --config /etc/countersign/countersign.toml > evidence.jsonl
  countersign audit tail --format text

Reads Redis directly (`redis.url` and `redis.prefix` of --config), so it works while the sidecar is down.")]
pub struct AuditArgs {
    /// The sidecar's configuration file (for the Redis URL and key prefix);
    /// defaults to $COUNTERSIGN_CONFIG, else the embedded default.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// `jsonl`: one JSON object per line; `text`: one readable line each.
    #[arg(long, global = true, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Jsonl,
    Text,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the recorded decisions and approval events, oldest first.
    #[command(after_help = "Examples:
  countersign audit export --since 24h
  countersign audit export --since 2026-11-01T00:00:00Z --until 2026-11-02T00:00:00Z > evidence.jsonl

TIME is RFC 3339 (2026-11-21T09:00:00Z) or an age (90m, 24h, 7d).")]
    Export {
        /// Earliest entry to print (default: the oldest kept).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<SystemTime>,
        /// Latest entry to print (default: now).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<SystemTime>,
    },
    /// Follow the stream: print entries as they are written, until Ctrl-C.
    #[command(after_help = "Examples:
  countersign audit tail
  countersign audit tail --format text --config /etc/countersign/countersign.toml")]
    Tail,
}

/// RFC 3339, or an age before now.
fn parse_time(v: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return Ok(t);
    }
    match humantime::parse_duration(v) {
        Ok(age) => SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| format!("`{v}` reaches before 1970")),
        Err(_) => Err(format!(
            "expected RFC 3339 such as `2026-11-21T09:00:00Z` or an age such as `24h`, got `{v}`"
        )),
    }
}

pub fn run(args: AuditArgs) -> ExitCode {
    let config = match Config::load(args.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("countersign: {}", super::config_problem(&e));
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let store = match RedisStore::new(config.store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "countersign: field `redis.url`: {e} (set it in --config, or COUNTERSIGN_REDIS_URL, to the Redis the sidecar uses)"
            );
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        match args.command {
            AuditCommand::Export { since, until } => {
                export(&store, since, until, args.format).await
            }
            AuditCommand::Tail => {
                tokio::select! {
                    r = tail(&store, args.format) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "countersign: {e} (check that Redis is up, and that `redis.url` and `redis.prefix` are the sidecar's: pass its configuration with --config)"
            );
            ExitCode::FAILURE
        }
    }
}

/// Entries fetched per round trip.
const PAGE: usize = 1000;

async fn export(
    store: &RedisStore,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    format: Format,
) -> Result<(), crate::approval::StoreError> {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let start = since.map_or_else(|| "-".to_owned(), |t| format!("{}-0", ms(t)));
    let end = until.map_or_else(|| "+".to_owned(), |t| format!("{}-{}", ms(t), u64::MAX));
    let mut cursor = AuditCursor::from(&start);
    let mut out = std::io::stdout().lock();
    loop {
        let page = store.audit_range(&mut cursor, &end, PAGE).await?;
        for e in &page {
            if writeln!(out, "{}", render(e, format)).is_err() {
                return Ok(()); // stdout closed (| head): done.
            }
        }
        if page.len() < PAGE {
            return Ok(());
        }
    }
}

async fn tail(store: &RedisStore, format: Format) -> Result<(), crate::approval::StoreError> {
    let mut cursor = store.audit_end().await?;
    loop {
        let entries = store
            .audit_follow(&mut cursor, Duration::from_secs(5))
            .await?;
        let mut out = std::io::stdout().lock();
        for e in &entries {
            if writeln!(out, "{}", render(e, format)).is_err() {
                return Ok(());
            }
        }
        let _ = out.flush();
    }
}

/// One entry: its fields, plus `id` and `time` (from the stream id).
fn render(e: &AuditEntry, format: Format) -> String {
    let time =
        e.id.split_once('-')
            .and_then(|(ms, _)| ms.parse::<u64>().ok())
            .map(|ms| {
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
            })
            .unwrap_or_default();
    match format {
        Format::Jsonl => {
            let mut m = Map::new();
            m.insert("id".into(), Value::String(e.id.clone()));
            m.insert("time".into(), Value::String(time));
            for (k, v) in &e.fields {
                m.insert(k.clone(), Value::String(v.clone()));
            }
            Value::Object(m).to_string()
        }
        Format::Text => {
            // Values quoted and escaped: a reason with a newline cannot
            // forge a line.
            let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{time} {}", fields.join(" "))
        }
    }
}
