//! Policy reloads under traffic: good changes show in answers within a
//! deadline, broken files are refused and change nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::token;
use crate::kinds::Kind;
use crate::run::{Soak, get};

/// How long a policy file change may take to show in answers.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// The policy file the reload task rewrites (in the stack's copy).
const TOGGLE_FILE: &str = "soak-toggle.cedar";
const TOGGLE_ON: &str = r#"@id("soak-toggle")
permit (principal in Group::"marketing", action == Action::"read", resource == Dataset::"soak-toggle");
"#;
const TOGGLE_OFF: &str = "// soak: the toggle is off\n";
/// Broken while the toggle is on: were it loaded, the permit would be gone.
const BROKEN_TYPE: &str = r#"@id("soak-typo")
permit (principal in Group::"marketing", action == Action::"raed", resource);
"#;
/// Broken while the toggle is off: were its good half loaded, the permit
/// would be in force.
const BROKEN_SYNTAX: &str = r#"@id("soak-toggle")
permit (principal in Group::"marketing", action == Action::"read", resource == Dataset::"soak-toggle");
@id("soak-broken")
permit (principal, action, resource) when {
"#;

pub const RELOADS_OK: &str = r#"countersign_policy_reloads_total{result="ok"}"#;
pub const RELOADS_FAILED: &str = r#"countersign_policy_reloads_total{result="failed"}"#;

/// Rewrites the toggle file: on, broken (type error), off, broken (syntax
/// error), ...; checks that each good change shows and no broken one does.
pub async fn reloads(soak: Arc<Soak>, every: Duration) -> (u32, u32) {
    let carol = token("carol", &["marketing"]);
    let file = soak.policy_dir.join(TOGGLE_FILE);
    let probe = || {
        soak.call(get("/v1/datasets/soak-toggle", Some(&carol)), |_| {
            Kind::Toggle
        })
    };
    let count = async |name| soak.metric(name).await;
    let (mut good, mut bad) = (0, 0);
    let mut on = false;
    let mut step = 0u32;
    while soak.running() {
        let want = |on: bool| if on { 200 } else { 403 };
        if step.is_multiple_of(2) {
            on = step.is_multiple_of(4);
            let before = count(RELOADS_OK).await;
            std::fs::write(&file, if on { TOGGLE_ON } else { TOGGLE_OFF }).unwrap();
            let shown = Instant::now() + RELOAD_DEADLINE;
            let mut last = 0;
            while Instant::now() < shown {
                last = probe().await.status;
                if last == want(on) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if last != want(on) {
                soak.violation(format!(
                    "policy toggle {} did not show within {RELOAD_DEADLINE:?}: carol got {last}",
                    if on { "on" } else { "off" }
                ));
            }
            // Counted just after the swap: allow for a descheduled thread.
            let mut after = count(RELOADS_OK).await;
            let counted = Instant::now() + Duration::from_secs(2);
            while after <= before && Instant::now() < counted {
                tokio::time::sleep(Duration::from_millis(100)).await;
                after = count(RELOADS_OK).await.or(after);
            }
            if let (Some(b), Some(a)) = (before, after)
                && a <= b
            {
                soak.violation(format!(
                    "a good policy change was not counted as a reload ({b} before, {a} after)"
                ));
            }
            good += 1;
        } else {
            let before = count(RELOADS_FAILED).await;
            std::fs::write(&file, if on { BROKEN_TYPE } else { BROKEN_SYNTAX }).unwrap();
            let noticed = Instant::now() + RELOAD_DEADLINE;
            let mut after = before;
            while Instant::now() < noticed && after <= before {
                tokio::time::sleep(Duration::from_millis(100)).await;
                after = count(RELOADS_FAILED).await.or(after);
            }
            if after <= before {
                soak.violation(format!(
                    "a broken policy file was not counted as a failed reload ({before:?} before, {after:?} after)"
                ));
            }
            for _ in 0..5 {
                let got = probe().await.status;
                if got != want(on) {
                    soak.violation(format!(
                        "a broken policy file changed an outcome: carol got {got}, not {}",
                        want(on)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if count("countersign_policy_ready")
                .await
                .is_some_and(|r| r != 1.0)
            {
                soak.violation("not ready after a broken policy file".into());
            }
            bad += 1;
        }
        step += 1;
        tokio::time::sleep(every).await;
    }
    (good, bad)
}
