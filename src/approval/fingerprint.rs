//! The fingerprint that binds an approval to one exact call.

use sha2::{Digest, Sha256};

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
    /// A shadow request binds apart from the enforced one, so that an
    /// approval given for practice never allows a call once enforced.
    pub shadow: bool,
    /// The rules it is approved under ([`super::ApprovalParams::rules`]):
    /// a changed guard needs a new approval.
    pub rules: &'a str,
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
        if self.shadow {
            field(b"shadow");
        }
        field(self.rules.as_bytes());
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            shadow: false,
            rules: "quorum=1",
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
            shadow: false,
            rules: "quorum=1",
        };
        assert_ne!(base, other.digest(), "on behalf of someone else");
        other.on_behalf_of = r#"User::"alice""#;
        assert_eq!(base, other.digest());
        other.host = "other-api";
        assert_ne!(base, other.digest());
        other.host = "api";
        other.shadow = true;
        assert_ne!(base, other.digest(), "a shadow request binds apart");
        other.shadow = false;
        assert_eq!(base, other.digest());
        other.rules = "quorum=2";
        assert_ne!(base, other.digest(), "a changed guard binds apart");
    }
}
