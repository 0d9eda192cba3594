//! Approvals: which calls need one (Cedar annotations, see [`params`]), the
//! approval request and its lifecycle (pending -> approved | denied ->
//! consumed | revoked | expired), and the Redis store it lives in.

pub mod notify;
pub mod params;
pub mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use params::{ApprovalParams, Mode};
pub use store::{RedisStore, StoreConfig, StoreError};

/// Where a request stands. `Expired` is computed from the clock: a pending
/// request past its deadline, or an approval past its use window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Revoked,
    Consumed,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Revoked => "revoked",
            Status::Consumed => "consumed",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Revoked,
        Status::Consumed,
        Status::Expired,
    ];
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an approver needs to judge a request; fixed when it opens. Never
/// holds credentials or a raw body: only what [`ApprovalParams::show`] names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub principal: String,
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    pub action: String,
    pub resource: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub source_address: String,
    pub policies: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub approver_groups: Vec<String>,
    pub quorum: u32,
    pub uses: u32,
    pub reason_required: bool,
    pub mode: Mode,
}

/// One approver's act on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    /// `approve`, `deny` or `revoke`.
    pub verdict: String,
    pub reason: String,
    pub at: i64,
}

/// An approval request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    pub status: Status,
    pub info: RequestInfo,
    pub created_at: i64,
    pub expires_at: i64,
    /// 0 until approved.
    pub use_until: i64,
    pub uses_left: u32,
    pub votes: Vec<Vote>,
}

/// What a new approvable call asks the store for.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub fingerprint: String,
    pub info: RequestInfo,
    pub params: ApprovalParams,
}

/// The store's answer to an approvable call without a token.
#[derive(Debug, Clone)]
pub struct Opened {
    pub approval: Approval,
    /// The bearer token for the retry; only when this call opened the request
    /// (the store keeps a hash, so it can be shown once).
    pub token: Option<String>,
}

/// The digest that binds an approval to one exact call: principal, action,
/// resource, method, path, the allow-listed query and the body, if any.
#[derive(Debug, Clone, Copy)]
pub struct FingerprintInput<'a> {
    pub principal: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// Allow-listed query parameters, in any order.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

impl FingerprintInput<'_> {
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        // Length-prefix every field so that no two inputs share an encoding.
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        field(self.principal.as_bytes());
        field(self.action.as_bytes());
        field(self.resource.as_bytes());
        field(self.method.as_bytes());
        field(self.path.as_bytes());
        let mut query: Vec<_> = self.query.iter().collect();
        query.sort();
        for (k, v) in query {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        if !self.body.is_empty() {
            field(&Sha256::digest(self.body));
        }
        hex::encode(h.finalize())
    }
}

/// A fresh bearer token (256 random bits) and the hash the store keeps.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = hex::encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new approval id: short, readable, not a secret.
pub fn new_id() -> String {
    let bytes: [u8; 8] = rand::random();
    format!("ap-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(path: &str, query: &[(String, String)], body: &[u8]) -> String {
        FingerprintInput {
            principal: r#"User::"agent""#,
            action: r#"Action::"export""#,
            resource: r#"Dataset::"sales""#,
            method: "POST",
            path,
            query,
            body,
        }
        .digest()
    }

    #[test]
    fn the_fingerprint_binds_path_query_and_body_but_not_query_order() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let base = fp(
            "/v1/datasets/sales/export",
            &q(&[("a", "1"), ("b", "2")]),
            b"{}",
        );
        assert_eq!(
            base,
            fp(
                "/v1/datasets/sales/export",
                &q(&[("b", "2"), ("a", "1")]),
                b"{}"
            )
        );
        assert_ne!(
            base,
            fp(
                "/v1/datasets/sales/export2",
                &q(&[("a", "1"), ("b", "2")]),
                b"{}"
            )
        );
        assert_ne!(
            base,
            fp("/v1/datasets/sales/export", &q(&[("a", "1")]), b"{}")
        );
        assert_ne!(
            base,
            fp(
                "/v1/datasets/sales/export",
                &q(&[("a", "1"), ("b", "2")]),
                b"{ }"
            )
        );
        assert_ne!(fp("/ab", &[], b""), fp("/a", &q(&[("b", "")]), b""));
    }

    #[test]
    fn tokens_are_256_bit_and_only_their_hash_is_kept() {
        let (t1, h1) = new_token();
        let (t2, _) = new_token();
        assert_eq!(t1.len(), 64);
        assert_ne!(t1, t2);
        assert_eq!(h1, token_hash(&t1));
        assert_ne!(h1, t1);
    }
}
