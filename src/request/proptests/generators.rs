//! Generators of requests, paths, headers, bodies and claims.

use super::*;

// ---- Generators -------------------------------------------------------------

pub(super) fn any_method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["GET", "POST", "DELETE", "PUT", "get", "post", ""]).prop_map(String::from),
        1 => ".{0,6}",
    ]
}

/// Paths built from the pieces that matter: route segments, separators,
/// dot segments, escapes (good, bad, encoded separators), queries, and
/// arbitrary text.
pub(super) fn any_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => select(vec![
            "/", "//", ".", "..", "%2e", "%2E", "%2F", "%2f", "%5C", "%5c", ";", "\\",
            "%", "%0", "%00", "%ff", "%C3%28", "%C3%A9", "?", "&", "=", "#", "+", "{id}",
            "v1", "datasets", "export", "acme.iam.v1.Roles", "GrantRole", "healthz",
            "files", "format=csv", "limit=1",
        ])
        .prop_map(String::from),
        1 => "[a-zA-Z0-9._~-]{1,8}",
        1 => ".{1,4}",
    ];
    (prop::bool::weighted(0.9), vec(piece, 0..12)).prop_map(|(absolute, pieces)| {
        let path = pieces.concat();
        if absolute { format!("/{path}") } else { path }
    })
}

pub(super) fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "content-type", "user-agent", "x-request-id", "authorization", "cookie",
            "proxy-authorization", "set-cookie", "content-length", "transfer-encoding",
            PARTIAL_BODY_HEADER, "x-countersign-principal", TRUSTED, "x-countersign-approval",
        ])
        .prop_map(String::from),
        1 => "[a-zA-Z0-9-]{1,12}",
    ]
}

/// A header name as Envoy sends it (lower case) or, for a caller other than
/// Envoy, in any case.
pub(super) fn any_case(name: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (name, vec(prop::bool::weighted(0.3), 32), any::<bool>()).prop_map(|(n, upper, as_envoy)| {
        if as_envoy {
            return n;
        }
        n.chars()
            .zip(upper.into_iter().chain(std::iter::repeat(false)))
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

pub(super) fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["0", " 0 ", "12", "true", "chunked", ""]).prop_map(String::from),
        ".{0,12}",
    ]
}

pub(super) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(vec![0.5, 19.99, 1.7e9, 1e300, 0.123456]).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-zA-Z_]{1,4}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

pub(super) fn any_body() -> impl Strategy<Value = Vec<u8>> {
    let deep = format!("{}1{}", r#"{"a":"#.repeat(20), "}".repeat(20));
    prop_oneof![
        Just(vec![]),
        vec(any::<u8>(), 0..32),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        select(vec![
            r#"{"format":"csv","rows":10}"#.to_owned(),
            r#"{"format":"csv","FORMAT":"xml"}"#.to_owned(),
            r#"{"rows":0.123456}"#.to_owned(),
            "{".to_owned(),
            "[1]".to_owned(),
            deep,
        ])
        .prop_map(String::into_bytes),
    ]
}

pub(super) fn any_claims() -> impl Strategy<Value = Option<Map<String, Value>>> {
    let sub = prop_oneof![".{0,6}".prop_map(Value::from), json_value()];
    let groups = prop_oneof![vec("[a-z-]{1,8}", 0..3).prop_map(Value::from), json_value()];
    option::of(
        (json_value(), option::of(sub), option::of(groups)).prop_map(|(extra, sub, groups)| {
            let mut m = match extra {
                Value::Object(m) => m,
                other => Map::from_iter([("x".to_owned(), other)]),
            };
            if let Some(s) = sub {
                m.insert("sub".into(), s);
            }
            if let Some(g) = groups {
                m.insert("groups".into(), g);
            }
            m
        }),
    )
}

prop_compose! {
    pub(super) fn any_request()(
        method in any_method(),
        path in any_path(),
        headers in hash_map(any_case(header_name()), header_value(), 0..8),
        body in any_body(),
        claims in any_claims(),
        peer in select(vec!["", "spiffe://mesh.local/ns/a/sa/b"]),
    ) -> Req {
        let mut req = Req { method, path, headers, body, claims, peer: peer.into() };
        for name in CREDENTIALS {
            req.headers.insert(name.into(), format!("Bearer {CANARY}"));
        }
        req.headers.insert("x-not-listed".into(), CANARY.into());
        req
    }
}

/// A path segment and the bytes it percent-decodes to. Characters that
/// would change the path's structure (`/`, `?`, `%`) and bytes outside
/// printable ASCII are always encoded; others sometimes; hex in either case.
pub(super) fn encoded_segment() -> impl Strategy<Value = (Vec<u8>, String)> {
    let unit = prop_oneof![
        4 => select(vec!['a', 'z', 'A', '0', '9', '-', '.', '_', '~', ';', '\\', '/', '\0',
                         '?', '#', '%', ':', '@', ' ', '{', 'é', '€', '😀'])
            .prop_map(|c| c.to_string().into_bytes()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    vec((unit, any::<bool>(), any::<bool>()), 1..8).prop_map(|units| {
        let (mut raw, mut text) = (Vec::new(), String::new());
        for (bytes, encode, upper) in units {
            for b in bytes {
                raw.push(b);
                let may_be_raw = (0x21..0x7f).contains(&b) && !b"/?%".contains(&b);
                if may_be_raw && !encode {
                    text.push(b as char);
                } else if upper {
                    let _ = write!(text, "%{b:02X}");
                } else {
                    let _ = write!(text, "%{b:02x}");
                }
            }
        }
        (raw, text)
    })
}

/// Whether decoded bytes may name a resource in one path segment.
pub(super) fn nameable(raw: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(raw).ok()?;
    let separator = s.contains([';', '\\', '\0', '/']);
    (!separator && s != "." && s != "..").then_some(s)
}

/// Whether `text` escapes an unreserved character (`%61`), or double-encodes
/// one or a slash or backslash (`%2561`, `%252F`): a normalising Envoy
/// decodes the first, and an upstream may decode either after the policy.
pub(super) fn escapes_unreserved(text: &str) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let byte = |hex: &str| u8::from_str_radix(hex, 16).ok();
    let b = text.as_bytes();
    (0..b.len()).any(|i| {
        let Some(e) = text
            .get(i + 1..i + 3)
            .filter(|_| b[i] == b'%')
            .and_then(byte)
        else {
            return false;
        };
        let again = text.get(i + 3..i + 5).and_then(byte);
        unreserved(e) || (e == b'%' && again.is_some_and(|d| unreserved(d) || b"/\\".contains(&d)))
    })
}
