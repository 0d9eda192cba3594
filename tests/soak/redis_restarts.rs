//! Redis stopped under traffic and replaced by a fresh, empty one: guarded
//! calls fail closed meanwhile and recover after, and the approvals Redis
//! took with it are refused.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::agent;
use crate::common::{Redis, token};
use crate::kinds::Kind;
use crate::run::{Outage, Soak, export, get};

/// How long guarded calls may take to work again once Redis is back.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct ChaosReport {
    pub restarts: u32,
    pub lost_refused: u32,
    pub slowest_outage_answer: Duration,
    pub recoveries: Vec<Duration>,
}

/// Stops Redis at each of `at` (from the start) under traffic, keeps it
/// down for `outage`, starts a fresh one on the same port, and checks that
/// guarded calls recover and that the approvals opened before are gone: a
/// granted one is refused, a pending one cannot be approved.
pub async fn redis_restarts(soak: Arc<Soak>, at: Vec<Duration>, outage: Duration) -> ChaosReport {
    let agent = agent();
    let dora = token("dora", &["data-owners"]);
    let alice = token("alice", &["analysts"]);
    let csv = r#"{"format":"csv","rows":10}"#;
    let mut report = ChaosReport::default();
    for (i, when) in at.into_iter().enumerate() {
        tokio::time::sleep_until((soak.started + when).into()).await;
        if !soak.running() {
            break;
        }
        // Two approvals Redis takes with it: one granted and not yet
        // used, one still pending (approved only after the restart).
        let mut lost = Vec::new();
        for (name, grant) in [("granted", true), ("pending", false)] {
            let path = format!("/v1/datasets/lost-{name}-{i}/export");
            let open = soak
                .call(export(&path, &agent, csv, None), |_| Kind::Open)
                .await;
            let (Some(id), Some(tok)) = (
                open.body["approval_id"].as_str(),
                open.body["approval_token"].as_str(),
            ) else {
                soak.violation(format!("could not open the {name} approval to lose"));
                continue;
            };
            if grant && soak.approve(id, open.generation).await.status != 0 {
                soak.violation("could not grant the approval to lose".into());
                continue;
            }
            lost.push((path, id.to_owned(), tok.to_owned(), open.generation, grant));
        }

        // Killed under traffic: calls in flight may or may not reach it.
        soak.outages.lock().unwrap().push(Outage {
            began: Instant::now(),
            stopped: None,
            restarting: None,
            recovered: None,
        });
        let port = {
            let mut stack = soak.stack.write().await;
            stack.redis.stop();
            stack.redis.port
        };
        // INVARIANT: bumped only once the old Redis is gone, so a request
        // sent in the new generation cannot reach an approval of the old.
        soak.generation.fetch_add(1, Ordering::SeqCst);
        soak.outages.lock().unwrap().last_mut().unwrap().stopped = Some(Instant::now());
        let path = format!("/v1/datasets/outage-{i}/export");
        let back_at = Instant::now() + outage;
        while Instant::now() < back_at {
            let probes = [
                (Kind::AgentExport, export(&path, &agent, csv, None)),
                (
                    Kind::OwnerExport,
                    export("/v1/datasets/sales/export", &dora, csv, None),
                ),
                (Kind::Read, get("/v1/datasets/sales", Some(&alice))),
            ];
            for (kind, c) in probes {
                let a = soak.call(c, |_| kind).await;
                if kind.guarded() {
                    report.slowest_outage_answer =
                        report.slowest_outage_answer.max(a.ended - a.started);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let restarting = Instant::now();
        soak.outages.lock().unwrap().last_mut().unwrap().restarting = Some(restarting);
        let fresh = Redis::start_on(port).await;
        soak.stack.write().await.redis = fresh;
        report.restarts += 1;
        let probe = format!("/v1/datasets/recovery-{i}/export");
        let recovered = loop {
            let a = soak
                .call(export(&probe, &agent, csv, None), |_| Kind::AgentExport)
                .await;
            if a.status != 503 {
                break Some(Instant::now());
            }
            if restarting.elapsed() > RECOVERY_DEADLINE {
                soak.violation(format!(
                    "guarded calls still get 503 {RECOVERY_DEADLINE:?} after Redis came back"
                ));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(r) = recovered {
            report.recoveries.push(r - restarting);
            soak.outages.lock().unwrap().last_mut().unwrap().recovered = Some(r);
        }
        for (path, id, tok, opened_in, granted) in lost {
            if !granted {
                let a = soak.approve(&id, opened_in).await;
                if a.kind != Kind::ApproveLost || a.status == 0 {
                    soak.violation(format!(
                        "approving an approval lost with Redis: {:?} exit {}: {}",
                        a.kind, a.status, a.body
                    ));
                }
            }
            let a = soak
                .call(
                    export(&path, &agent, csv, Some(&tok)),
                    Kind::token_use(opened_in, granted, false),
                )
                .await;
            if a.kind == Kind::LostToken && a.denied("the approval token is not valid") {
                report.lost_refused += 1;
            } else {
                soak.violation(format!(
                    "an approval lost with Redis was not refused: {:?} {} {}",
                    a.kind, a.status, a.body
                ));
            }
        }
    }
    report
}
