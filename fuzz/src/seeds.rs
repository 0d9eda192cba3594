//! The seed corpus: realistic CheckRequests, each written for one answer
//! (allowed, denied, guarded, malformed; with bodies, JWT claims, mTLS), as
//! Envoy fills them with the reference configuration (`envoy/envoy.yaml`).
//! `fuzz/corpus/check_request/` holds them encoded; see `write_seed_corpus`.
//! Protobuf maps encode in hash order, so regenerated files differ in bytes
//! but decode to the same requests.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{Address, CheckRequest};
use envoy_types::pb::envoy::config::core::v3::{Address as CoreAddress, Metadata, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Timestamp, Value, value::Kind};
use prost::Message;
use serde_json::json;

use crate::{Answer, CANARY};

pub struct Seed {
    /// The corpus file name.
    pub name: &'static str,
    /// `None` for bytes that are not a CheckRequest.
    pub expect: Option<Answer>,
    pub bytes: Vec<u8>,
}

/// A CheckRequest as Envoy builds it.
struct Check {
    http: HttpRequest,
    claims: Option<serde_json::Value>,
    peer: String,
    source: String,
}

fn check(method: &str, path: &str) -> Check {
    Check {
        http: HttpRequest {
            id: "8187447611437158406".into(),
            method: method.into(),
            path: path.into(),
            host: "api.example.com".into(),
            scheme: "http".into(),
            protocol: "HTTP/1.1".into(),
            headers: HashMap::from([
                (":method".to_owned(), method.to_owned()),
                (":path".to_owned(), path.to_owned()),
                (":authority".to_owned(), "api.example.com".to_owned()),
                (":scheme".to_owned(), "http".to_owned()),
                ("user-agent".to_owned(), "curl/8.5.0".to_owned()),
                ("accept".to_owned(), "*/*".to_owned()),
                (
                    "x-request-id".to_owned(),
                    "0b6ad4f3-63a4-4d1e-9a7e-3f2c1d0e9b8a".to_owned(),
                ),
                ("x-forwarded-proto".to_owned(), "http".to_owned()),
            ]),
            ..Default::default()
        },
        claims: None,
        peer: String::new(),
        source: "127.0.0.1".into(),
    }
}

impl Check {
    fn header(mut self, k: &str, v: &str) -> Self {
        self.http.headers.insert(k.into(), v.into());
        self
    }

    /// A verified JWT: Envoy passes the claims (numbers as doubles) in
    /// `jwt_authn` metadata and, with `forward: false`, drops the header.
    fn jwt(mut self, claims: serde_json::Value) -> Self {
        self.claims = Some(claims);
        self
    }

    fn mtls(mut self, spiffe: &str) -> Self {
        self.peer = spiffe.into();
        self
    }

    fn from(mut self, address: &str) -> Self {
        self.source = address.into();
        self
    }

    /// A JSON body as `with_request_body` + `pack_as_bytes` sends it.
    fn body(mut self, b: &str) -> Self {
        self.http.raw_body = b.as_bytes().to_vec();
        self.http.size = b.len() as i64;
        self.header("content-type", "application/json")
            .header("content-length", &b.len().to_string())
    }

    fn encode(self) -> Vec<u8> {
        let metadata_context = self.claims.map(|c| Metadata {
            filter_metadata: HashMap::from([(
                "envoy.filters.http.jwt_authn".to_owned(),
                Struct {
                    fields: HashMap::from([("jwt_payload".to_owned(), to_pb(&c))]),
                },
            )]),
            ..Default::default()
        });
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(socket(&self.source, 53_412)),
                    principal: self.peer,
                    ..Default::default()
                }),
                destination: Some(Peer {
                    address: Some(socket("127.0.0.1", 10_000)),
                    ..Default::default()
                }),
                request: Some(Request {
                    time: Some(Timestamp {
                        seconds: 1_767_225_600,
                        nanos: 0,
                    }),
                    http: Some(self.http),
                }),
                metadata_context,
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }
}

fn socket(address: &str, port: u32) -> CoreAddress {
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    CoreAddress {
        address: Some(Address::SocketAddress(SocketAddress {
            address: address.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn to_pb(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_pb).collect(),
        }),
        J::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_pb(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// A `tools/call` to the MCP endpoint.
fn mcp_call(id: u32, tool: &str, arguments: &str) -> Check {
    check("POST", "/mcp")
        .header("content-type", "application/json")
        .body(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
        ))
}

fn user(sub: &str, groups: &[&str]) -> serde_json::Value {
    json!({"iss": "countersign-demo", "sub": sub, "groups": groups,
           "iat": 1_767_225_000, "exp": 1_767_228_600})
}

const REPORTER: &str = "spiffe://mesh.local/ns/reports/sa/reporter";
const EXPORT: &str = "/v1/datasets/sales/export";

/// Every seed, named for what it exercises.
pub fn all() -> Vec<Seed> {
    use Answer::{Allow, BadRequest, Deny};
    let alice = || user("alice", &["analysts"]);
    let dora = || user("dora", &["data-owners"]);
    let agent = || {
        json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice",
               "exp": 1_767_228_600})
    };
    let mut many = check("GET", "/v1/datasets/sales").jwt(alice());
    for i in 0..520 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    // No maps, so that its bytes (and so the truncated seed) never change.
    let plain = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/healthz".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let seeds: Vec<(&'static str, Option<Answer>, Vec<u8>)> =
        vec![
        // Allowed.
        (
            "allow-jwt-analyst-reads",
            Some(Allow),
            check("GET", "/v1/datasets/sales").jwt(alice()).encode(),
        ),
        ("allow-bare-healthz", Some(Allow), plain.clone()),
        (
            "allow-jwt-read-with-query-and-headers",
            Some(Allow),
            check("GET", "/v1/datasets/sales?format=csv&limit=10&x=1&x=2")
                .jwt(alice())
                .header("content-type", "application/json")
                .header("x-countersign-principal", r#"User::"root""#)
                .encode(),
        ),
        (
            "allow-jwt-claims-of-every-shape",
            Some(Allow),
            check("GET", "/v1/datasets/q3%20report")
                .jwt(json!({"sub": "alice", "groups": "analysts", "email": "alice@example.com",
                            "score": 19.99, "level": 3, "verified": true, "nick": null,
                            "org": {"id": "acme", "tier": 2}, "tags": ["a", "b"]}))
                .encode(),
        ),
        (
            "allow-mtls-reporter-reads",
            Some(Allow),
            check("GET", "/v1/datasets/sales").mtls(REPORTER).encode(),
        ),
        (
            "allow-anonymous-healthz",
            Some(Allow),
            check("GET", "/healthz").encode(),
        ),
        (
            "allow-admin-deletes-from-ipv6",
            Some(Allow),
            check("DELETE", "/v1/datasets/sales")
                .jwt(user("ada", &["admins"]))
                .from("::ffff:10.1.2.3")
                .encode(),
        ),
        // Denied.
        (
            "deny-anonymous-read",
            Some(Deny),
            check("GET", "/v1/datasets/sales").encode(),
        ),
        (
            "deny-spoofed-identity-headers",
            Some(Deny),
            check("GET", "/v1/datasets/sales")
                .header("x-countersign-principal", r#"User::"alice""#)
                .header("x-authenticated-user", "alice")
                .header("x-forwarded-client-cert", &format!("URI={REPORTER}"))
                .header("authorization", &format!("Bearer {CANARY}"))
                .encode(),
        ),
        (
            "deny-analyst-deletes",
            Some(Deny),
            check("DELETE", "/v1/datasets/sales").jwt(alice()).encode(),
        ),
        (
            "deny-unknown-workload",
            Some(Deny),
            check("GET", "/v1/datasets/sales")
                .mtls("spiffe://mesh.local/ns/x/sa/y")
                .from("2001:db8::1")
                .encode(),
        ),
        (
            "deny-default-route",
            Some(Deny),
            check("PATCH", "/somewhere/else?format=csv")
                .jwt(alice())
                .encode(),
        ),
        (
            "deny-grpc-method-without-route",
            Some(Deny),
            check("POST", "/acme.iam.v1.Roles/ListRoles")
                .jwt(user("sam", &["security"]))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .encode(),
        ),
        // Guarded actions: denied, or reaching the (unreachable) store.
        (
            "guarded-deny-analyst-export",
            Some(Deny),
            check("POST", EXPORT)
                .jwt(alice())
                .body(r#"{"format":"csv","rows":10}"#)
                .encode(),
        ),
        (
            "guarded-deny-export-format",
            Some(Deny),
            check("POST", EXPORT)
                .jwt(dora())
                .body(r#"{"format":"xml","rows":10}"#)
                .encode(),
        ),
        (
            "guarded-deny-export-rows",
            Some(Deny),
            check("POST", EXPORT)
                .jwt(dora())
                .body(r#"{"format":"csv","rows":2000000,"note":null}"#)
                .encode(),
        ),
        (
            // Allowed once its audit entry is written.
            "guarded-allow-needs-audit",
            Some(Allow),
            check("POST", EXPORT)
                .jwt(dora())
                .body(r#"{"format":"parquet","rows":1000,"filters":{"region":"eu","price":19.99}}"#)
                .encode(),
        ),
        (
            "mcp-allow-agent-read-tool",
            Some(Allow),
            mcp_call(1, "read_dataset", r#"{"dataset":"sales"}"#).jwt(agent()).encode(),
        ),
        (
            // Opens an approval request: a tool result marked isError.
            "mcp-guarded-agent-export-tool",
            Some(Deny),
            mcp_call(2, "export_dataset", r#"{"dataset":"sales","format":"csv","destination":"s3://x"}"#)
                .jwt(agent())
                .encode(),
        ),
        (
            "mcp-deny-delete-tool",
            Some(Deny),
            mcp_call(3, "delete_dataset", r#"{"dataset":"sales"}"#).jwt(agent()).encode(),
        ),
        (
            "mcp-deny-anonymous-initialize",
            Some(Deny),
            check("POST", "/mcp")
                .header("content-type", "application/json")
                .body(r#"{"jsonrpc":"2.0","id":"i-1","method":"initialize","params":{}}"#)
                .encode(),
        ),
        (
            "mcp-bad-batch",
            Some(BadRequest),
            check("POST", "/mcp")
                .jwt(agent())
                .header("content-type", "application/json")
                .body(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#)
                .encode(),
        ),
        (
            // Opens an approval request: 403 approval_required.
            "guarded-agent-export-needs-approval",
            Some(Deny),
            check("POST", EXPORT)
                .jwt(agent())
                .body(r#"{"format":"csv","rows":10}"#)
                .encode(),
        ),
        (
            // A token as issued (64 hex digits, its shard in the first
            // byte), but never issued by this store: refused.
            "guarded-agent-export-with-token",
            Some(Deny),
            check("POST", EXPORT)
                .jwt(agent())
                .body(r#"{"format":"csv","rows":10}"#)
                .header(
                    "x-countersign-approval",
                    "3a7f0c9e5b21d4468f0a1c2e3d4b5a6978879605b4c3d2e1f001122334455667",
                )
                .encode(),
        ),
        (
            // A token that names no shard is refused without the store.
            "guarded-agent-export-with-malformed-token",
            Some(Deny),
            check("POST", EXPORT)
                .jwt(agent())
                .body(r#"{"format":"csv","rows":10}"#)
                .header("x-countersign-approval", "ctk_2xj1v9q8c3m7")
                .encode(),
        ),
        (
            // A guarded call whose body is not one of
            // `request.body_content_types` (application/json): refused
            // before the store, as an approval could not be read.
            "guarded-grpc-grant-role-held",
            Some(BadRequest),
            check("POST", "/acme.iam.v1.Roles/GrantRole")
                .jwt(user("sam", &["security"]))
                .body("\0\0\0\0\x0b\n\x05alice\x12\x02ops")
                .header("content-type", "application/grpc")
                .header("grpc-timeout", "29S")
                .encode(),
        ),
        // The route reads its body (approvers see it), and Envoy did not
        // send it: refused before the store.
        (
            "guarded-grant-role-body-not-sent",
            Some(BadRequest),
            check("POST", "/acme.iam.v1.Roles/GrantRole")
                .jwt(user("sam", &["security"]))
                .header("content-type", "application/grpc")
                .header("transfer-encoding", "chunked")
                .encode(),
        ),
        // Bad requests (400).
        (
            "bad-no-attributes",
            Some(BadRequest),
            CheckRequest::default().encode_to_vec(),
        ),
        (
            "bad-no-method",
            Some(BadRequest),
            check("", "/v1/datasets/sales").encode(),
        ),
        (
            "bad-claims-not-an-object",
            Some(BadRequest),
            check("GET", "/v1/datasets/sales")
                .jwt(json!("alice"))
                .encode(),
        ),
        (
            "bad-jwt-without-sub",
            Some(BadRequest),
            check("GET", "/v1/datasets/sales")
                .jwt(json!({"name": "alice", "groups": ["analysts"]}))
                .encode(),
        ),
        (
            "bad-jwt-groups-shape",
            Some(BadRequest),
            check("GET", "/v1/datasets/sales")
                .jwt(json!({"sub": "alice", "groups": [1, 2]}))
                .encode(),
        ),
        (
            "bad-path-not-absolute",
            Some(BadRequest),
            check("GET", "v1/datasets/sales").jwt(alice()).encode(),
        ),
        (
            "bad-percent-encoding",
            Some(BadRequest),
            check("GET", "/v1/datasets/sa%zzles?format=%").encode(),
        ),
        (
            "bad-dot-segments",
            Some(BadRequest),
            check("DELETE", "/v1/x/%2e%2E/datasets/sales")
                .jwt(alice())
                .encode(),
        ),
        (
            "bad-encoded-slash",
            Some(BadRequest),
            check("GET", "/v1/datasets/a%2Fb").jwt(alice()).encode(),
        ),
        (
            "bad-matrix-parameter",
            Some(BadRequest),
            check("GET", "/v1/datasets/sales;jsessionid=1")
                .jwt(alice())
                .encode(),
        ),
        (
            "bad-param-not-utf8",
            Some(BadRequest),
            check("GET", "/v1/datasets/%C3%28").jwt(alice()).encode(),
        ),
        (
            "bad-repeated-query",
            Some(BadRequest),
            check("GET", "/v1/datasets/sales?format=csv&format=xml")
                .jwt(alice())
                .encode(),
        ),
        (
            "bad-body-not-json",
            Some(BadRequest),
            check("POST", EXPORT).jwt(dora()).body("format=csv").encode(),
        ),
        // Spellings an upstream may decode or resolve into another path.
        (
            "bad-escaped-unreserved",
            Some(BadRequest),
            check("GET", "/v1/d%61tasets/sales").jwt(alice()).encode(),
        ),
        (
            "bad-dot-segment-with-parameters",
            Some(BadRequest),
            check("DELETE", "/v1/x/..;y=1/datasets/sales")
                .jwt(alice())
                .encode(),
        ),
        (
            "bad-double-encoded-dots",
            Some(BadRequest),
            check("POST", "/v1/datasets/sales/x/%252e%252E/export")
                .jwt(dora())
                .body(r#"{"format":"csv","rows":1}"#)
                .encode(),
        ),
        // Keys Go's encoding/json reads as one, or as a declared attribute.
        (
            "bad-body-folded-duplicate-key",
            Some(BadRequest),
            check("POST", EXPORT)
                .jwt(dora())
                .body("{\"format\":\"csv\",\"rows\":10,\"\u{212a}ind\":1,\"kind\":2}")
                .encode(),
        ),
        (
            "bad-body-folded-lone-key",
            Some(BadRequest),
            check("POST", EXPORT)
                .jwt(dora())
                .body("{\"format\":\"csv\",\"row\u{17f}\":2000000}")
                .encode(),
        ),
        (
            "bad-body-not-json-content-type",
            Some(BadRequest),
            check("POST", EXPORT)
                .jwt(dora())
                .body(r#"{"format":"csv","rows":1}"#)
                .header("content-type", "text/plain")
                .encode(),
        ),
        (
            "bad-body-repeated-key",
            Some(BadRequest),
            check("POST", EXPORT)
                .jwt(dora())
                .body(r#"{"format":"csv","FORMAT":"xml"}"#)
                .encode(),
        ),
        (
            "bad-body-too-deep",
            Some(BadRequest),
            check("POST", EXPORT)
                .jwt(dora())
                .body(&format!("{}1{}", r#"{"a":"#.repeat(20), "}".repeat(20)))
                .encode(),
        ),
        (
            "bad-body-announced-not-sent",
            Some(BadRequest),
            check("POST", EXPORT)
                .jwt(dora())
                .header("content-length", "24")
                .encode(),
        ),
        (
            "bad-body-partial",
            Some(BadRequest),
            check("POST", EXPORT)
                .jwt(dora())
                .body(r#"{"format":"csv","ro"#)
                .header("x-envoy-auth-partial-body", "true")
                .encode(),
        ),
        ("bad-too-many-headers", Some(BadRequest), many.encode()),
        // Not a CheckRequest at all: gRPC would refuse these.
        ("raw-truncated", None, plain[..plain.len() - 3].to_vec()),
        ("raw-garbage", None, b"\xff\xff\xff\xff\x0f\x12\x34".to_vec()),
    ];
    seeds
        .into_iter()
        .map(|(name, expect, bytes)| Seed {
            name,
            expect,
            bytes,
        })
        .collect()
}
