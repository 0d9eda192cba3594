//! Without a certificate or a token, no admin call gets through, and the
//! CLI says how to authenticate.

use countersign::admin::pb;
use countersign::approval::{ApprovalStore, Status};
use tonic::Code;

use crate::common::admin::decide;
use crate::{assert_untouched, start_admin};

/// What the service answers a caller that brings neither a certificate nor
/// a token.
const NO_CREDENTIALS: &str =
    "no client certificate and no bearer token: authenticate with --cert/--key or --token";

#[tokio::test]
async fn without_credentials_every_admin_call_is_refused_and_the_cli_says_how_to_authenticate() {
    let (admin, id) = start_admin().await;
    let mut anonymous = admin.client(None).await;

    let refusals = [
        (
            "List",
            anonymous
                .list(pb::ListRequest::default())
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "Get",
            anonymous
                .get(pb::GetRequest { id: id.clone() })
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "Approve",
            anonymous
                .approve(decide(&id, "quarterly report"))
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "Deny",
            anonymous
                .deny(decide(&id, "quarterly report"))
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "Revoke",
            anonymous
                .revoke(decide(&id, "quarterly report"))
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "Watch",
            anonymous
                .watch(pb::WatchRequest::default())
                .await
                .map(drop)
                .unwrap_err(),
        ),
    ];
    for (call, err) in refusals {
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unauthenticated, NO_CREDENTIALS),
            "{call}"
        );
    }

    // What an approver who forgot --cert (and never signed in) sees: one
    // sentence, exit code 1, before anything is sent.
    for args in [
        &["list"][..],
        &["show", &id],
        &["approve", &id, "--reason", "quarterly report"],
        &["deny", &id, "--reason", "no"],
    ] {
        let (code, stderr) = admin.cli(None, args).await;
        assert_eq!(
            (code, stderr.as_str()),
            (
                1,
                format!(
                    "countersign: not signed in to `{}`: run `countersign login` (or give --cert/--key or --token)\n",
                    admin.url()
                )
                .as_str()
            ),
            "approvals {args:?}"
        );
    }
    assert_untouched(&admin, &id).await;

    // The same approver with her certificate may decide: the refusals above
    // were about the missing credentials, not the request.
    let (code, stderr) = admin
        .cli(
            Some(admin.pki.client("dora")),
            &["approve", &id, "--reason", "quarterly report"],
        )
        .await;
    assert_eq!(code, 0, "{stderr}");
    let a = admin.store.get(&id).await.unwrap().unwrap();
    assert_eq!(a.status, Status::Approved);
}
