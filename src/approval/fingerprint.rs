//! The fingerprint that binds an approval to one exact call.

use sha2::{Digest, Sha256};

/// The digest that binds an approval to one exact call: who (and for whom),
/// what, on which resource, method, host, path, the whole query (every
/// parameter, not only the allow-listed ones: the upstream sees them all),
/// how the body says it is to be read, and the body, if any.
#[derive(Debug, Clone, Copy)]
pub struct FingerprintInput<'a> {
    pub principal: &'a str,
    pub on_behalf_of: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// The query string exactly as sent (Envoy forwards it untouched):
    /// order, repeats and escapes all bind, since upstreams differ on
    /// which copy of a repeated parameter wins and decoding is not
    /// injective (`+`, `%20`, `%2B`).
    pub query: &'a str,
    pub body: &'a [u8],
    /// The `content-type` and `content-encoding` headers as sent ("" when
    /// absent): the same bytes read as another type are another call.
    pub content_type: &'a str,
    pub content_encoding: &'a str,
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
        field(self.query.as_bytes());
        field(self.content_type.as_bytes());
        field(self.content_encoding.as_bytes());
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
            content_type: "application/json",
            content_encoding: "",
            shadow: false,
            rules: "quorum=1",
        }
        .digest()
    }

    #[test]
    fn the_fingerprint_binds_path_the_query_as_sent_content_type_and_body() {
        let p = "/v1/datasets/sales/export";
        let base = fp(p, "a=1&b=2", b"{}");
        assert_eq!(base, fp(p, "a=1&b=2", b"{}"));
        // Upstreams that read the first (or last) copy of a repeated
        // parameter, or decode differently, may act on either.
        assert_ne!(base, fp(p, "b=2&a=1", b"{}"), "order binds");
        assert_ne!(
            fp(p, "mode=dry-run&mode=apply", b""),
            fp(p, "mode=apply&mode=dry-run", b"")
        );
        assert_ne!(base, fp(p, "a=%31&b=2", b"{}"), "escapes bind as written");
        for (x, y) in [
            ("a=b+c", "a=b%20c"),
            ("a=b+c", "a=b%2Bc"),
            ("a=%FF", "a=%FE"),
        ] {
            assert_ne!(fp(p, x, b""), fp(p, y, b""), "{x} vs {y}");
        }
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
            content_type: "application/json",
            content_encoding: "",
            shadow: false,
            rules: "quorum=1",
        };
        assert_ne!(base, other.digest(), "on behalf of someone else");
        other.on_behalf_of = r#"User::"alice""#;
        assert_eq!(base, other.digest());
        other.host = "other-api";
        assert_ne!(base, other.digest());
        other.host = "api";
        // The same bytes read as another type, or decompressed, are
        // another call.
        other.content_type = "application/json; charset=utf-8";
        assert_ne!(base, other.digest(), "content type binds");
        other.content_type = "application/json";
        other.content_encoding = "identity";
        assert_ne!(base, other.digest(), "content encoding binds");
        other.content_encoding = "";
        assert_eq!(base, other.digest());
        other.shadow = true;
        assert_ne!(base, other.digest(), "a shadow request binds apart");
        other.shadow = false;
        assert_eq!(base, other.digest());
        other.rules = "quorum=2";
        assert_ne!(base, other.digest(), "a changed guard binds apart");
    }

    proptest::proptest! {
        /// Queries (or paths, bodies) that differ in any byte never share a
        /// fingerprint: nothing is decoded, sorted or merged before hashing.
        #[test]
        fn queries_that_differ_in_bytes_never_share_a_fingerprint(
            // Small alphabets, so that equal texts and texts that decode,
            // sort or fold alike (`+`, `%20`, `a&b`, `b&a`) come up often.
            a in "[ab=&+%20]{0,5}",
            b in "[ab=&+%20]{0,5}",
            body_a in "[{}\"rows:1\u{17f}S]{0,4}",
            body_b in "[{}\"rows:1\u{17f}S]{0,4}",
        ) {
            let p = "/v1/datasets/sales/export";
            let same = a == b && body_a == body_b;
            let equal = fp(p, &a, body_a.as_bytes()) == fp(p, &b, body_b.as_bytes());
            proptest::prop_assert_eq!(equal, same, "{:?} {:?} {:?} {:?}", a, b, body_a, body_b);
        }
    }
}
