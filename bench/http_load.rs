//! `loadgen http`: open-loop HTTP/1.1 load at a fixed rate, for latency
//! through Envoy at a given request rate (wrk is closed loop: it slows down
//! with the server and so hides queueing).
//!
//! A pacer thread releases requests on schedule, request `n` at
//! `start + n / rate`, round robin over `--connections` keep-alive
//! connections (one request at a time each, as HTTP/1.1 without pipelining
//! allows). Each request's latency counts from its *intended* send time, so
//! a slow answer that delays the requests queued behind it on its
//! connection is charged to them too (no coordinated omission). The pacer
//! is an OS thread with `std::thread::sleep` rather than a tokio timer,
//! whose 1 ms granularity would add up to a millisecond to every latency.
//!
//! A connection that is still behind `LATE_LIMIT` after the window stops
//! sending: its remaining requests are counted as `unsent` and the achieved
//! rate shows that the rate was not sustained. (Far over capacity, the
//! warm-up's backlog alone can outlast that, and no request is measured.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long after the window a lagging connection may go on sending.
const LATE_LIMIT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct HttpArgs {
    /// `http://HOST:PORT/PATH?QUERY`; the Host header is `HOST:PORT`.
    #[arg(long)]
    url: String,
    /// Requests per second in all.
    #[arg(long)]
    rate: f64,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Keep-alive HTTP/1.1 connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value = "GET")]
    method: String,
    /// A request header, `NAME: VALUE`; repeat for more.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A request header whose value is an environment variable's,
    /// `NAME=VARIABLE` (e.g. `x-countersign-approval=COUNTERSIGN_APPROVAL`).
    #[arg(long = "header-env")]
    header_env: Vec<String>,
    /// The request body, read from this file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// A process id whose CPU time per request to report (Envoy, the authz
    /// server); repeat for more, in the order of the printed columns.
    #[arg(long)]
    pid: Vec<u32>,
    /// The row's name.
    #[arg(long, default_value = "http")]
    label: String,
    /// Print one JSON object instead of a markdown row.
    #[arg(long)]
    json: bool,
}

/// The request every connection sends, parsed once.
struct Target {
    addr: String,
    host: String,
    path: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Target {
    fn from_args(args: &HttpArgs) -> Result<Target, String> {
        let rest = args
            .url
            .strip_prefix("http://")
            .ok_or(format!("`{}`: only http:// URLs", args.url))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut headers = Vec::new();
        for h in &args.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or(format!("`{h}`: expected `NAME: VALUE`"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        for h in &args.header_env {
            let (name, var) = h
                .split_once('=')
                .ok_or(format!("`{h}`: expected `NAME=VARIABLE`"))?;
            let value = std::env::var(var).map_err(|_| format!("`{var}` is not set"))?;
            headers.push((name.trim().to_owned(), value));
        }
        let body = match &args.body_file {
            Some(f) => std::fs::read(f)
                .map_err(|e| format!("`{}`: {e}", f.display()))?
                .into(),
            None => Bytes::new(),
        };
        Ok(Target {
            addr: authority.to_owned(),
            host: authority.to_owned(),
            path: path.to_owned(),
            method: args
                .method
                .parse()
                .map_err(|_| format!("`{}`: not an HTTP method", args.method))?,
            headers,
            body,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", self.host.as_str());
        for (name, value) in &self.headers {
            b = b.header(name.as_str(), value.as_str());
        }
        b.body(Full::new(self.body.clone()))
            .expect("headers were checked when parsed")
    }
}

/// What one connection saw for the requests due in the measured window.
struct Tally {
    latency_us: Histogram<u64>,
    requests: u64,
    non_2xx: u64,
    errors: u64,
    unsent: u64,
    last_done: Option<Instant>,
}

async fn connect(addr: &str) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one request; its status, or `None` on a connection error.
async fn send(sender: &mut SendRequest<Full<Bytes>>, target: &Target) -> Option<u16> {
    sender.ready().await.ok()?;
    let response = sender.send_request(target.request()).await.ok()?;
    let status = response.status().as_u16();
    // Read the whole answer, so the connection is free for the next request.
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// One connection, opened before the clock started: sends each request when
/// the pacer releases it (`due`), reconnecting after an error.
async fn connection(
    sender: SendRequest<Full<Bytes>>,
    target: Arc<Target>,
    mut due_rx: mpsc::UnboundedReceiver<Instant>,
    measure_from: Instant,
    stop_by: Instant,
) -> Tally {
    let mut tally = Tally {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        requests: 0,
        non_2xx: 0,
        errors: 0,
        unsent: 0,
        last_done: None,
    };
    let mut sender = Some(sender);
    while let Some(due) = due_rx.recv().await {
        let measured = due >= measure_from;
        if Instant::now() >= stop_by {
            tally.unsent += u64::from(measured);
            continue;
        }
        if sender.is_none() {
            sender = connect(&target.addr).await.ok();
        }
        let status = match sender.as_mut() {
            Some(s) => send(s, &target).await,
            None => None,
        };
        if status.is_none() {
            sender = None;
        }
        if !measured {
            continue;
        }
        let now = Instant::now();
        let took = now.duration_since(due).as_micros() as u64;
        tally.latency_us.saturating_record(took.max(1));
        tally.requests += 1;
        tally.last_done = Some(now);
        match status {
            Some(s) if (200..300).contains(&s) => {}
            Some(_) => tally.non_2xx += 1,
            None => tally.errors += 1,
        }
    }
    tally
}

/// Releases request `n` at `start + n * interval` to connection
/// `n % senders.len()`, until `until`.
fn pace(
    senders: Vec<mpsc::UnboundedSender<Instant>>,
    start: Instant,
    interval: Duration,
    until: Instant,
) {
    for n in 0u64.. {
        let due = start + interval.mul_f64(n as f64);
        if due >= until {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // A closed channel means its connection task ended early; nothing
        // to release to.
        let _ = senders[(n % senders.len() as u64) as usize].send(due);
    }
}

pub async fn run(args: HttpArgs) -> Result<(), Box<dyn std::error::Error>> {
    let target = Arc::new(Target::from_args(&args)?);
    if args.rate <= 0.0 || args.connections == 0 {
        return Err("--rate and --connections must be above 0".into());
    }
    // Open every connection before the clock starts.
    let mut first = Vec::new();
    for _ in 0..args.connections {
        first.push(connect(&target.addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let until = measure_from + args.duration;
    let mut set = tokio::task::JoinSet::new();
    let mut senders = Vec::new();
    for sender in first {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let target = target.clone();
        set.spawn(connection(
            sender,
            target,
            rx,
            measure_from,
            until + LATE_LIMIT,
        ));
    }
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let pacer = std::thread::spawn(move || pace(senders, start, interval, until));
    tokio::time::sleep_until(measure_from.into()).await;
    // This process's own CPU too: it shares the machine with the servers.
    let own = std::process::id();
    let cpu_now = || -> Vec<Option<f64>> {
        args.pid
            .iter()
            .chain([&own])
            .map(|p| crate::cpu_seconds(*p))
            .collect()
    };
    let cpu_before = cpu_now();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut non_2xx, mut errors, mut unsent) = (0, 0, 0, 0);
    let mut last_done = until;
    while let Some(t) = set.join_next().await {
        let t = t?;
        latency.add(&t.latency_us)?;
        requests += t.requests;
        non_2xx += t.non_2xx;
        errors += t.errors;
        unsent += t.unsent;
        last_done = last_done.max(t.last_done.unwrap_or(until));
    }
    let cpu_after = cpu_now();
    pacer.join().map_err(|_| "the pacer thread panicked")?;
    // Requests due in the window over the time it took to answer them: below
    // the target when the server (or this client) fell behind.
    let achieved = requests as f64 / last_done.duration_since(measure_from).as_secs_f64();
    let mut cpu_us: Vec<Option<f64>> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) if requests > 0 => Some((a - b) * 1e6 / requests as f64),
            _ => None,
        })
        .collect();
    let own_cpu_us = cpu_us.pop().flatten();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        let row = serde_json::json!({
            "label": args.label,
            "target_rate": args.rate,
            "rate": achieved,
            "requests": requests,
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
            "non_2xx": non_2xx, "errors": errors, "unsent": unsent,
            "cpu_us": cpu_us,
            "loadgen_cpu_us": own_cpu_us,
        });
        println!("{row}");
    } else {
        let us = |c: &Option<f64>| c.map_or("-".into(), |c| format!("{c:.1}"));
        let cpu = cpu_us.iter().map(us).collect::<Vec<_>>().join(" / ");
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            args.label,
            args.rate,
            achieved,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            cpu,
            us(&own_cpu_us),
            non_2xx,
            errors,
            unsent
        );
    }
    Ok(())
}

/// The header of the markdown rows `run` prints.
pub const HEADER: &str = "| run | target req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/req (per --pid) | loadgen CPU µs/req | non-2xx | errors | unsent |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";
