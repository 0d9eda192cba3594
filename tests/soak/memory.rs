//! countersign's resident memory, sampled once a second, and the bound
//! its growth must stay under.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::run::Soak;

/// RSS bound: the median of the last third of the samples may exceed the
/// first third's by 30 % plus 8 MiB (allocator arenas and caches settle in
/// steps). In the 10-minute run (some 300,000 requests) a leak of about
/// 100 bytes per request crosses it; in the 30 s one, a few KiB.
pub const RSS_FACTOR: f64 = 1.3;
pub const RSS_SLACK_KIB: u64 = 8 * 1024;

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the parenthesised command name.
        s.rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// countersign's VmRSS in KiB once a second after `warm_up`, and a scrape
/// of /metrics (which must always answer); halts the run if countersign is
/// gone.
pub async fn rss(soak: Arc<Soak>, warm_up: Duration) -> Vec<u64> {
    let pid = soak.stack.read().await.sidecar.pid();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while soak.running() {
        tick.tick().await;
        if !alive(pid) {
            soak.violation("countersign exited".into());
            soak.halted.store(true, Ordering::SeqCst);
            break;
        }
        if soak.started.elapsed() >= warm_up {
            samples.push(soak.stack.read().await.sidecar.rss_kib().1);
        }
        let _ = soak.scrape().await;
    }
    samples
}

pub fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
