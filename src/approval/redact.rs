//! `Debug` for the store's settings, so that a config printed in a log or
//! a panic shows no Redis password. (A webhook's `Debug` is beside it, in
//! `notifications/webhook.rs`.)

use std::fmt;

use super::redis::StoreConfig;

/// `url` with its passwords replaced by `***`: `redis://user:***@host`, in
/// one URL or each of a cluster's comma-separated seeds, and a Unix
/// socket's `?pass=***`. The user name, host, port and database stay.
pub fn redacted_url(url: &str) -> String {
    seeds(url)
        .into_iter()
        .map(|seed| redact_query(&redact_userinfo(seed)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits at the commas that start another URL (`, rediss://...`): a comma
/// inside one URL, as in a password, is kept with it.
fn seeds(url: &str) -> Vec<&str> {
    let mut seeds = Vec::new();
    let mut start = 0;
    for (i, _) in url.match_indices(',') {
        if starts_with_scheme(&url[i + 1..]) {
            seeds.push(&url[start..i]);
            start = i + 1;
        }
    }
    seeds.push(&url[start..]);
    seeds
}

fn starts_with_scheme(s: &str) -> bool {
    s.trim_start().split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    })
}

/// `user:password@` -> `user:***@`. The user information ends at the last
/// `@`: a password may hold an unescaped `@`, `/` or `?`.
fn redact_userinfo(seed: &str) -> String {
    let Some((scheme, rest)) = seed.split_once("://") else {
        return seed.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => seed.to_owned(),
        },
        None => seed.to_owned(),
    }
}

/// `?pass=secret&db=1` -> `?pass=***&db=1` (how a Unix socket URL carries
/// its password).
fn redact_query(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key @ ("pass" | "password"), _)) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redacted_url(&self.url))
            .field("cluster", &self.cluster)
            .field("replica_acks", &self.replica_acks)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("retention", &self.retention)
            .field("audit_max_len", &self.audit_max_len)
            .field("audit_max_age", &self.audit_max_age)
            .field("max_pending_per_principal", &self.max_pending_per_principal)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_redis_password_is_replaced_and_the_rest_kept() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://u:s3cret@host:6379/2", "redis://u:***@host:6379/2"),
            ("redis://:s3cret@host", "redis://:***@host"),
            (
                "rediss://default:s3cret@host:6380",
                "rediss://default:***@host:6380",
            ),
            ("redis://user@host", "redis://user@host"),
            // Unescaped separators in a password stay inside it.
            (
                "redis://u:pa,ss@10.0.0.1:6379",
                "redis://u:***@10.0.0.1:6379",
            ),
            ("redis://u:p@s/s?x@host", "redis://u:***@host"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }

    #[test]
    fn each_seed_of_a_cluster_is_redacted() {
        assert_eq!(
            redacted_url(
                "redis://u:s3cret@10.0.0.1:6379, rediss://:t0ken,x@10.0.0.2:6380,redis://10.0.0.3"
            ),
            "redis://u:***@10.0.0.1:6379, rediss://:***@10.0.0.2:6380,redis://10.0.0.3"
        );
    }

    #[test]
    fn debug_shows_no_redis_password() {
        let store = StoreConfig {
            url: "rediss://app:s3cret@redis.internal:6380".into(),
            cluster: false,
            replica_acks: 0,
            prefix: "countersign:".into(),
            timeout: Duration::from_millis(250),
            retention: Duration::from_secs(60),
            audit_max_len: 10,
            audit_max_age: None,
            max_pending_per_principal: 20,
        };
        let shown = format!("{store:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("rediss://app:***@redis.internal:6380"),
            "{shown}"
        );
    }
}
