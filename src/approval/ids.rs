//! Approval ids and bearer tokens, and the shard each names: ids, tokens
//! and fingerprints carry their shard so a store finds a request in one
//! round trip.

use sha2::{Digest, Sha256};

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
