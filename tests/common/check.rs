//! Builds Envoy `CheckRequest`s the way Envoy fills them. Shared by the
//! service's unit tests and the gRPC integration tests.
#![allow(dead_code)]

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{Address, CheckRequest};
use envoy_types::pb::envoy::config::core::v3::{Metadata, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};

pub struct Check {
    pub http: HttpRequest,
    pub claims: Option<serde_json::Value>,
    pub peer_principal: String,
}

pub fn check(method: &str, path: &str) -> Check {
    Check {
        http: HttpRequest {
            id: "42".into(),
            method: method.into(),
            path: path.into(),
            host: "api.example.com".into(),
            scheme: "http".into(),
            protocol: "HTTP/1.1".into(),
            headers: HashMap::from([("x-request-id".to_owned(), "req-7".to_owned())]),
            ..Default::default()
        },
        claims: None,
        peer_principal: String::new(),
    }
}

impl Check {
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.http.headers.insert(k.into(), v.into());
        self
    }

    /// Claims as Envoy's jwt_authn hands them over (numbers as doubles).
    pub fn claims(mut self, c: serde_json::Value) -> Self {
        self.claims = Some(c);
        self
    }

    pub fn peer(mut self, principal: &str) -> Self {
        self.peer_principal = principal.into();
        self
    }

    /// A body, sent as JSON unless a `content-type` was given before.
    pub fn body(self, b: &str) -> Self {
        self.body_bytes(b.as_bytes())
    }

    pub fn body_bytes(mut self, b: &[u8]) -> Self {
        self.http.raw_body = b.to_vec();
        self.http
            .headers
            .entry("content-type".to_owned())
            .or_insert_with(|| "application/json".to_owned());
        self
    }

    pub fn build(self) -> CheckRequest {
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
                    address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: "127.0.0.1".into(),
                            ..Default::default()
                        })),
                    }),
                    principal: self.peer_principal,
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(self.http),
                    ..Default::default()
                }),
                metadata_context,
                ..Default::default()
            }),
        }
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

/// What a caller of Envoy would see: HTTP status, headers and body.
#[derive(Debug)]
pub struct Seen {
    pub rpc_code: i32,
    pub http_status: u16,
    pub headers: HashMap<String, String>,
    /// Headers added without overwriting a client-sent copy.
    pub appended: Vec<String>,
    pub body: String,
}

pub fn seen(resp: &envoy_types::ext_authz::v3::pb::CheckResponse) -> Seen {
    use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HeaderValueOption, HttpResponse};
    let rpc_code = resp.status.as_ref().map_or(-1, |s| s.code);
    let (http_status, options, body): (u16, &[HeaderValueOption], String) =
        match &resp.http_response {
            Some(HttpResponse::OkResponse(ok)) => (200, &ok.headers, String::new()),
            Some(HttpResponse::DeniedResponse(d)) => (
                d.status.as_ref().map_or(0, |s| s.code as u16),
                &d.headers,
                d.body.clone(),
            ),
            _ => (0, &[], String::new()),
        };
    let headers = options
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    let appended = options
        .iter()
        .filter(|h| h.append_action != HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
        .filter_map(|h| h.header.as_ref().map(|h| h.key.clone()))
        .collect();
    Seen {
        rpc_code,
        http_status,
        headers,
        appended,
        body,
    }
}
