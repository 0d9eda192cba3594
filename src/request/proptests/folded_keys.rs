//! Keys that a case-insensitive reader (Go's `encoding/json`) takes for one
//! key are refused, however they are spelled.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::request::value::parse_strict;

/// `key` respelled: each letter kept, upper- or lower-cased, or swapped for
/// a character that folds to it (`ſ` for `s`, the Kelvin sign for `k`).
fn respelled(key: &str, picks: &[u8]) -> String {
    key.chars()
        .zip(picks.iter().cycle())
        .map(|(c, pick)| match (c.to_ascii_lowercase(), pick % 4) {
            ('s', 1) => '\u{17f}',
            ('k', 1) => '\u{212a}',
            (_, 2) => c.to_ascii_uppercase(),
            (_, 3) => c.to_ascii_lowercase(),
            _ => c,
        })
        .collect()
}

proptest! {
    #[test]
    fn keys_equal_under_folding_are_refused_at_any_depth(
        key in "[a-zA-Zks]{1,8}",
        picks in vec(any::<u8>(), 1..8),
        nested in any::<bool>(),
    ) {
        let other = respelled(&key, &picks);
        let object = format!(r#"{{"{key}":1,"{other}":2}}"#);
        let body = if nested { format!(r#"{{"outer":[{object}]}}"#) } else { object };
        prop_assert!(parse_strict(body.as_bytes()).is_err(), "{}", body);
    }
}
