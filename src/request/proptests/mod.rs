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

mod folded_keys;
mod generators;
mod normal_forms;

use generators::*;
use normal_forms::*;

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
        shadow: false,
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
    /// to a dot segment or to bytes that are not UTF-8 is refused, and so
    /// is one that escapes an unreserved character or double-encodes one.
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
        let name = nameable(&raw).filter(|_| !escapes_unreserved(&text));
        match (Req::new(method, &path).map(&DEFAULT), name) {
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
        let names: Option<Vec<&str>> = segments
            .iter()
            .map(|(raw, text)| nameable(raw).filter(|_| !escapes_unreserved(text)))
            .collect();
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

    /// A path written differently from its normal form (dot segments, with
    /// or without `;` parameters, `//`, encoded, double-encoded or back
    /// slashes, `;` parameters, percent-encoded unreserved characters, a
    /// different case or a trailing `/`) is refused, or maps to exactly
    /// what the normal form maps to whenever either reaches a route. Forms
    /// a normalising Envoy never forwards, or that an upstream may decode
    /// or resolve into another path, are always refused.
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
    /// twice, or also in another case, is refused, since frameworks
    /// disagree on which copy wins.
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
        // Another case of an allow-listed name (the generator's names are
        // ASCII) may be the one a case-insensitive upstream reads.
        let folded = pairs.iter().any(|((_, n), _, _)| {
            DEFAULT.context.query.iter().any(|q| q != n && q.eq_ignore_ascii_case(n))
        });
        if repeated.is_empty() && !folded {
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
                Err(MappingError::QueryNameFolds(n)) => {
                    prop_assert!(folded && DEFAULT.context.query.contains(&n))
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
    /// the limit, nor on one sent as another type than JSON; what it decides
    /// on is exactly the JSON sent. Other routes ignore the body and its
    /// headers.
    #[test]
    fn a_body_route_decides_on_the_whole_body_or_refuses(
        length in option::of(select(vec!["0", " 0", "00", "12", "", "x"])),
        chunked in option::of(select(vec!["chunked", ""])),
        partial in option::of(select(vec!["true", "false", "TRUE"])),
        media in option::of(select(vec![
            "application/json",
            "application/json; charset=UTF-8",
            "text/plain",
            "application/json; charset=utf-7",
        ])),
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
            ("content-type", media),
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
                prop_assert!(
                    matches!(media, Some("application/json" | "application/json; charset=UTF-8")),
                    "read a body sent as {media:?}"
                );
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
            c["sub"].as_str().map(|s| format!(r#"User::"{s}""#)).ok_or(IdentityError::MissingSub("sub".into()))
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
