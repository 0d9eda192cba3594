//! Every operation of the approval store, as countersign uses them, run as
//! one Redis user: what the documented ACL must allow.

use std::time::Duration;

use countersign::approval::store::{AuditCursor, CheckRef, Consumed, ListFilter};
use countersign::approval::{
    ApprovalParams, ApprovalStore, EventKind, Ruling as Verdict, Status, StoreConfig,
};
use redis::aio::MultiplexedConnection;

use crate::common::services::{redis_store, store_config};
use crate::common::{self, eventually};

/// Every operation of the store, as the sidecar, the admin API and `audit`
/// use them, with the default prefix the documented ACL names: the first
/// that fails, if one does.
pub async fn exercise_store(url: &str, admin: &mut MultiplexedConnection) -> Result<(), String> {
    let store = redis_store(StoreConfig {
        audit_max_len: 1000,
        // So that the sweep also trims the stream by age.
        audit_max_age: Some(Duration::from_secs(3600)),
        ..store_config(url, "countersign:")
    });
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: countersign::approval::StoreError| format!("{what}: {e}")
    };

    // Events reach a subscriber (holds and `approvals watch` wait on them).
    let mut events = store.subscribe().await;
    let subscribed = eventually(Duration::from_secs(3), Duration::from_millis(50), || {
        let mut admin = admin.clone();
        let got = std::iter::from_fn(|| events.try_recv().ok()).any(|e| e.id == "probe");
        async move {
            let _: Result<i64, _> = redis::cmd("SPUBLISH")
                .arg(format!(
                    "countersign:{{{}}}:events",
                    countersign::approval::SHARD_TAGS[0].0
                ))
                .arg("requested probe")
                .query_async(&mut admin)
                .await;
            got
        }
    })
    .await;
    if !subscribed {
        return Err("no event reached the subscriber".into());
    }

    store.ping().await.map_err(fail("ping"))?;
    let new = common::export_request(
        "fp-1",
        &["data-owners"],
        ApprovalParams {
            uses: 2,
            ..Default::default()
        },
    );
    let opened = store
        .open(&new, CheckRef::default())
        .await
        .map_err(fail("open"))?;
    let id = opened.approval.id.clone();
    let token = opened.token.ok_or("open: no token")?;
    let again = store
        .open(&new, CheckRef::default())
        .await
        .map_err(fail("open again"))?;
    if again.created || again.approval.id != id {
        return Err(format!("open again: {again:?}"));
    }
    let listed = store
        .list(&ListFilter::default())
        .await
        .map_err(fail("list"))?;
    if listed.iter().map(|a| &a.id).ne([&id]) {
        return Err(format!("list: {listed:?}"));
    }
    if store.pending_count().await.map_err(fail("pending"))? != 1 {
        return Err("pending count".into());
    }
    let a = store
        .vote(&id, "dora".into(), Verdict::Approve, "ok")
        .await
        .map_err(fail("approve"))?;
    if a.status != Status::Approved {
        return Err(format!("approve: {a:?}"));
    }
    let decision = [("event", "decision"), ("decision", "allow")];
    let check = CheckRef {
        request_id: "r-1",
        trace: "",
        decision: &decision,
    };
    match store
        .consume(Some(&token), None, "fp-1", check)
        .await
        .map_err(fail("consume"))?
    {
        Consumed::Used { uses_left: 1, .. } => {}
        other => return Err(format!("consume: {other:?}")),
    }
    store
        .vote(&id, "dora".into(), Verdict::Revoke, "")
        .await
        .map_err(fail("revoke"))?;
    let other = common::export_request("fp-2", &["data-owners"], ApprovalParams::default());
    let other = store
        .open(&other, CheckRef::default())
        .await
        .map_err(fail("open"))?;
    store
        .vote(&other.approval.id, "dora".into(), Verdict::Deny, "no")
        .await
        .map_err(fail("deny"))?;
    if let Some(e) = store.sweep().await.errors.pop() {
        return Err(format!("sweep: {e}"));
    }
    store
        .append_audit(
            &other.approval.id,
            &[
                ("event", "decision"),
                ("decision", "deny"),
                ("approval_id", &other.approval.id),
            ],
        )
        .await
        .map_err(fail("audit append"))?;
    let entries = store
        .audit_range(&mut AuditCursor::from("-"), "+", 100)
        .await
        .map_err(fail("audit export"))?;
    // Each request's events in order (the shards' streams interleave by
    // time; events of two shards in the same millisecond may swap).
    let kinds = |id: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|e| e.fields.iter().any(|(k, v)| k == "approval_id" && v == id))
            .filter_map(|e| e.fields.iter().find(|(k, _)| k == "event"))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let expected: [(&str, &[&str]); 2] = [
        (
            &id,
            &["requested", "approved", "consumed", "decision", "revoked"],
        ),
        (&other.approval.id, &["requested", "denied", "decision"]),
    ];
    for (id, want) in expected {
        if kinds(id) != want {
            return Err(format!("audit stream for {id}: {:?}", kinds(id)));
        }
    }
    if entries.len() != 8 {
        return Err(format!("audit stream: {entries:?}"));
    }
    let mut end = store.audit_end().await.map_err(fail("audit tail start"))?;
    if !store
        .audit_follow(&mut end, Duration::from_millis(100))
        .await
        .map_err(fail("audit tail"))?
        .is_empty()
    {
        return Err("audit tail from the end saw old entries".into());
    }
    let followed = store
        .audit_follow(&mut AuditCursor::from("0"), Duration::from_millis(100))
        .await
        .map_err(fail("audit tail"))?;
    if followed.len() != entries.len() {
        return Err(format!("audit tail: {followed:?}"));
    }
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(e.kind);
    }
    if !kinds.contains(&EventKind::Consumed) {
        return Err(format!("events: {kinds:?}"));
    }
    notifications(&store).await
}

/// A channel's delivery progress (its first read starts at the end; an
/// event after it is taken, claimed again when stalled, acknowledged), a
/// channel's note, a replay mark.
async fn notifications(store: &countersign::approval::RedisStore) -> Result<(), String> {
    let fail =
        |what: &'static str| move |e: countersign::approval::StoreError| format!("{what}: {e}");
    let first = store
        .outbox_take("ops", "one", 10)
        .await
        .map_err(fail("outbox start"))?;
    if !first.is_empty() {
        return Err(format!("outbox start saw old events: {first:?}"));
    }
    let new = common::export_request("fp-3", &["data-owners"], ApprovalParams::default());
    let opened = store
        .open(&new, CheckRef::default())
        .await
        .map_err(fail("open"))?;
    let taken = store
        .outbox_take("ops", "one", 10)
        .await
        .map_err(fail("outbox take"))?;
    if taken.len() != 1 || taken[0].field("approval_id") != opened.approval.id {
        return Err(format!("outbox take: {taken:?}"));
    }
    let (stalled, _) = store
        .outbox_reclaim("ops", "two", Duration::ZERO, 10)
        .await
        .map_err(fail("outbox reclaim"))?;
    if stalled != taken {
        return Err(format!("outbox reclaim: {stalled:?}"));
    }
    store
        .outbox_ack("ops", &stalled)
        .await
        .map_err(fail("outbox ack"))?;
    let (left, _) = store
        .outbox_reclaim("ops", "two", Duration::ZERO, 10)
        .await
        .map_err(fail("outbox reclaim"))?;
    if !left.is_empty() {
        return Err(format!("acknowledged, yet claimed again: {left:?}"));
    }
    let id = &opened.approval.id;
    store
        .set_channel_note(id, "slack", "C1/1.2", Duration::from_secs(60))
        .await
        .map_err(fail("channel note"))?;
    let note = store
        .channel_note(id, "slack")
        .await
        .map_err(fail("channel note"))?;
    if note.as_deref() != Some("C1/1.2") {
        return Err(format!("channel note: {note:?}"));
    }
    let ttl = Duration::from_secs(60);
    let once = store
        .first_sight("sig", ttl)
        .await
        .map_err(fail("replay mark"))?;
    let twice = store
        .first_sight("sig", ttl)
        .await
        .map_err(fail("replay mark"))?;
    if !once || twice {
        return Err(format!("replay mark: first {once}, second {twice}"));
    }
    Ok(())
}
