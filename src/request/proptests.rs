//! Property tests of request mapping: the rules that keep the policy and the
//! upstream looking at the same request, over generated requests.
//! `PROPTEST_CASES=10000 cargo test --lib request::proptests` searches harder.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{EntityTypeName, EntityUid, EvalResult};
use proptest::collection::{hash_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use super::*;
use crate::config::Config;

/// The embedded default configuration: the example API.
static DEFAULT: LazyLock<Mapper> =
    LazyLock::new(|| Config::load(None, &HashMap::new()).unwrap().mapper);

/// Header a trusted proxy would set, in [`CUSTOM`].
const TRUSTED: &str = "x-authenticated-user";

/// The default configuration plus a catch-all route and a trusted header.
static CUSTOM: LazyLock<Mapper> = LazyLock::new(|| {
    let mut m = Config::load(None, &HashMap::new()).unwrap().mapper;
    let mut specs: Vec<RouteSpec> = m.routes.specs().cloned().collect();
    specs.push(RouteSpec {
        method: Some("GET".into()),
        path: "/files/{*rest}".into(),
        action: EntityUid::from_str(r#"Action::"read_file""#).unwrap(),
        resource_type: EntityTypeName::from_str("File").unwrap(),
        resource_id: "{*rest}".into(),
        body: false,
    });
    let table = RouteTable::new(
        specs,
        m.routes.default_action().clone(),
        m.routes.default_resource_type().clone(),
    )
    .unwrap();
    m.routes = table;
    m.identity.trusted_header = Some((TRUSTED.into(), EntityTypeName::from_str("User").unwrap()));
    m
});

/// Put in credentials and headers no policy may read; must never come back.
const CANARY: &str = "c4n4ry-53cr3t";
const CREDENTIALS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

fn cases() -> ProptestConfig {
    // No regression files in the source tree: a failure prints its input.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    claims: Option<Map<String, Value>>,
    peer: String,
}

impl Req {
    fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            headers: HashMap::new(),
            body: vec![],
            claims: None,
            peer: String::new(),
        }
    }

    fn map(&self, m: &Mapper) -> Result<MappedRequest, MappingError> {
        m.map(&HttpRequest {
            method: &self.method,
            path: &self.path,
            host: "api.example.com",
            scheme: "https",
            headers: &self.headers,
            body: &self.body,
            source_address: "10.1.2.3",
            source_principal: &self.peer,
            jwt_claims: self.claims.as_ref(),
            request_id: "req-1",
            time: Some(1_700_000_000),
        })
    }
}

/// (action, resource) as Cedar writes them.
fn target(m: &MappedRequest) -> (String, String) {
    (m.action.to_string(), m.resource.to_string())
}

fn routed(m: &MappedRequest) -> bool {
    m.action != *DEFAULT.routes.default_action()
}

/// `context.http` as Cedar text.
fn http_text(m: &MappedRequest) -> String {
    let request = m.request(false).unwrap();
    request.context().unwrap().get("http").unwrap().to_string()
}

/// `context.http.<field>` (headers, query): a record of strings.
fn http_strings(m: &MappedRequest, field: &str) -> BTreeMap<String, String> {
    let request = m.request(false).unwrap();
    let Some(EvalResult::Record(http)) = request.context().unwrap().get("http") else {
        panic!("no context.http")
    };
    let Some(EvalResult::Record(r)) = http.get(field) else {
        panic!("no context.http.{field}")
    };
    r.iter()
        .map(|(k, v)| match v {
            EvalResult::String(s) => (k.clone(), s.clone()),
            other => panic!("context.http.{field}.{k} is {other:?}"),
        })
        .collect()
}

// ---- Generators -------------------------------------------------------------

fn any_method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec!["GET", "POST", "DELETE", "PUT", "get", "post", ""]).prop_map(String::from),
        1 => ".{0,6}",
    ]
}

/// Paths built from the pieces that matter: route segments, separators,
/// dot segments, escapes (good, bad, encoded separators), queries, and
/// arbitrary text.
fn any_path() -> impl Strategy<Value = String> {
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

fn header_name() -> impl Strategy<Value = String> {
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
fn any_case(name: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
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

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["0", " 0 ", "12", "true", "chunked", ""]).prop_map(String::from),
        ".{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
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

fn any_body() -> impl Strategy<Value = Vec<u8>> {
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

fn any_claims() -> impl Strategy<Value = Option<Map<String, Value>>> {
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
    fn any_request()(
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
fn encoded_segment() -> impl Strategy<Value = (Vec<u8>, String)> {
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
fn nameable(raw: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(raw).ok()?;
    let separator = s.contains([';', '\\', '\0', '/']);
    (!separator && s != "." && s != "..").then_some(s)
}

// ---- Properties -------------------------------------------------------------

proptest! {
    #![proptest_config(cases())]

    /// Any request maps or is refused, without panicking; an accepted one
    /// always yields a Cedar request (with and without an approval), falls
    /// back to `Path::"<path>"` when no route matches, and neither it nor a
    /// refusal ever carries a credential or a header no policy may read.
    #[test]
    fn mapping_is_total_and_never_leaks_what_it_must_not_read(req in any_request()) {
        for mapper in [&*DEFAULT, &*CUSTOM] {
            match req.map(mapper) {
                Ok(m) => {
                    for granted in [false, true] {
                        prop_assert!(m.request(granted).is_ok());
                    }
                    let http = http_text(&m);
                    prop_assert!(!http.contains(CANARY), "{http}");
                    if !routed(&m) {
                        let path = req.path.split_once('?').map_or(req.path.as_str(), |p| p.0);
                        prop_assert_eq!(m.resource.id().unescaped(), path);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(!msg.is_empty());
                    prop_assert!(!msg.contains(CANARY), "{msg}");
                }
            }
        }
    }

    /// A route's resource id is exactly the percent-decoded path segment,
    /// however it was encoded (so every encoding of a name is the same
    /// resource); a segment that decodes to a separator (`;`, `\`, NUL, `/`),
    /// to a dot segment or to bytes that are not UTF-8 is refused.
    #[test]
    fn a_path_parameter_is_exactly_its_decoded_segment(
        (raw, text) in encoded_segment(),
        route in 0..3usize,
    ) {
        let (method, path, action) = match route {
            0 => ("GET", format!("/v1/datasets/{text}"), "read"),
            1 => ("DELETE", format!("/v1/datasets/{text}"), "delete"),
            _ => ("POST", format!("/v1/datasets/{text}/export"), "export"),
        };
        match (Req::new(method, &path).map(&DEFAULT), nameable(&raw)) {
            (Ok(m), Some(name)) => {
                prop_assert_eq!(m.action.to_string(), format!(r#"Action::"{action}""#));
                prop_assert_eq!(m.resource.type_name().to_string(), "Dataset");
                prop_assert_eq!(m.resource.id().unescaped(), name);
            }
            (Ok(m), None) => prop_assert!(false, "`{path}` mapped to {:?}", target(&m)),
            (Err(e), Some(_)) => prop_assert!(false, "`{path}` refused: {e}"),
            (Err(e), None) => prop_assert!(
                matches!(e, MappingError::Param(_) | MappingError::PathNotNormalised(_)),
                "`{path}`: {e:?}"
            ),
        }
    }

    /// A catch-all's resource id is its decoded segments joined by `/`: it
    /// may span segments, but no segment may hide a separator, a dot
    /// segment or an encoded `/`.
    #[test]
    fn a_catch_all_is_its_decoded_segments(segments in vec(encoded_segment(), 1..4)) {
        let path = format!(
            "/files/{}",
            segments.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("/")
        );
        let names: Option<Vec<&str>> = segments.iter().map(|(raw, _)| nameable(raw)).collect();
        match (Req::new("GET", &path).map(&CUSTOM), names) {
            (Ok(m), Some(names)) => {
                prop_assert_eq!(m.action.to_string(), r#"Action::"read_file""#);
                prop_assert_eq!(m.resource.id().unescaped(), names.join("/"));
            }
            (Ok(m), None) => prop_assert!(false, "`{path}` mapped to {:?}", target(&m)),
            (Err(e), Some(_)) => prop_assert!(false, "`{path}` refused: {e}"),
            (Err(_), None) => {}
        }
    }

    /// A path written differently from its normal form (dot segments, `//`,
    /// encoded or back slashes, `;` parameters, percent-encoded unreserved
    /// characters, a different case or a trailing `/`) is refused, or maps
    /// to exactly what the normal form maps to whenever either reaches a
    /// route. Forms a normalising Envoy never forwards are always refused.
    #[test]
    fn a_path_maps_like_its_normal_form_or_is_refused(
        normal in normal_path(),
        variations in vec(variation(), 1..4),
    ) {
        let path = render(&normal.segments);
        let base = Req::new(normal.method, &path)
            .map(&DEFAULT)
            .map_err(|e| TestCaseError::fail(format!("normal form `{path}` refused: {e}")))?;
        let (variant, abnormal) = vary(&normal, &variations);
        if let Ok(m) = Req::new(normal.method, &variant).map(&DEFAULT) {
            prop_assert!(
                !abnormal,
                "`{variant}` is not normalised, yet mapped to {:?}",
                target(&m)
            );
            if routed(&base) || routed(&m) {
                prop_assert_eq!(target(&m), target(&base), "`{}` vs `{}`", variant, path);
            }
        }
    }

    /// Only allow-listed headers reach `context.http.headers`, with their
    /// exact values, and only under the lower-case names Envoy sends; a
    /// credential never does, whatever the case of its name.
    #[test]
    fn only_allow_listed_headers_reach_the_context(
        headers in hash_map(any_case(header_name()), ".{0,12}", 0..10),
    ) {
        let mut req = Req::new("GET", "/v1/datasets/sales");
        for (k, v) in headers {
            let credential = CREDENTIALS.contains(&k.to_ascii_lowercase().as_str());
            req.headers.insert(k, if credential { CANARY.into() } else { v });
        }
        let m = req.map(&DEFAULT).unwrap();
        let seen = http_strings(&m, "headers");
        let listed = &DEFAULT.context.headers;
        for (k, v) in &seen {
            prop_assert!(listed.contains(k), "`{k}` is not allow-listed");
            prop_assert_eq!(req.headers.get(k), Some(v));
        }
        for name in listed {
            prop_assert_eq!(seen.contains_key(name), req.headers.contains_key(name), "{}", name);
        }
        prop_assert!(!http_text(&m).contains(CANARY));
    }

    /// Allow-listed query parameters reach the context decoded, exactly as
    /// sent (`+`, `%20`, any hex case), names decoded too; one that appears
    /// twice is refused, since frameworks disagree on which copy wins.
    #[test]
    fn query_parameters_decode_exactly_and_a_repeated_one_is_refused(
        pairs in vec((query_name(), query_value(), any::<bool>()), 0..5),
    ) {
        let query = pairs
            .iter()
            .map(|((written, _), value, every_byte)| {
                format!("{written}={}", encode_query(value, *every_byte))
            })
            .collect::<Vec<_>>()
            .join("&");
        let result = Req::new("GET", &format!("/v1/datasets/sales?{query}")).map(&DEFAULT);
        let listed: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|((_, name), _, _)| DEFAULT.context.query.iter().any(|q| q == name))
            .map(|((_, name), value, _)| (*name, value.as_str()))
            .collect();
        let repeated: Vec<&str> = listed
            .iter()
            .filter(|(n, _)| listed.iter().filter(|(m, _)| m == n).count() > 1)
            .map(|(n, _)| *n)
            .collect();
        if repeated.is_empty() {
            let m = result.unwrap();
            let want: Vec<(String, String)> =
                listed.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            prop_assert_eq!(&m.query, &want);
            let record: BTreeMap<_, _> = want.into_iter().collect();
            prop_assert_eq!(http_strings(&m, "query"), record);
        } else {
            match result {
                Err(MappingError::DuplicateQuery(n)) => {
                    prop_assert!(repeated.contains(&n.as_str()))
                }
                other => prop_assert!(false, "`{query}`: {other:?}"),
            }
        }
    }

    /// Every `%` must start a two-digit hex escape, in the path and in the
    /// query; anything else is refused as malformed, and nothing well-formed
    /// is.
    #[test]
    fn malformed_percent_encoding_is_refused_and_only_that(
        text in vec(
            select(vec!["%", "a", "F", "0", "9", "g", "z", "/", "é", "%2", "%41"]),
            0..10,
        ),
        in_query in any::<bool>(),
    ) {
        let text = text.concat();
        let malformed = text
            .split('%')
            .skip(1)
            .any(|after| {
                !(after.len() >= 2 && after.bytes().take(2).all(|b| b.is_ascii_hexdigit()))
            });
        let (path, part) = if in_query {
            (format!("/q?{text}"), "query")
        } else {
            (format!("/{text}"), "path")
        };
        let result = Req::new("GET", &path).map(&DEFAULT);
        if malformed {
            prop_assert_eq!(result.err(), Some(MappingError::BadPercentEncoding(part)));
        } else {
            prop_assert!(!matches!(result, Err(MappingError::BadPercentEncoding(_))), "`{path}`");
        }
    }

    /// A body route decides on the whole body or not at all: never on a
    /// body Envoy truncated, nor without one it announced, nor on one over
    /// the limit; what it decides on is exactly the JSON sent. Other routes
    /// ignore the body and its headers.
    #[test]
    fn a_body_route_decides_on_the_whole_body_or_refuses(
        length in option::of(select(vec!["0", " 0", "00", "12", "", "x"])),
        chunked in option::of(select(vec!["chunked", ""])),
        partial in option::of(select(vec!["true", "false", "TRUE"])),
        body in prop_oneof![
            Just(vec![]),
            json_object().prop_map(|o| Value::Object(o).to_string().into_bytes()),
            any_body(),
            Just(format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000)).into_bytes()),
        ],
        export in any::<bool>(),
    ) {
        let mut req = if export {
            Req::new("POST", "/v1/datasets/sales/export")
        } else {
            Req::new("GET", "/v1/datasets/sales")
        };
        let announcing = [
            ("content-length", length),
            ("transfer-encoding", chunked),
            (PARTIAL_BODY_HEADER, partial),
        ];
        for (name, value) in announcing {
            if let Some(v) = value {
                req.headers.insert(name.into(), v.into());
            }
        }
        req.body = body;
        let result = req.map(&DEFAULT);
        if !export {
            prop_assert!(result.unwrap().body.is_none());
            return Ok(());
        }
        let announced =
            length.is_some_and(|v| v.trim().parse::<u64>() != Ok(0)) || chunked.is_some();
        let Ok(m) = result else { return Ok(()) };
        prop_assert!(partial != Some("true"), "decided on a partial body");
        prop_assert!(req.body.len() <= DEFAULT.context.max_body_bytes);
        match &m.body {
            None => prop_assert!(req.body.is_empty() && !announced, "decided without the body"),
            Some(b) => {
                let sent: Value = serde_json::from_slice(&req.body).unwrap();
                prop_assert_eq!(&Value::Object(b.clone()), &sent);
            }
        }
    }

    /// The principal comes from the first source that applies: verified JWT
    /// (a string `sub`, else refused), mTLS peer, the trusted header (only
    /// where configured; blank is refused), else anonymous. Client-sent
    /// identity headers never name it.
    #[test]
    fn the_principal_comes_from_the_first_source_that_applies(
        claims in option::of(prop_oneof![
            "[a-z]{1,6}".prop_map(|s| serde_json::json!({"sub": s, "groups": ["g"]})),
            Just(serde_json::json!({"sub": 7})),
            Just(serde_json::json!({"name": "no sub"})),
        ]),
        peer in select(vec!["", "spiffe://mesh.local/ns/a/sa/b"]),
        trusted in option::of(select(vec!["bob", " carol ", "", "  "])),
        spoofed in any::<bool>(),
        custom in any::<bool>(),
    ) {
        let mut req = Req::new("GET", "/v1/datasets/sales");
        req.claims = claims.as_ref().and_then(|c| c.as_object().cloned());
        req.peer = peer.into();
        if let Some(t) = trusted {
            req.headers.insert(TRUSTED.into(), t.into());
        }
        if spoofed {
            req.headers.insert("x-countersign-principal".into(), r#"User::"root""#.into());
        }
        let mapper = if custom { &*CUSTOM } else { &*DEFAULT };
        let want = if let Some(c) = &claims {
            c["sub"].as_str().map(|s| format!(r#"User::"{s}""#)).ok_or(IdentityError::MissingSub)
        } else if !peer.is_empty() {
            Ok(format!(r#"Workload::"{peer}""#))
        } else if let (true, Some(t)) = (custom, trusted) {
            if t.trim().is_empty() {
                Err(IdentityError::EmptyHeader(TRUSTED.into()))
            } else {
                Ok(format!(r#"User::"{}""#, t.trim()))
            }
        } else {
            Ok(r#"Anonymous::"anonymous""#.to_owned())
        };
        let got = req.map(mapper).map(|m| m.principal.to_string()).map_err(|e| match e {
            MappingError::Identity(e) => e,
            other => panic!("{other:?}"),
        });
        prop_assert_eq!(got, want);
    }
}

// ---- Normal forms and their variations ----------------------------------------

/// A path in the form a normalising Envoy forwards, as segments.
#[derive(Debug, Clone)]
struct NormalPath {
    method: &'static str,
    segments: Vec<String>,
    /// Segments whose case names the route (not a parameter's value).
    literal: Vec<bool>,
}

fn render(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}

fn normal_path() -> impl Strategy<Value = NormalPath> {
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
enum Variation {
    // Never forwarded by Envoy with `normalize_path`, `merge_slashes` and
    // escaped slashes rejected.
    Dot { at: usize, encoded: u8 },
    DotDot { at: usize, encoded: u8 },
    Empty { at: usize },
    Slash { at: usize, with: &'static str },
    // Forwarded, and read as the same path by lenient upstreams.
    Matrix { seg: usize },
    Escape { seg: usize, at: usize, upper: bool },
    Case { seg: usize, at: usize },
    Trailing,
}

fn variation() -> impl Strategy<Value = Variation> {
    let n = 0..16usize;
    prop_oneof![
        (n.clone(), any::<u8>()).prop_map(|(at, encoded)| Variation::Dot { at, encoded }),
        (n.clone(), any::<u8>()).prop_map(|(at, encoded)| Variation::DotDot { at, encoded }),
        n.clone().prop_map(|at| Variation::Empty { at }),
        (n.clone(), select(vec!["%2F", "%2f", "%5C", "%5c", "\\"]))
            .prop_map(|(at, with)| Variation::Slash { at, with }),
        n.clone().prop_map(|seg| Variation::Matrix { seg }),
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
fn dots(count: usize, encoded: u8) -> String {
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
fn vary(normal: &NormalPath, variations: &[Variation]) -> (String, bool) {
    let mut segs = normal.segments.clone();
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
    let mut abnormal = false;
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
fn nth_char(s: &str, at: usize) -> Option<(usize, char)> {
    let count = s.chars().count();
    (count > 0)
        .then(|| s.char_indices().nth(at % count))
        .flatten()
}

/// A query parameter name as written and as decoded.
fn query_name() -> impl Strategy<Value = (String, &'static str)> {
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
fn query_value() -> impl Strategy<Value = String> {
    prop_oneof!["[ +&=%#;?/a-z]{0,8}", ".{0,10}"]
}

/// `application/x-www-form-urlencoded`, or every byte as `%XX` (mixed case).
fn encode_query(value: &str, every_byte: bool) -> String {
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
fn json_object() -> impl Strategy<Value = Map<String, Value>> {
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
