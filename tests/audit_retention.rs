//! The audit streams' retention on a real `redis-server`: trimmed by age,
//! never on writing, and by count only past the memory guard.

mod common;

use common::Redis;
use common::services::{redis_store, store_config};
use countersign::approval::store::{AuditCursor, CheckRef, Consumed};
use countersign::approval::{ApprovalStore, Ruling as Verdict, StoreConfig};

/// A flood of cheap entries (denials) right after an approved call does
/// not erase that call from the trail: streams are trimmed by age, and the
/// count (`audit.max_entries`) is only a memory guard, applied by the sweep
/// after it warned.
#[tokio::test]
async fn a_flood_of_entries_below_the_guard_erases_nothing() {
    let redis = Redis::start().await;
    // A guard of 3,200 entries: 200 a shard.
    let s = redis_store(StoreConfig {
        audit_max_len: 3_200,
        ..store_config(&redis.url(), "flood:")
    });
    let opened = s
        .open(
            &common::export_request("fp", &["data-owners"], Default::default()),
            CheckRef::default(),
        )
        .await
        .unwrap();
    let id = opened.approval.id.clone();
    s.vote(&id, "dora".into(), Verdict::Approve, "")
        .await
        .unwrap();
    let allow = [("event", "decision"), ("decision", "allow")];
    let used = s
        .consume(
            opened.token.as_deref(),
            None,
            "fp",
            CheckRef {
                request_id: "req-approved",
                trace: "",
                decision: &allow,
            },
        )
        .await
        .unwrap();
    assert!(matches!(used, Consumed::Used { .. }), "{used:?}");
    // Denials in the same shard, more than its share of the guard... but
    // the sweep has not run: nothing is trimmed on writing.
    for i in 0..600 {
        let request = format!("flood-{i}");
        s.append_audit(
            &id,
            &[
                ("event", "decision"),
                ("decision", "deny"),
                ("request_id", &request),
            ],
        )
        .await
        .unwrap();
    }
    let entries = s
        .audit_range(&mut AuditCursor::from("-"), "+", 5000)
        .await
        .unwrap();
    assert_eq!(entries.len(), 604);
    // The use (with the request that took it) and its allow.
    let has = |k: &str, v: &str| {
        entries
            .iter()
            .any(|e| e.fields.contains(&(k.to_owned(), v.to_owned())))
    };
    assert!(
        has("request_id", "req-approved") && has("decision", "allow"),
        "the approved call's use or allow was trimmed"
    );

    // Past the guard, the sweep trims the oldest and says how many.
    let swept = s.sweep().await;
    assert_eq!((swept.audit_longest, swept.audit_guard), (604, 200));
    assert!(
        (300..=404).contains(&swept.audit_trimmed),
        "{}",
        swept.audit_trimmed
    );
    let left = s
        .audit_range(&mut AuditCursor::from("-"), "+", 5000)
        .await
        .unwrap();
    assert_eq!(left.len() as u64, 604 - swept.audit_trimmed);
    // Below the guard, a sweep trims nothing.
    assert_eq!(s.sweep().await.audit_trimmed, 0);
}
