//! Key layout. Each shard keeps all its keys under one hash tag, `{p}{tag}:`
//! ([`SHARD_TAGS`]; prefix `countersign:` by default), so a script touches
//! one cluster slot: `a:<id>` hash of the request, with `a:<id>:voters` set
//! and `a:<id>:votes` list; `fp:<fingerprint>` and `tok:<token hash>`
//! pointers to the id; `index` sorted by creation; `pending` and `approved`
//! sorted by when those requests expire; `pending_of:<principal>`, the
//! fingerprints a principal has pending (on the principal's shard); the audit stream `audit`; and the
//! sharded pub/sub channel `events` (`SPUBLISH <kind> <id>`). The shard
//! comes from the fingerprint, and ids and tokens carry it.

use super::RedisStore;
use crate::approval::{SHARD_TAGS, SHARDS, shard_of, shard_of_id};

impl RedisStore {
    /// `{p}{tag}:`, the start of every key in `shard`.
    pub(super) fn shard(&self, shard: u8) -> String {
        let (tag, _) = SHARD_TAGS[usize::from(shard & (SHARDS - 1))];
        format!("{}{{{tag}}}:", self.cfg.prefix)
    }

    /// The hash of request `id`, `None` if `id` is not an approval id.
    pub(super) fn key(&self, id: &str) -> Option<String> {
        shard_of_id(id).map(|s| format!("{}a:{id}", self.shard(s)))
    }

    /// Each shard's stream's share of the `audit_max_len` guard.
    pub(super) fn audit_len(&self) -> u64 {
        self.cfg.audit_max_len.div_ceil(u64::from(SHARDS)).max(1)
    }

    /// The set of `principal`'s pending fingerprints, on the principal's
    /// own shard: requests of one principal spread over every shard, and a
    /// count that each shard kept would not add up atomically.
    pub(super) fn pending_of(&self, principal: &str) -> String {
        format!("{}pending_of:{principal}", self.shard(spread(principal)))
    }
}

/// A shard for text that names none (FNV-1a, folded).
pub(super) fn spread(text: &str) -> u8 {
    let h = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h ^ (h >> 16)) as u8 & (SHARDS - 1)
}

/// The shard of a request, from its fingerprint (hex, as computed; any
/// other text is spread).
pub(super) fn fingerprint_shard(fingerprint: &str) -> u8 {
    shard_of(fingerprint).unwrap_or_else(|| spread(fingerprint))
}
