//! Drives Envoy's ext_authz `Check` over gRPC straight at a server
//! (countersign or the floor), N connections x M concurrent streams, closed
//! loop or at a fixed rate, with a mix of allowed, denied and
//! guarded-with-token requests. Prints one markdown table row: throughput,
//! latency percentiles from an HDR histogram, the server's CPU time per
//! check and its peak RSS (both from /proc, given `--pid`).
//!
//! `http` is the same at a fixed rate over HTTP/1.1, for latency through
//! Envoy (bench/http_load.rs).
//!
//! Also sets benchmarks up: `policies` writes a synthetic policy directory,
//! `token` obtains an approved token, `pending` opens many approval requests.
//! See bench/README.md.

#[allow(unused_imports)]
use countersign::approval::ApprovalStore;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

#[path = "../tests/common/check.rs"]
mod check;
#[path = "http_load.rs"]
mod http_load;
#[path = "synthetic.rs"]
mod synthetic;

use synthetic::{allowed, denied, export, export_as};

#[derive(Parser)]
#[command(about = "Load generator for ext_authz Check (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send checks; print a markdown row (see `header`).
    Run(RunArgs),
    /// Print the header of the table `run` prints rows of.
    Header,
    /// Send HTTP/1.1 requests at a fixed rate (open loop); print a markdown
    /// row (see `http-header`) or, with `--json`, a JSON object.
    Http(http_load::HttpArgs),
    /// Print the header of the table `http` prints rows of.
    HttpHeader,
    /// Write the example policies plus `--extra` generated ones into `--out`.
    Policies {
        #[arg(long)]
        extra: usize,
        #[arg(long)]
        out: PathBuf,
        /// Let one approved agent export be used this many times.
        #[arg(long)]
        token_uses: Option<u32>,
        /// Spread the generated policies over files of this many each
        /// (`synthetic-0.cedar`, ...) instead of one `synthetic.cedar`.
        #[arg(long)]
        per_file: Option<usize>,
    },
    /// Open an agent export through Check, approve it in the approval store
    /// named by the sidecar's configuration (COUNTERSIGN_* variables), and
    /// print its token. With `--count N`, N distinct exports (so requests
    /// on many shards), printed as `ROWS:TOKEN,ROWS:TOKEN,...`.
    Token {
        #[arg(long, default_value = "http://127.0.0.1:9191")]
        target: String,
        #[arg(long)]
        count: Option<usize>,
    },
    /// Approve request `id` in the approval store named by the sidecar's
    /// configuration (COUNTERSIGN_* variables), as `bench-approver`.
    Approve { id: String },
    /// Open `--count` distinct pending approval requests through Check.
    Pending {
        #[arg(long, default_value = "http://127.0.0.1:9191")]
        target: String,
        #[arg(long)]
        count: usize,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value = "http://127.0.0.1:9191")]
    target: String,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Concurrent streams per connection.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Checks per second in all; without it each stream sends its next check
    /// as soon as the last is answered (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Weights of `allow`, `deny` and `token` requests, e.g. `allow=8,deny=1,token=1`.
    #[arg(long, default_value = "allow=1")]
    mix: String,
    /// The approval token for `token` requests, or `ROWS:TOKEN,...` to
    /// spread the streams over several (see `token`).
    #[arg(long)]
    token: Option<String>,
    /// The server's process id, for its CPU time and peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// The row's name.
    #[arg(long, default_value = "checks")]
    label: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Allow,
    Deny,
    Token,
}

fn parse_mix(mix: &str, token: Option<&str>) -> Result<Vec<Kind>, String> {
    let mut out = Vec::new();
    for part in mix.split(',').filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or(format!("`{part}`: expected NAME=WEIGHT"))?;
        let weight: usize = weight
            .parse()
            .map_err(|_| format!("`{part}`: the weight is not a whole number"))?;
        let kind = match name {
            "allow" => Kind::Allow,
            "deny" => Kind::Deny,
            "token" if token.is_some() => Kind::Token,
            "token" => return Err("`token` requests need --token".into()),
            _ => return Err(format!("`{name}`: expected allow, deny or token")),
        };
        out.extend(std::iter::repeat_n(kind, weight));
    }
    if out.is_empty() {
        return Err("the mix is empty".into());
    }
    Ok(out)
}

/// What one stream saw in the measured window.
struct Tally {
    latency_us: Histogram<u64>,
    checks: u64,
    /// RPC errors, and answers other than the kind's (an allow that was
    /// denied, a token that no longer works).
    unexpected: u64,
}

async fn stream(
    mut client: AuthorizationClient<Channel>,
    requests: HashMap<&'static str, CheckRequest>,
    mix: Vec<Kind>,
    offset: usize,
    measure_from: Instant,
    until: Instant,
    interval: Option<Duration>,
) -> Tally {
    let mut tally = Tally {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        checks: 0,
        unexpected: 0,
    };
    let start = Instant::now();
    for n in 0u64.. {
        // At a fixed rate, latency counts from when the check was due, so a
        // slow answer that delays the next send is not hidden.
        let due = match interval {
            Some(i) => {
                let due = start + i.mul_f64(n as f64);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        if due >= until {
            break;
        }
        let kind = mix[(offset + n as usize) % mix.len()];
        let name = match kind {
            Kind::Allow => "allow",
            Kind::Deny => "deny",
            Kind::Token => "token",
        };
        let result = client.check(requests[name].clone()).await;
        if due < measure_from {
            continue;
        }
        let took = due.elapsed().as_micros() as u64;
        tally.latency_us.saturating_record(took.max(1));
        tally.checks += 1;
        let allowed = result.as_ref().ok().map(|r| is_allow(r.get_ref()));
        if allowed != Some(kind != Kind::Deny) {
            tally.unexpected += 1;
        }
    }
    tally
}

fn is_allow(r: &CheckResponse) -> bool {
    r.status.as_ref().is_some_and(|s| s.code == 0)
}

/// User plus system CPU seconds of `pid`, all threads.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th, stime the 13th. USER_HZ is 100 on Linux.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Peak resident set size of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn connect(target: &str) -> Result<AuthorizationClient<Channel>, Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(target.to_owned())?.connect().await?;
    Ok(AuthorizationClient::new(channel))
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mix = parse_mix(&args.mix, args.token.as_deref())?;
    // Each stream uses one of the tokens: `TOKEN` (the export of 10 rows)
    // or `ROWS:TOKEN,...` from `token --count`.
    let tokens: Vec<(usize, Option<&str>)> = match args.token.as_deref() {
        None => vec![(10, None)],
        Some(list) => list
            .split(',')
            .map(|t| match t.split_once(':') {
                Some((rows, token)) => rows
                    .parse()
                    .map(|rows| (rows, Some(token)))
                    .map_err(|_| format!("`{t}`: expected ROWS:TOKEN")),
                None => Ok((10, Some(t))),
            })
            .collect::<Result<_, _>>()?,
    };
    let requests = |stream: usize| {
        let (rows, token) = tokens[stream % tokens.len()];
        HashMap::from([
            ("allow", allowed()),
            ("deny", denied()),
            ("token", export(rows, token)),
        ])
    };
    let tasks = args.connections * args.streams;
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(tasks as f64 / r.max(1.0)));
    let measure_from = Instant::now() + args.warmup;
    let until = measure_from + args.duration;
    let mut set = tokio::task::JoinSet::new();
    for c in 0..args.connections {
        // One channel is one HTTP/2 connection, as Envoy keeps one.
        let client = connect(&args.target).await?;
        for s in 0..args.streams {
            set.spawn(stream(
                client.clone(),
                requests(c * args.streams + s),
                mix.clone(),
                c * args.streams + s,
                measure_from,
                until,
                interval,
            ));
        }
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = args.pid.and_then(cpu_seconds);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut checks, mut unexpected) = (0, 0);
    while let Some(t) = set.join_next().await {
        let t = t?;
        latency.add(&t.latency_us)?;
        checks += t.checks;
        unexpected += t.unexpected;
    }
    let cpu_after = args.pid.and_then(cpu_seconds);
    let elapsed = args.duration.as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if checks > 0 => format!("{:.1}", (a - b) * 1e6 / checks as f64),
        _ => "-".into(),
    };
    let rss = args
        .pid
        .and_then(peak_rss_mib)
        .map_or("-".into(), |m| format!("{m:.1}"));
    println!(
        "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
        args.label,
        checks,
        checks as f64 / elapsed,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        cpu_us,
        rss,
        unexpected
    );
    Ok(())
}

const HEADER: &str = "| run | checks | checks/s | p50 ms | p90 ms | p99 ms | p99.9 ms | server CPU µs/check | server peak RSS MiB | unexpected |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// The approval-required answer's id and token.
fn approval_of(r: &CheckResponse) -> Option<(String, String)> {
    let Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(d)) = &r.http_response
    else {
        return None;
    };
    let body: serde_json::Value = serde_json::from_str(&d.body).ok()?;
    Some((
        body["approval_id"].as_str()?.to_owned(),
        body["approval_token"].as_str()?.to_owned(),
    ))
}

async fn token(target: &str, count: Option<usize>) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = connect(target).await?;
    let mut out = Vec::new();
    for rows in 10..10 + count.unwrap_or(1) {
        let first = client.check(export(rows, None)).await?.into_inner();
        let (id, token) = approval_of(&first).ok_or("the export did not ask for an approval")?;
        approve(&id).await?;
        out.push(match count {
            Some(_) => format!("{rows}:{token}"),
            None => token,
        });
    }
    println!("{}", out.join(","));
    Ok(())
}

async fn approve(id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = countersign::config::Config::load(None, &env)?;
    let store = countersign::approval::RedisStore::new(config.store)?;
    store
        .vote(
            id,
            "bench-approver".into(),
            countersign::approval::Ruling::Approve,
            "benchmark",
        )
        .await?;
    Ok(())
}

async fn pending(target: &str, count: usize) -> Result<(), Box<dyn std::error::Error>> {
    let client = connect(target).await?;
    let mut set = tokio::task::JoinSet::new();
    let workers = 16;
    for w in 0..workers {
        let mut client = client.clone();
        set.spawn(async move {
            let mut opened = 0;
            for rows in (w..count).step_by(workers) {
                // Each row count is a different call, so a different
                // request; each by its own agent, under the per-principal cap.
                let agent = format!("agent-{rows}");
                let r = client.check(export_as(&agent, rows + 1, None)).await;
                if r.ok().is_some_and(|r| approval_of(r.get_ref()).is_some()) {
                    opened += 1;
                }
            }
            opened
        });
    }
    let mut opened = 0;
    while let Some(n) = set.join_next().await {
        opened += n?;
    }
    if opened != count {
        return Err(format!("{opened} of {count} calls opened an approval request").into());
    }
    eprintln!("opened {opened} approval requests");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().cmd {
        Cmd::Run(args) => run(args).await,
        Cmd::Header => {
            println!("{HEADER}");
            Ok(())
        }
        Cmd::Http(args) => http_load::run(args).await,
        Cmd::HttpHeader => {
            println!("{}", http_load::HEADER);
            Ok(())
        }
        Cmd::Policies {
            extra,
            out,
            token_uses,
            per_file,
        } => {
            std::fs::create_dir_all(&out)?;
            match per_file {
                Some(n) => synthetic::write_policy_files(&out, extra, n, token_uses)?,
                None => synthetic::write_policy_dir(&out, extra, token_uses)?,
            }
            Ok(())
        }
        Cmd::Token { target, count } => token(&target, count).await,
        Cmd::Approve { id } => approve(&id).await,
        Cmd::Pending { target, count } => pending(&target, count).await,
    }
}
