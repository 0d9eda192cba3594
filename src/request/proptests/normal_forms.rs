//! Paths in the form a normalising Envoy forwards, and the variations of
//! them it would not.

use super::*;

// ---- Normal forms and their variations ----------------------------------------

/// A path in the form a normalising Envoy forwards, as segments.
#[derive(Debug, Clone)]
pub(super) struct NormalPath {
    pub(super) method: &'static str,
    pub(super) segments: Vec<String>,
    /// Segments whose case names the route (not a parameter's value).
    literal: Vec<bool>,
}

pub(super) fn render(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}

pub(super) fn normal_path() -> impl Strategy<Value = NormalPath> {
    let id = "[a-z0-9][a-z0-9._~-]{0,7}";
    let dataset = |method: &'static str, export: bool| {
        id.prop_map(move |id| {
            let mut segments = vec!["v1".to_owned(), "datasets".to_owned(), id];
            let mut literal = vec![true, true, false];
            if export {
                segments.push("export".into());
                literal.push(true);
            }
            NormalPath {
                method,
                segments,
                literal,
            }
        })
    };
    let words = vec![
        "v1",
        "datasets",
        "export",
        "healthz",
        "acme.iam.v1.Roles",
        "GrantRole",
        "sales",
        "a-b",
        "x_y",
        "~t",
    ];
    prop_oneof![
        dataset("GET", false),
        dataset("DELETE", false),
        dataset("POST", true),
        Just(NormalPath {
            method: "POST",
            segments: vec!["acme.iam.v1.Roles".into(), "GrantRole".into()],
            literal: vec![true, true],
        }),
        // Mostly the default route; the case of these is not changed, as it
        // may be a parameter's.
        vec(select(words), 1..4).prop_map(|s| NormalPath {
            method: "GET",
            literal: vec![false; s.len()],
            segments: s.into_iter().map(String::from).collect(),
        }),
    ]
}

#[derive(Debug, Clone)]
pub(super) enum Variation {
    // Never forwarded by Envoy with `normalize_path`, `merge_slashes` and
    // escaped slashes rejected.
    Dot {
        at: usize,
        encoded: u8,
    },
    DotDot {
        at: usize,
        encoded: u8,
    },
    Empty {
        at: usize,
    },
    Slash {
        at: usize,
        with: &'static str,
    },
    /// A percent-encoded unreserved character, which Envoy decodes.
    Escape {
        seg: usize,
        at: usize,
        upper: bool,
    },
    // Forwarded by a normalising Envoy, and refused by countersign: a
    // dot segment with parameters (`..;v`), which Tomcat and Spring
    // resolve, and double-encoded dots, slashes and backslashes.
    DotParam {
        at: usize,
        params: &'static str,
    },
    Double {
        at: usize,
        with: &'static str,
    },
    // Forwarded, and read as the same path by lenient upstreams.
    Matrix {
        seg: usize,
    },
    Case {
        seg: usize,
        at: usize,
    },
    Trailing,
}

pub(super) fn variation() -> impl Strategy<Value = Variation> {
    let n = 0..16usize;
    prop_oneof![
        (n.clone(), any::<u8>()).prop_map(|(at, encoded)| Variation::Dot { at, encoded }),
        (n.clone(), any::<u8>()).prop_map(|(at, encoded)| Variation::DotDot { at, encoded }),
        n.clone().prop_map(|at| Variation::Empty { at }),
        (n.clone(), select(vec!["%2F", "%2f", "%5C", "%5c", "\\"]))
            .prop_map(|(at, with)| Variation::Slash { at, with }),
        n.clone().prop_map(|seg| Variation::Matrix { seg }),
        (n.clone(), select(vec![";", ";v=1", ";x"]))
            .prop_map(|(at, params)| Variation::DotParam { at, params }),
        (
            n.clone(),
            select(vec![
                "%252e", "%252E", "%252f", "%252F", "%255c", "%255C", "%2561"
            ])
        )
            .prop_map(|(at, with)| Variation::Double { at, with }),
        (n.clone(), n.clone(), any::<bool>()).prop_map(|(seg, at, upper)| Variation::Escape {
            seg,
            at,
            upper
        }),
        (n.clone(), n).prop_map(|(seg, at)| Variation::Case { seg, at }),
        Just(Variation::Trailing),
    ]
}

/// `count` dots, those whose bit is set in `encoded` written `%2e`/`%2E`.
pub(super) fn dots(count: usize, encoded: u8) -> String {
    (0..count)
        .map(|i| match (encoded >> (2 * i)) & 3 {
            1 => "%2e",
            2 => "%2E",
            _ => ".",
        })
        .collect()
}

/// The path with the variations applied, and whether one of them is a form
/// a normalising Envoy never forwards.
pub(super) fn vary(normal: &NormalPath, variations: &[Variation]) -> (String, bool) {
    let mut segs = normal.segments.clone();
    let mut abnormal = false;
    // Edits within segments first, while indices still name the normal
    // form's segments.
    for v in variations {
        match *v {
            Variation::Matrix { seg } => {
                let i = seg % segs.len();
                segs[i].push_str(";v=1");
            }
            Variation::Escape { seg, at, upper } => {
                let i = seg % segs.len();
                let Some((k, c)) = nth_char(&segs[i], at) else {
                    continue;
                };
                if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                    abnormal = true;
                    let escaped = if upper {
                        format!("%{:02X}", c as u8)
                    } else {
                        format!("%{:02x}", c as u8)
                    };
                    segs[i].replace_range(k..k + 1, &escaped);
                }
            }
            Variation::Case { seg, at } => {
                let i = seg % segs.len();
                if !normal.literal[i] {
                    continue;
                }
                let Some((k, c)) = nth_char(&segs[i], at) else {
                    continue;
                };
                let flipped = if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                };
                segs[i].replace_range(k..k + 1, &flipped.to_string());
            }
            _ => {}
        }
    }
    for v in variations {
        match *v {
            Variation::Dot { at, encoded } => {
                segs.insert(at % (segs.len() + 1), dots(1, encoded));
                abnormal = true;
            }
            Variation::DotDot { at, encoded } => {
                let i = at % (segs.len() + 1);
                segs.insert(i, dots(2, encoded));
                segs.insert(i, "x".into());
                abnormal = true;
            }
            // Not after the last segment: that is a trailing `/`.
            Variation::Empty { at } => {
                segs.insert(at % segs.len(), String::new());
                abnormal = true;
            }
            Variation::DotParam { at, params } => {
                let i = at % (segs.len() + 1);
                segs.insert(i, format!("..{params}"));
                segs.insert(i, "x".into());
                abnormal = true;
            }
            Variation::Double { at, with } => {
                let i = at % segs.len();
                segs[i].push_str(with);
                abnormal = true;
            }
            Variation::Slash { at, with } if segs.len() >= 2 => {
                let i = at % (segs.len() - 1);
                let next = segs.remove(i + 1);
                segs[i] = format!("{}{with}{next}", segs[i]);
                abnormal = true;
            }
            _ => {}
        }
    }
    if variations.iter().any(|v| matches!(v, Variation::Trailing)) {
        segs.push(String::new());
    }
    (render(&segs), abnormal)
}

/// The `at`-th character (modulo the length) and its byte offset.
pub(super) fn nth_char(s: &str, at: usize) -> Option<(usize, char)> {
    let count = s.chars().count();
    (count > 0)
        .then(|| s.char_indices().nth(at % count))
        .flatten()
}

/// A query parameter name as written and as decoded.
pub(super) fn query_name() -> impl Strategy<Value = (String, &'static str)> {
    select(vec![
        ("format", "format"),
        ("limit", "limit"),
        ("for%6Dat", "format"),
        ("%66ormat", "format"),
        ("lim%69t", "limit"),
        ("FORMAT", "FORMAT"),
        ("x", "x"),
    ])
    .prop_map(|(w, n)| (w.to_owned(), n))
}

/// Values heavy in what form encoding treats specially.
pub(super) fn query_value() -> impl Strategy<Value = String> {
    prop_oneof!["[ +&=%#;?/a-z]{0,8}", ".{0,10}"]
}

/// `application/x-www-form-urlencoded`, or every byte as `%XX` (mixed case).
pub(super) fn encode_query(value: &str, every_byte: bool) -> String {
    if !every_byte {
        return form_urlencoded::byte_serialize(value.as_bytes()).collect();
    }
    value
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            if i % 2 == 0 {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// A body the export route can represent: lower-case (so distinct) keys,
/// integers, strings, booleans, nulls, one level of nesting.
pub(super) fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    let value = prop_oneof![
        3 => leaf.clone(),
        1 => hash_map("[a-z]{1,4}", leaf, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ];
    hash_map("[a-z]{1,6}", value, 0..5).prop_map(|m| m.into_iter().collect())
}
