use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::config::Config;

fn mapper() -> Mapper {
    Config::load(None, &HashMap::new()).unwrap().mapper
}

struct Req {
    method: &'static str,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    claims: Option<Map<String, Value>>,
}

fn req(method: &'static str, path: &str) -> Req {
    Req {
        method,
        path: path.into(),
        headers: HashMap::new(),
        body: vec![],
        claims: None,
    }
}

impl Req {
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.insert(k.into(), v.into());
        self
    }
    /// A JSON body, sent as JSON unless a content type is given.
    fn body(mut self, b: &str) -> Self {
        self.body = b.as_bytes().to_vec();
        self.headers
            .entry("content-type".into())
            .or_insert_with(|| "application/json".into());
        self
    }
    fn claims(mut self, c: Value) -> Self {
        self.claims = c.as_object().cloned();
        self
    }
    fn map(&self, m: &Mapper) -> Result<MappedRequest, MappingError> {
        m.map(&HttpRequest {
            method: self.method,
            path: &self.path,
            host: "api.example.com",
            scheme: "https",
            headers: &self.headers,
            body: &self.body,
            source_address: "10.1.2.3",
            source_principal: "",
            jwt_claims: self.claims.as_ref(),
            request_id: "req-1",
            time: Some(1_700_000_000),
        })
    }
}

/// The context as Cedar JSON, for asserting on.
fn context(m: &MappedRequest) -> Value {
    let request = m.request(false).unwrap();
    let ctx = request.context().unwrap();
    ["http", "source", "time", "request_id", "body", "approval"]
        .into_iter()
        .filter_map(|k| ctx.get(k).map(|v| (k.to_owned(), json!(v.to_string()))))
        .collect::<Map<_, _>>()
        .into()
}

#[test]
fn context_carries_method_normalised_path_host_source_time_and_request_id() {
    let m = req("GET", "/v1/datasets/sales?format=csv&limit=10&secret=x")
        .claims(json!({"sub": "alice"}))
        .map(&mapper())
        .unwrap();
    assert_eq!(m.principal.to_string(), r#"User::"alice""#);
    assert_eq!(m.action.to_string(), r#"Action::"read""#);
    assert_eq!(m.resource.to_string(), r#"Dataset::"sales""#);
    let c = context(&m);
    let http = c["http"].as_str().unwrap();
    assert!(http.contains(r#""method": "GET""#), "{http}");
    assert!(
        http.contains(r#""path": "/v1/datasets/sales""#),
        "query split off: {http}"
    );
    assert!(http.contains(r#""host": "api.example.com""#), "{http}");
    assert!(
        http.contains(r#""query": {"format": "csv", "limit": "10"}"#),
        "only allow-listed: {http}"
    );
    assert!(c["source"].as_str().unwrap().contains(r#"ip("10.1.2.3")"#));
    assert_eq!(c["time"], json!("1700000000"));
    assert_eq!(c["request_id"], json!(r#""req-1""#));
    assert_eq!(c["approval"], json!(r#"{"granted": false}"#));
    assert!(c.get("body").is_none());
}

#[test]
fn only_allow_listed_headers_reach_the_context_and_never_credentials() {
    let m = req("GET", "/v1/datasets/sales")
        .header("user-agent", "agent/1.0")
        .header("authorization", "Bearer secret-token")
        .header("cookie", "session=secret")
        .header("x-other", "nope")
        .map(&mapper())
        .unwrap();
    let http = context(&m)["http"].as_str().unwrap().to_owned();
    assert!(
        http.contains(r#""headers": {"user-agent": "agent/1.0"}"#),
        "{http}"
    );
    assert!(!http.contains("secret"), "{http}");
}

#[test]
fn a_repeated_allow_listed_query_parameter_is_refused() {
    let err = req("GET", "/v1/datasets/sales?format=csv&format=xml").map(&mapper());
    assert_eq!(
        err.unwrap_err(),
        MappingError::DuplicateQuery("format".into())
    );
    // Parameters that are not allow-listed may repeat.
    assert!(
        req("GET", "/v1/datasets/sales?x=1&x=2")
            .map(&mapper())
            .is_ok()
    );
}

#[test]
fn a_body_route_turns_the_json_body_into_context_body() {
    let m = req("POST", "/v1/datasets/sales/export")
        .body(r#"{"format":"csv","rows":10,"note":null}"#)
        .map(&mapper())
        .unwrap();
    assert_eq!(
        context(&m)["body"],
        json!(r#"{"format": "csv", "rows": 10}"#)
    );
    // Routes that did not ask for the body ignore it.
    let m = req("GET", "/v1/datasets/sales")
        .body(r#"{"a":1}"#)
        .map(&mapper())
        .unwrap();
    assert!(context(&m).get("body").is_none());
}

#[test]
fn bodies_that_cannot_be_mapped_are_refused_with_the_reason() {
    let export = |b: &str| {
        req("POST", "/v1/datasets/sales/export")
            .body(b)
            .map(&mapper())
            .unwrap_err()
    };
    assert!(matches!(export("{not json"), MappingError::BodyNotJson(_)));
    assert_eq!(export("[1,2]"), MappingError::BodyNotObject);
    assert!(matches!(
        export(r#"{"rows": 0.123456}"#),
        MappingError::BodyUnrepresentable(_)
    ));
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000));
    assert!(matches!(
        export(&big),
        MappingError::BodyTooLarge { limit: 65536, .. }
    ));
    let partial = req("POST", "/v1/datasets/sales/export")
        .header(PARTIAL_BODY_HEADER, "true")
        .body("{")
        .map(&mapper());
    assert_eq!(partial.unwrap_err(), MappingError::PartialBody);
}

#[test]
fn a_body_is_read_as_json_only_when_sent_as_uncompressed_json() {
    let m = mapper();
    let export = |headers: &[(&str, &str)]| {
        let mut r = req("POST", "/v1/datasets/sales/export");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.body(r#"{"format":"csv","rows":10}"#).map(&m)
    };
    for ok in [
        vec![],
        vec![("content-type", "Application/JSON")],
        vec![("content-type", "application/json; charset=utf-8")],
        vec![("content-type", "application/json;charset=\"UTF-8\"")],
        vec![("content-encoding", "identity")],
    ] {
        assert!(export(&ok).is_ok(), "{ok:?}: {:?}", export(&ok));
    }
    for (headers, why) in [
        (vec![("content-type", "text/plain")], "content-type"),
        (vec![("content-type", "")], "content-type"),
        (
            vec![("content-type", "application/json-patch+json")],
            "content-type",
        ),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            "content-type",
        ),
        (
            vec![("content-type", "application/json, text/plain")],
            "content-type",
        ),
        (
            vec![("content-type", "application/json; charset=utf-7")],
            "content-type",
        ),
        (vec![("content-encoding", "gzip")], "content-encoding"),
        (
            vec![("content-encoding", "identity, gzip")],
            "content-encoding",
        ),
    ] {
        let err = export(&headers).unwrap_err();
        assert!(
            matches!(err, MappingError::BodyMedia(_)) && err.to_string().contains(why),
            "{headers:?}: {err}"
        );
        // The reason names no header value.
        for (_, v) in &headers {
            assert!(v.is_empty() || !err.to_string().contains(v), "{err}");
        }
    }
    // No body, no content type needed.
    assert!(req("POST", "/v1/datasets/sales/export").map(&m).is_ok());
    // A route that does not read the body takes any; the gate refuses it
    // on a call that needs an approval (`unread_body`).
    let other = req("POST", "/v1/not-a-route")
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body("role=admin")
        .map(&m)
        .unwrap();
    assert!(matches!(
        other.unread_body,
        Some(MappingError::BodyMedia(_))
    ));
}

#[test]
fn an_allow_listed_query_parameter_under_another_case_or_folding_is_refused() {
    let m = mapper();
    for (query, name) in [
        ("FORMAT=csv", "format"),
        ("Format=csv&format=xml", "format"),
        ("format=csv&fo%52mat=xml", "format"),
        ("limit=1&LIMIT=2", "limit"),
        // U+0130 (capital I with a dot) is `i` to Go's case folding.
        ("l%C4%B0mit=5", "limit"),
    ] {
        let err = req("GET", &format!("/v1/datasets/sales?{query}"))
            .map(&m)
            .unwrap_err();
        assert_eq!(err, MappingError::QueryNameFolds(name.into()), "{query}");
        assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
    }
    // Names that fold to no allow-listed one are not read, and not refused.
    assert!(
        req("GET", "/v1/datasets/sales?FORMATS=1&X=2")
            .map(&m)
            .is_ok()
    );
}

#[test]
fn malformed_paths_are_refused() {
    let m = mapper();
    assert_eq!(
        req("GET", "v1/x").map(&m).unwrap_err(),
        MappingError::PathNotAbsolute
    );
    assert_eq!(
        req("GET", "/a%zz").map(&m).unwrap_err(),
        MappingError::BadPercentEncoding("path")
    );
    assert_eq!(
        req("GET", "/a%2").map(&m).unwrap_err(),
        MappingError::BadPercentEncoding("path")
    );
    assert_eq!(
        req("GET", "/a?q=%").map(&m).unwrap_err(),
        MappingError::BadPercentEncoding("query")
    );
    assert!(matches!(
        req("GET", "/v1/datasets/%C3%28").map(&m).unwrap_err(),
        MappingError::Param(_)
    ));
    let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    assert_eq!(
        req("GET", &long).map(&m).unwrap_err(),
        MappingError::PathTooLong
    );
    let mut many = req("GET", "/");
    for i in 0..=MAX_HEADERS {
        many = many.header(&format!("x-h{i}"), "v");
    }
    assert_eq!(many.map(&m).unwrap_err(), MappingError::TooManyHeaders);
}

#[test]
fn unmatched_requests_get_the_default_action_and_path_resource() {
    let m = req("PATCH", "/somewhere/else?x=1").map(&mapper()).unwrap();
    assert_eq!(m.action.to_string(), r#"Action::"http_request""#);
    assert_eq!(m.resource.to_string(), r#"Path::"/somewhere/else""#);
    assert_eq!(m.principal.to_string(), r#"Anonymous::"anonymous""#);
}

#[test]
fn probes_cover_every_route_and_principal_type() {
    let probes = mapper().probes().unwrap();
    // 11 routes + the default, each for User, Workload and Anonymous, each
    // with every optional context part and with none; and the MCP
    // endpoint's protocol action for each principal type.
    assert_eq!(probes.len(), 12 * 3 * 2 + 3);
    assert!(
        probes
            .iter()
            .any(|p| p.label == "route `POST /v1/datasets/{id}/export`")
    );
    assert!(
        probes.iter().any(|p| p.label == "MCP endpoint `/mcp`"
            && p.action.to_string() == r#"Action::"mcp_protocol""#)
    );
}

#[test]
fn a_body_route_refuses_a_body_envoy_announced_but_did_not_send() {
    let m = mapper();
    let r = req("POST", "/v1/datasets/sales/export")
        .header("content-length", "12")
        .map(&m);
    assert_eq!(r.unwrap_err(), MappingError::BodyNotForwarded);
    let r = req("POST", "/v1/datasets/sales/export")
        .header("transfer-encoding", "chunked")
        .map(&m);
    assert_eq!(r.unwrap_err(), MappingError::BodyNotForwarded);
    assert!(
        req("POST", "/v1/datasets/sales/export")
            .header("content-length", "0")
            .map(&m)
            .is_ok()
    );
    assert!(req("POST", "/v1/datasets/sales/export").map(&m).is_ok());
}

#[test]
fn a_repeated_body_key_is_refused() {
    for body in [
        r#"{"format":"xml","format":"csv"}"#,
        // Go's encoding/json folds each to `rows`, and the last one wins.
        "{\"rows\":10,\"row\u{17f}\":2000000}",
        "{\"rows\":10,\"ROWS\":2000000}",
    ] {
        let r = req("POST", "/v1/datasets/sales/export")
            .body(body)
            .map(&mapper());
        assert!(
            matches!(r, Err(MappingError::BodyNotJson(ref e)) if e.starts_with("duplicate key in an object")),
            "{body}: {r:?}"
        );
    }
}

#[test]
fn an_ipv4_mapped_source_address_is_an_ipv4_address() {
    let headers = HashMap::new();
    let m = mapper()
        .map(&HttpRequest {
            method: "GET",
            path: "/",
            host: "h",
            scheme: "",
            headers: &headers,
            body: b"",
            source_address: "::ffff:10.1.2.3",
            source_principal: "",
            jwt_claims: None,
            request_id: "",
            time: None,
        })
        .unwrap();
    let source = m
        .request(false)
        .unwrap()
        .context()
        .unwrap()
        .get("source")
        .unwrap()
        .to_string();
    assert!(source.contains(r#"ip("10.1.2.3")"#), "{source}");
}

#[test]
fn paths_a_normalising_envoy_never_forwards_are_refused() {
    let m = mapper();
    for (path, why) in [
        ("//v1/datasets/sales", "`//`"),
        ("/v1/datasets//sales", "`//`"),
        ("/v1/x/../datasets/sales", "dot segment"),
        ("/v1/datasets/..", "dot segment"),
        ("/v1/datasets/%2e%2E", "dot segment"),
        ("/v1/datasets/.%2e/x", "dot segment"),
        ("/v1/./datasets/sales", "dot segment"),
        ("/v1/datasets/sales/.", "dot segment"),
        ("/v1/datasets/a%2Fb", "encoded slash"),
        ("/v1/datasets%2fsales", "encoded slash"),
        ("/v1/datasets/a%5cb", "encoded slash"),
        ("/v1/datasets\\sales", "backslash"),
        ("/v1/datasets/sales%00", "NUL"),
        // A normalising Envoy decodes these; an upstream may decode them
        // after the policy judged the path as written.
        ("/v1/d%61tasets/sales", "percent-encoded unreserved"),
        ("/v1/datasets/sales/expor%74", "percent-encoded unreserved"),
        ("/v1/datasets/sales%2Ejson", "percent-encoded unreserved"),
        ("/v1/datasets/%7Esales", "percent-encoded unreserved"),
        ("/v1/datasets/a%2db%5F", "percent-encoded unreserved"),
        // Tomcat and Spring drop `;...` and then resolve the dot segment.
        ("/v1/x/..;/datasets/sales", "dot segment with parameters"),
        ("/v1/x/..;y=1/datasets/sales", "dot segment with parameters"),
        ("/v1/datasets/.;/sales", "dot segment with parameters"),
        ("/v1/datasets/sales/..;", "dot segment with parameters"),
        // Two decodings give a dot, a slash, a backslash or a letter.
        ("/v1/datasets/x/%252e%252e/sales", "double-encoded"),
        ("/v1/datasets/a%252Fb", "double-encoded"),
        ("/v1/datasets/a%252fb", "double-encoded"),
        ("/v1/datasets/a%255Cb", "double-encoded"),
        ("/v1/datasets/a%255cb", "double-encoded"),
        ("/v1/datasets/sales%252E", "double-encoded"),
        ("/v1/datasets/s%2561les", "double-encoded"),
    ] {
        let err = req("GET", path).map(&m).unwrap_err();
        assert!(
            matches!(err, MappingError::PathNotNormalised(_)) && err.to_string().contains(why),
            "{path}: {err}"
        );
    }
    // Dots that are not whole segments, a trailing `/`, the root, escapes
    // of reserved characters or a literal `%`, and `;` off dot segments
    // are normal.
    for path in [
        "/",
        "/healthz/",
        "/.well-known/x",
        "/v1/datasets/...",
        "/v1/datasets/a..b",
        "/v1/datasets/...;x",
        "/v1/datasets/a%20b%3Fc%25",
        "/v1/datasets/a%2520b",
        "/v1/datasets/caf%C3%A9",
    ] {
        let r = req("GET", path).map(&m);
        assert!(
            !matches!(r, Err(MappingError::PathNotNormalised(_))),
            "{path}: {r:?}"
        );
    }
}
