//! Approvals: which calls need one (Cedar annotations, see [`params`]), the
//! approval request and its lifecycle (pending -> approved | denied ->
//! consumed | revoked | expired), and the Redis store it lives in.

pub mod notify;
pub mod params;
mod redact;
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
    /// W3C traceparent of the check span that opened the request ("" when
    /// telemetry was off), so that approval events link back to it.
    pub opened_by: String,
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
    /// A bearer token for the retry, fresh on every answer while the request
    /// is pending or approved (the store keeps only hashes, so a lost answer
    /// costs nothing: the identical call gets a new token).
    pub token: Option<String>,
    /// Whether this call opened the request.
    pub created: bool,
}

/// The digest that binds an approval to one exact call: who (and for whom),
/// what, on which resource, method, host, path, the whole query (every
/// parameter, not only the allow-listed ones: the upstream sees them all)
/// and the body, if any.
#[derive(Debug, Clone, Copy)]
pub struct FingerprintInput<'a> {
    pub principal: &'a str,
    pub on_behalf_of: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// The raw query string; parameter order does not matter.
    pub query: &'a str,
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
        for f in [
            self.principal,
            self.on_behalf_of,
            self.action,
            self.resource,
            self.method,
            self.host,
            self.path,
        ] {
            field(f.as_bytes());
        }
        let mut query: Vec<_> = form_urlencoded::parse(self.query.as_bytes()).collect();
        query.sort();
        field(&(query.len() as u64).to_be_bytes());
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

/// Requests are spread over this many shards, each a Redis Cluster hash
/// tag of its own. Every sidecar on one store must agree on it.
pub const SHARDS: u8 = 16;

/// Each shard's hash tag, and the Redis Cluster slot it hashes to. The
/// suffixes put shard `i` near the middle of the `i`th sixteenth of the
/// 16,384 slots, so a cluster whose primaries hold equal slot ranges (what
/// `redis-cli --cluster create` makes) gets an even share of shards: 5, 6
/// and 5 on three primaries. (Plain `s00`..`s15` would put 8 on one.)
pub const SHARD_TAGS: [(&str, u16); SHARDS as usize] = [
    ("s00.164", 484),
    ("s01.21", 1421),
    ("s02.19", 2570),
    ("s03.12", 3541),
    ("s04.49", 4710),
    ("s05.42", 5561),
    ("s06.147", 6752),
    ("s07.66", 7735),
    ("s08.209", 8594),
    ("s09.16", 9722),
    ("s10.26", 10639),
    ("s11.164", 11797),
    ("s12.6", 12720),
    ("s13.1", 13927),
    ("s14.45", 14779),
    ("s15.59", 15794),
];

/// The shard named by a hex string's first byte (its low nibble): ids,
/// tokens and fingerprints all carry one. `None` if it is not hex.
pub fn shard_of(hex: &str) -> Option<u8> {
    let byte = u8::from_str_radix(hex.get(..2)?, 16).ok()?;
    Some(byte & (SHARDS - 1))
}

/// Random bytes whose first byte names `shard`, as hex.
fn in_shard<const N: usize>(shard: u8) -> String {
    let mut bytes: [u8; N] = rand::random();
    bytes[0] = (bytes[0] & !(SHARDS - 1)) | (shard & (SHARDS - 1));
    hex::encode(bytes)
}

/// A fresh bearer token and the hash the store keeps. 252 random bits; the
/// other 4 name the request's shard, so a retry finds it in one round trip.
pub fn new_token(shard: u8) -> (String, String) {
    let token = in_shard::<32>(shard);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new approval id in `shard`: short, readable, not a secret.
pub fn new_id(shard: u8) -> String {
    format!("ap-{}", in_shard::<8>(shard))
}

/// The shard of an approval id, `None` if it is not one.
pub fn shard_of_id(id: &str) -> Option<u8> {
    shard_of(id.strip_prefix("ap-")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's slots are Redis' (the redis crate's CRC16), and shard
    /// `i` sits in the `i`th sixteenth of the slots.
    #[test]
    fn shard_tags_hash_to_their_own_sixteenth_of_the_slots() {
        use redis::cluster_routing::Slot;
        for (i, (tag, slot)) in SHARD_TAGS.iter().enumerate() {
            assert_eq!(
                Slot::for_key(format!("countersign:{{{tag}}}:index")),
                Slot::new(*slot).unwrap(),
                "{tag}"
            );
            assert_eq!(usize::from(*slot / 1024), i, "{tag} is outside its range");
        }
    }

    fn fp(path: &str, query: &str, body: &[u8]) -> String {
        FingerprintInput {
            principal: r#"User::"agent""#,
            on_behalf_of: r#"User::"alice""#,
            action: r#"Action::"export""#,
            resource: r#"Dataset::"sales""#,
            method: "POST",
            host: "api",
            path,
            query,
            body,
        }
        .digest()
    }

    #[test]
    fn the_fingerprint_binds_path_every_query_parameter_and_body_but_not_query_order() {
        let p = "/v1/datasets/sales/export";
        let base = fp(p, "a=1&b=2", b"{}");
        assert_eq!(base, fp(p, "b=2&a=1", b"{}"));
        assert_eq!(base, fp(p, "a=%31&b=2", b"{}"), "decoded values compare");
        assert_ne!(base, fp("/v1/datasets/sales/export2", "a=1&b=2", b"{}"));
        assert_ne!(base, fp(p, "a=1", b"{}"));
        assert_ne!(base, fp(p, "a=1&b=2&dest=elsewhere", b"{}"));
        assert_ne!(base, fp(p, "a=1&b=2", b"{ }"));
        assert_ne!(fp("/ab", "", b""), fp("/a", "b=", b""));
        let mut other = FingerprintInput {
            principal: r#"User::"agent""#,
            on_behalf_of: r#"User::"bob""#,
            action: r#"Action::"export""#,
            resource: r#"Dataset::"sales""#,
            method: "POST",
            host: "api",
            path: p,
            query: "a=1&b=2",
            body: b"{}",
        };
        assert_ne!(base, other.digest(), "on behalf of someone else");
        other.on_behalf_of = r#"User::"alice""#;
        assert_eq!(base, other.digest());
        other.host = "other-api";
        assert_ne!(base, other.digest());
    }

    #[test]
    fn tokens_are_256_bit_and_only_their_hash_is_kept() {
        let (t1, h1) = new_token(3);
        let (t2, _) = new_token(3);
        assert_eq!(t1.len(), 64);
        assert_ne!(t1, t2);
        assert_eq!(h1, token_hash(&t1));
        assert_ne!(h1, t1);
    }

    #[test]
    fn ids_and_tokens_name_their_shard_and_stay_random() {
        for shard in 0..SHARDS {
            let id = new_id(shard);
            let (token, _) = new_token(shard);
            assert_eq!(shard_of_id(&id), Some(shard), "{id}");
            assert_eq!(shard_of(&token), Some(shard), "{token}");
            assert_eq!(id.len(), "ap-".len() + 16);
        }
        // The high nibble stays random: ids of one shard differ there too.
        let firsts: std::collections::HashSet<_> =
            (0..200).map(|_| new_id(5)[3..4].to_owned()).collect();
        assert!(firsts.len() > 4, "{firsts:?}");
        assert_eq!(shard_of_id("ap-zz"), None);
        assert_eq!(shard_of_id("nope"), None);
        assert_eq!(shard_of(""), None);
    }
}
