//! The notification outbox's contract: a channel's first read starts at the
//! end; each event is taken by one consumer; taken and never acknowledged,
//! it is claimed again once stalled; acknowledged, never again. Channels
//! keep their own progress.

use std::sync::Arc;
use std::time::Duration;

use countersign::approval::ApprovalStore;

use super::{open, params};

pub async fn notifications_are_taken_once_claimed_again_when_stalled_and_acknowledged(
    s: Arc<dyn ApprovalStore>,
) {
    let early = open(&*s, "fp-0", params()).await.approval.id;
    assert!(s.outbox_take("ops", "one", 100).await.unwrap().is_empty());
    assert!(s.outbox_take("audit", "one", 100).await.unwrap().is_empty());
    let a = open(&*s, "fp-1", params()).await.approval.id;
    let b = open(&*s, "fp-2", params()).await.approval.id;

    let mut taken = s.outbox_take("ops", "one", 100).await.unwrap();
    taken.sort_by_key(|e| (e.appended_ms(), e.shard));
    // Two shards' events in one millisecond may come in either order.
    let mut ids: Vec<&str> = taken.iter().map(|e| e.field("approval_id")).collect();
    ids.sort();
    let mut want = [a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want, "not {early}");
    assert!(taken.iter().all(|e| e.field("event") == "requested"));
    assert_ne!(taken[0].key(), taken[1].key());
    // Taken once: another consumer of the channel gets nothing new; another
    // channel has its own progress.
    assert!(s.outbox_take("ops", "two", 100).await.unwrap().is_empty());
    assert_eq!(s.outbox_take("audit", "two", 100).await.unwrap().len(), 2);

    // Not stalled yet; then stalled, and claimed by another consumer.
    let (none, _) = s
        .outbox_reclaim("ops", "two", Duration::from_secs(60), 100)
        .await
        .unwrap();
    assert!(none.is_empty());
    let (mut again, lost) = s
        .outbox_reclaim("ops", "two", Duration::ZERO, 100)
        .await
        .unwrap();
    again.sort_by_key(|e| (e.appended_ms(), e.shard));
    assert_eq!((again.clone(), lost), (taken.clone(), 0));

    s.outbox_ack("ops", &taken[..1]).await.unwrap();
    let (left, _) = s
        .outbox_reclaim("ops", "one", Duration::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(left, taken[1..]);
    s.outbox_ack("ops", &left).await.unwrap();
    let (left, _) = s
        .outbox_reclaim("ops", "one", Duration::ZERO, 100)
        .await
        .unwrap();
    assert!(left.is_empty());
}
