//! Hardening (issue 6, item 10): who cannot reach the approvers' API (no
//! credentials, a certificate from another CA, TLS below 1.2), and a Redis
//! user limited to countersign's keys and commands, as docs/redis-acl.md
//! documents it, is enough to run the whole approval story.
//!
//! Layout: `credentials` (no certificate, no token), `tls` (a foreign CA,
//! TLS versions) with `tls_wire` (TLS spoken by hand), `redis_acl` (the
//! documented Redis user) with `store_operations` (everything the store
//! does), `approval_story` (the README's story as that user).

#[path = "../common/mod.rs"]
mod common;

mod approval_story;
mod credentials;
mod redis_acl;
mod store_operations;
mod tls;
mod tls_wire;

use common::admin::Admin;
use common::services::approver;
use countersign::approval::{ApprovalParams, ApprovalStore, Status};

/// The admin API with one approver, dora, a data owner, and one request
/// pending that she may approve (an agent's export, acting for alice):
/// the API and the request's id.
async fn start_admin() -> (Admin, String) {
    let admin = Admin::start("hardening:", vec![approver("dora", &["data-owners"], None)]).await;
    let id = admin
        .open("fp", &["data-owners"], ApprovalParams::default())
        .await;
    (admin, id)
}

/// The request as the store has it: still pending, and nobody voted.
async fn assert_untouched(admin: &Admin, id: &str) {
    let a = admin.store.get(id).await.unwrap().unwrap();
    assert_eq!(a.status, Status::Pending);
    assert!(a.votes.is_empty(), "{:?}", a.votes);
}
