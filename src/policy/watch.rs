//! Hot reload: watch the policy directory and reload on change.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::PolicyStore;

/// Editors save in several steps (write temp, rename); wait this long after
/// the last event so that one save means one reload.
const SETTLE: Duration = Duration::from_millis(200);
/// Longest a reload waits for changes to stop.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// Keeps the watch alive; dropping it stops reloading.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `store.dir()`. Must be called inside a tokio runtime.
pub fn spawn(store: Arc<PolicyStore>) -> notify::Result<WatchGuard> {
    let changed = Arc::new(Notify::new());
    let signal = changed.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own reads show up as access events; only changes matter.
        match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(_) => signal.notify_one(),
            Err(e) => tracing::warn!("policy directory watch error: {e}"),
        }
    })?;
    watcher.watch(store.dir(), RecursiveMode::Recursive)?;
    let task = tokio::spawn(async move {
        loop {
            changed.notified().await;
            // Coalesce a burst of events into one reload, but do not let a
            // steady stream of events postpone it for ever.
            let deadline = tokio::time::Instant::now() + MAX_SETTLE;
            loop {
                tokio::select! {
                    _ = changed.notified() => continue,
                    _ = tokio::time::sleep(SETTLE) => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let store = store.clone();
            let res = tokio::task::spawn_blocking(move || {
                let res = store.reload();
                (res, store.stats.failures.load(Ordering::Relaxed))
            })
            .await;
            match res {
                Ok((Ok(loaded), _)) => {
                    tracing::info!(
                        policies = loaded.set.policies().count(),
                        files = loaded.files.len(),
                        validated = loaded.validated,
                        "policies reloaded"
                    );
                    super::rollout::announce(&loaded, &[]);
                    for w in &loaded.warnings {
                        tracing::warn!("policy warning: {w}");
                    }
                }
                Ok((Err(e @ super::PolicyError::Changing(_)), _)) => tracing::info!("{e}"),
                Ok((Err(e), failures)) => tracing::error!(
                    reload_failures_total = failures,
                    "policy reload failed, keeping the last good set: {e}"
                ),
                Err(e) => tracing::error!("policy reload task failed: {e}"),
            }
        }
    });
    Ok(WatchGuard {
        _watcher: watcher,
        task,
    })
}
