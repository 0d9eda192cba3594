//! The memory store's own bounds; its contract is in `tests/approval_store.rs`.

use super::*;
use crate::approval::{ApprovalParams, Mode};

fn new(fingerprint: &str) -> NewApproval {
    let params = ApprovalParams::default();
    NewApproval {
        issue_token: true,
        fingerprint: fingerprint.into(),
        info: RequestInfo {
            principal: r#"User::"agent-7""#.into(),
            on_behalf_of: None,
            action: r#"Action::"export""#.into(),
            resource: r#"Dataset::"sales""#.into(),
            method: "POST".into(),
            path: "/v1/datasets/sales/export".into(),
            host: "api".into(),
            source_address: String::new(),
            policies: vec![],
            parameters: Default::default(),
            approver_groups: vec![],
            quorum: 1,
            uses: 1,
            reason_required: false,
            mode: Mode::Deny,
            shadow: false,
            rules: String::new(),
        },
        params,
    }
}

#[tokio::test]
async fn only_the_newest_requests_and_audit_entries_are_kept() {
    // No cap on pending requests: this is about the store's own bound.
    let s = MemoryStore::with_max_pending(u32::MAX);
    let first = s.open(&new("fp-0"), CheckRef::default()).await.unwrap();
    for i in 1..=KEEP {
        s.open(&new(&format!("fp-{i}")), CheckRef::default())
            .await
            .unwrap();
    }
    assert_eq!(s.get(&first.approval.id).await.unwrap(), None);
    let token = first.token.unwrap();
    let used = s.consume(Some(&token), None, "fp-0", CheckRef::default());
    assert_eq!(used.await.unwrap(), Consumed::Unknown);
    let state = s.state();
    assert_eq!((state.requests.len(), state.audit.len()), (KEEP, KEEP));
    assert_eq!(state.tokens.len(), KEEP);
}
