//! Key layout. Each shard keeps all its keys under one hash tag, `{p}{tag}:`
//! ([`SHARD_TAGS`]; prefix `countersign:` by default), so a script touches
//! one cluster slot: `a:<id>` hash of the request, with `a:<id>:voters` set
//! and `a:<id>:votes` list; `fp:<fingerprint>` and `tok:<token hash>`
//! pointers to the id; `index` sorted by creation; `pending` and `approved`
//! sorted by when those requests expire; the audit stream `audit`; and the
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

    /// Each shard's stream keeps its share of `audit_max_len`.
    pub(super) fn audit_len(&self) -> u64 {
        self.cfg.audit_max_len.div_ceil(u64::from(SHARDS)).max(1)
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
