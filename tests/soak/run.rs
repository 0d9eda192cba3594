//! The run's shared state: every request goes through `Soak::call` (or
//! `Soak::approve` for the approvals CLI) and is judged against what its
//! kind must get while Redis is up, down, or coming back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::RwLock;

use crate::common::stack::Stack;
use crate::kinds::{Answer, Kind};

/// After guarded calls work again following a Redis restart, this much
/// longer still counts as the outage (503 allowed), to be generous.
const GRACE: Duration = Duration::from_secs(5);

/// Where Redis stood while a request was in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Up,
    /// Stopped for the whole request.
    Down,
    /// Around a restart: either answer is right.
    Edge,
}

/// One Redis restart: when the stop began, when Redis was gone, when the
/// new one was being started, when guarded calls worked again.
pub struct Outage {
    pub began: Instant,
    pub stopped: Option<Instant>,
    pub restarting: Option<Instant>,
    pub recovered: Option<Instant>,
}

/// A request through Envoy.
pub struct Call<'a> {
    method: &'static str,
    path: &'a str,
    bearer: Option<&'a str>,
    body: Option<&'a str>,
    approval: Option<&'a str>,
}

pub fn get<'a>(path: &'a str, bearer: Option<&'a str>) -> Call<'a> {
    Call {
        method: "GET",
        path,
        bearer,
        body: None,
        approval: None,
    }
}

pub fn export<'a>(
    path: &'a str,
    bearer: &'a str,
    body: &'a str,
    approval: Option<&'a str>,
) -> Call<'a> {
    Call {
        method: "POST",
        path,
        bearer: Some(bearer),
        body: Some(body),
        approval,
    }
}

/// The run's shared state: the stack, the outages, and what was seen.
pub struct Soak {
    /// Taken exclusively only to stop or replace Redis, so that the
    /// approvals CLI never runs across a stop; HTTP traffic does not take
    /// it and keeps flowing while Redis dies.
    pub stack: RwLock<Stack>,
    /// Envoy's listener.
    pub base: String,
    pub http: reqwest::Client,
    /// Bumped once a stopped Redis is gone: approvals of an older
    /// generation are lost, and a request sent in a newer one cannot use them.
    pub generation: AtomicU64,
    pub outages: Mutex<Vec<Outage>>,
    pub started: Instant,
    pub until: Instant,
    pub halted: AtomicBool,
    pub tally: Mutex<BTreeMap<Kind, BTreeMap<i32, u64>>>,
    pub violations: Mutex<Vec<String>>,
    pub metrics_url: String,
    pub policy_dir: PathBuf,
}

impl Soak {
    pub fn running(&self) -> bool {
        Instant::now() < self.until && !self.halted.load(Ordering::SeqCst)
    }

    pub fn violation(&self, what: String) {
        eprintln!(
            "VIOLATION at {:.1}s: {what}",
            self.started.elapsed().as_secs_f64()
        );
        self.violations.lock().unwrap().push(what);
    }

    fn phase(&self, started: Instant, ended: Instant) -> Phase {
        for o in self.outages.lock().unwrap().iter() {
            if ended < o.began {
                continue;
            }
            if o.stopped.is_some_and(|s| started >= s) && o.restarting.is_none_or(|r| ended <= r) {
                return Phase::Down;
            }
            match o.recovered {
                Some(r) if started > r + GRACE => {}
                _ => return Phase::Edge,
            }
        }
        Phase::Up
    }

    /// Counts the answer and records every invariant it breaks.
    fn judge(&self, a: &Answer) {
        *self
            .tally
            .lock()
            .unwrap()
            .entry(a.kind)
            .or_default()
            .entry(a.status)
            .or_default() += 1;
        let phase = self.phase(a.started, a.ended);
        let mut broken = Vec::new();
        let expected = match phase {
            Phase::Up => a.as_expected_with_redis_up(),
            Phase::Down => a.as_expected_with_redis_down(),
            Phase::Edge => a.as_expected_with_redis_up() || a.as_expected_with_redis_down(),
        };
        if !expected {
            broken.push("unexpected answer");
        }
        if a.status == 200 && a.kind.never_allowed() {
            broken.push("a guarded call was allowed without a valid approval");
        }
        if a.status == -1 {
            broken.push("no answer within 5 s");
        }
        if a.kind != Kind::Approve && a.kind != Kind::ApproveLost {
            if a.status >= 500 && a.status != 503 {
                broken.push("a 5xx other than 503");
            }
            if a.status == 503 && phase == Phase::Up {
                broken.push("a 503 with Redis up");
            }
            if a.status == 503 && !a.countersign_503() {
                broken.push("a 503 that is not countersign's (a check past Envoy's timeout?)");
            }
        }
        if !broken.is_empty() {
            let body: String = a.body.to_string().chars().take(300).collect();
            self.violation(format!(
                "{}: {:?} {} (Redis {phase:?}, took {} ms): {}",
                broken.join("; "),
                a.kind,
                a.status,
                (a.ended - a.started).as_millis(),
                body
            ));
        }
    }

    pub async fn call(&self, c: Call<'_>, kind: impl FnOnce(u64) -> Kind) -> Answer {
        let generation = self.generation.load(Ordering::SeqCst);
        let kind = kind(generation);
        let mut req = self.http.request(
            c.method.parse().unwrap(),
            format!("{}{}", self.base, c.path),
        );
        if let Some(t) = c.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = c.body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        if let Some(t) = c.approval {
            req = req.header("x-countersign-approval", t);
        }
        let started = Instant::now();
        let (status, text) = match req.send().await {
            Ok(r) => {
                let status = i32::from(r.status().as_u16());
                match r.text().await {
                    Ok(t) => (status, t),
                    Err(e) => (-1, format!("body lost: {e}")),
                }
            }
            Err(e) => (-1, format!("no answer: {e}")),
        };
        let ended = Instant::now();
        let a = Answer {
            kind,
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            started,
            ended,
            generation,
        };
        self.judge(&a);
        a
    }

    /// `countersign approvals approve ID` as dora, for an approval opened
    /// while Redis generation `opened_in` ran.
    pub async fn approve(self: &Arc<Self>, id: &str, opened_in: u64) -> Answer {
        let (soak, id) = (self.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || {
            let stack = soak.stack.blocking_read();
            let generation = soak.generation.load(Ordering::SeqCst);
            let kind = if generation == opened_in {
                Kind::Approve
            } else {
                Kind::ApproveLost
            };
            let started = Instant::now();
            let (status, out) = stack.cli("dora", &["approve", &id, "--reason", "soak"]);
            let ended = Instant::now();
            drop(stack);
            let a = Answer {
                kind,
                status,
                body: Value::String(out),
                started,
                ended,
                generation,
            };
            soak.judge(&a);
            a
        })
        .await
        .unwrap()
    }

    /// countersign's /metrics, or why it did not answer; a failure is a
    /// violation.
    pub async fn scrape(&self) -> Result<String, String> {
        let started = Instant::now();
        let got = async {
            let r = self.http.get(&self.metrics_url).send().await?;
            let status = r.status();
            Ok::<_, reqwest::Error>((status, r.text().await?))
        }
        .await;
        let failed = match got {
            Ok((status, text)) if status.is_success() => return Ok(text),
            Ok((status, text)) => format!("{status}: {text}"),
            Err(e) => format!("{e:?}"),
        };
        let why = format!(
            "/metrics did not answer (after {} ms): {failed}",
            started.elapsed().as_millis()
        );
        self.violation(why.clone());
        Err(why)
    }

    /// One sample from /metrics; `None` if the scrape failed or lacks it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let value = metric(&self.scrape().await.ok()?, name);
        if value.is_none() {
            self.violation(format!("/metrics has no `{name}`"));
        }
        value
    }
}

/// The value of sample `name` (with its labels) in a scrape.
pub fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
