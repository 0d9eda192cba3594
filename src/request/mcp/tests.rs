//! MCP endpoints through the mapper, with the embedded default config.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::McpError;
use crate::config::Config;
use crate::request::{HttpRequest, MappedRequest, Mapper, MappingError};

fn mapper() -> Mapper {
    Config::load(None, &HashMap::new()).unwrap().mapper
}

fn map_on(
    m: &Mapper,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<MappedRequest, MappingError> {
    let headers = HashMap::from([("content-type".to_owned(), "application/json".to_owned())]);
    let claims: Map<String, Value> = json!({"sub": "agent-7", "groups": ["agents"]})
        .as_object()
        .unwrap()
        .clone();
    m.map(&HttpRequest {
        method,
        path,
        host: "api",
        scheme: "http",
        headers: &headers,
        body,
        source_address: "10.0.0.7",
        source_principal: "",
        jwt_claims: Some(&claims),
        request_id: "req-1",
        time: Some(0),
    })
}

fn post(body: &str) -> Result<MappedRequest, MappingError> {
    map_on(&mapper(), "POST", "/mcp", body.as_bytes())
}

fn call(id: u32, tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
    .to_string()
}

fn refusal(body: &str) -> McpError {
    match post(body) {
        Err(MappingError::Mcp(e)) => e,
        other => panic!("{body}: expected an MCP refusal, got {other:?}"),
    }
}

#[test]
fn a_tool_call_is_its_tool_as_action_on_the_resource_its_arguments_name() {
    let m = post(&call(
        3,
        "export_dataset",
        json!({"dataset": "sales", "format": "csv"}),
    ))
    .unwrap();
    assert_eq!(m.action.to_string(), r#"Action::"export_dataset""#);
    assert_eq!(m.resource.to_string(), r#"Dataset::"sales""#);
    let mcp = m.mcp.as_ref().unwrap();
    assert_eq!(mcp.id, Some(json!(3)));
    assert_eq!(mcp.tool.as_deref(), Some("export_dataset"));
    assert_eq!(mcp.server, "datasets");
    let request = m.request(false).unwrap();
    let context = request.context().unwrap().to_json_value().unwrap();
    assert_eq!(context["arguments"]["format"], "csv");
    assert_eq!(context["mcp"]["method"], "tools/call");
    assert_eq!(context["mcp"]["tool"], "export_dataset");
    assert!(
        context.get("body").is_none(),
        "the envelope is not context.body"
    );
    // A tool the configuration names no resource for: the server.
    let other = post(&call(4, "summarise", json!({}))).unwrap();
    assert_eq!(other.action.to_string(), r#"Action::"summarise""#);
    assert_eq!(other.resource.to_string(), r#"McpServer::"datasets""#);
}

#[test]
fn protocol_messages_and_the_event_stream_are_the_protocol_action_on_the_server() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":9,"result":{}}"#,
    ] {
        let m = post(body).unwrap();
        assert_eq!(m.action.to_string(), r#"Action::"mcp_protocol""#, "{body}");
        assert_eq!(m.resource.to_string(), r#"McpServer::"datasets""#, "{body}");
        assert!(m.mcp.unwrap().tool.is_none());
    }
    let stream = map_on(&mapper(), "GET", "/mcp", b"").unwrap();
    assert_eq!(stream.mcp.unwrap().method, "http/get");
}

#[test]
fn an_approval_binds_tool_and_exact_arguments_but_not_the_id_meta_or_key_order() {
    let bound = |body: &str| post(body).unwrap().mcp.unwrap().bound;
    let base = bound(&call(
        1,
        "export_dataset",
        json!({"dataset": "sales", "format": "csv"}),
    ));
    let retry = r#"{"params":{"_meta":{"progressToken":7},"arguments":{"format":"csv","dataset":"sales"},"name":"export_dataset"},"method":"tools/call","id":99,"jsonrpc":"2.0"}"#;
    assert_eq!(base, bound(retry));
    assert_eq!(
        String::from_utf8(base.clone()).unwrap(),
        r#"{"method":"tools/call","params":{"arguments":{"dataset":"sales","format":"csv"},"name":"export_dataset"}}"#,
        "canonical: keys sorted at every depth, no id, no _meta"
    );
    for changed in [
        call(
            1,
            "export_dataset",
            json!({"dataset": "sales", "format": "xml"}),
        ),
        call(
            1,
            "export_dataset",
            json!({"dataset": "sales", "format": "csv", "to": "x"}),
        ),
        call(
            1,
            "export_dataset",
            json!({"dataset": "sales", "format": ["csv"]}),
        ),
        call(
            1,
            "export_datasets",
            json!({"dataset": "sales", "format": "csv"}),
        ),
    ] {
        assert_ne!(base, bound(&changed), "{changed}");
    }
}

#[test]
fn hostile_json_rpc_is_refused_with_a_reason() {
    assert_eq!(
        refusal(&format!("[{}]", call(1, "read_dataset", json!({})))),
        McpError::Batch
    );
    assert!(matches!(refusal("not json"), McpError::NotJson(_)));
    assert!(matches!(refusal(""), McpError::NotJson(_)));
    for (body, why) in [
        (r#""tools/call""#, "JSON object"),
        (r#"{"id":1,"method":"ping"}"#, "`jsonrpc`"),
        (r#"{"jsonrpc":"2.0","id":1,"method":7}"#, "`method`"),
        (r#"{"jsonrpc":"2.0","id":1,"method":""}"#, "`method`"),
        (r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#, "`id`"),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            "`params`",
        ),
        (r#"{"jsonrpc":"2.0","id":1}"#, "no `method`"),
    ] {
        let e = refusal(body);
        assert!(
            matches!(e, McpError::NotJsonRpc(_)) && e.to_string().contains(why),
            "{body}: {e}"
        );
    }
    let no_name = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#;
    assert_eq!(refusal(no_name), McpError::NoToolName);
    for name in ["", "a b", "x\u{202e}", "tool\n", &"t".repeat(129)] {
        assert_eq!(
            refusal(&call(1, name, json!({}))),
            McpError::BadToolName,
            "{name:?}"
        );
    }
    let not_object = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_dataset","arguments":[1]}}"#;
    assert_eq!(refusal(not_object), McpError::ArgumentsNotObject);
    // The resource comes from an argument the call must give as a string.
    for args in [json!({}), json!({"dataset": 7}), json!({"dataset": ""})] {
        assert_eq!(
            refusal(&call(1, "export_dataset", args.clone())),
            McpError::ResourceArgument {
                tool: "export_dataset".into(),
                argument: "dataset".into()
            },
            "{args}"
        );
    }
}

#[test]
fn duplicate_deep_and_huge_arguments_are_refused_never_decided() {
    // Duplicate keys, also once case-folded: which one would the server read?
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_dataset","name":"export_dataset","arguments":{"dataset":"a"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"export_dataset","arguments":{"dataset":"a","DataSet":"b"}}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"export_dataset\",\"arguments\":{\"dataset\":\"a\",\"de\u{17f}t\":1,\"dest\":2}}}",
    ] {
        assert!(
            matches!(refusal(body), McpError::NotJson(e) if e.contains("duplicate key")),
            "{body}"
        );
    }
    let deep = format!("{}1{}", r#"{"a":"#.repeat(40), "}".repeat(40));
    let deep = call(1, "summarise", serde_json::from_str(&deep).unwrap());
    assert!(
        matches!(refusal(&deep), McpError::Unrepresentable(_)),
        "{deep}"
    );
    let m = mapper();
    let huge = call(
        1,
        "summarise",
        json!({"text": "x".repeat(m.context.max_body_bytes)}),
    );
    assert!(matches!(
        map_on(&m, "POST", "/mcp", huge.as_bytes()),
        Err(MappingError::BodyTooLarge { .. })
    ));
}

#[test]
fn a_path_that_only_resembles_the_endpoint_is_refused() {
    let m = mapper();
    for path in ["/MCP", "/mcp/", "/Mcp"] {
        let r = map_on(
            &m,
            "POST",
            path,
            call(1, "read_dataset", json!({"dataset": "a"})).as_bytes(),
        );
        assert!(
            matches!(&r, Err(MappingError::Param(e)) if e.to_string().contains("/mcp")),
            "{path}: {r:?}"
        );
    }
}

#[test]
fn approvers_see_the_server_the_tool_and_the_shown_arguments() {
    let m = post(&call(
        1,
        "export_dataset",
        json!({"dataset": "sales", "format": "csv", "secret": "s3cr3t"}),
    ))
    .unwrap();
    let shown = m.shown(&["dataset".into(), "format".into()], "", 1);
    let p = &shown.parameters;
    assert_eq!(p["mcp.server"], "datasets");
    assert_eq!(p["mcp.tool"], "export_dataset");
    assert_eq!(p["arguments.format"], "csv");
    assert!(!p.values().any(|v| v == "s3cr3t"), "{p:?}");
    // An argument not shown makes the call unapprovable, and is named.
    assert_eq!(shown.unshown, ["argument `secret`"]);
    let all = m.shown(&["*".into()], "", 1);
    assert_eq!(all.parameters["arguments.secret"], "s3cr3t");
    assert!(all.unshown.is_empty());
}

#[test]
fn only_post_carries_a_message_and_only_known_methods_and_real_calls_are_decided() {
    let m = mapper();
    let body = call(1, "delete_dataset", json!({"dataset": "a"}));
    for method in ["PUT", "PATCH", "OPTIONS", "post"] {
        let r = map_on(&m, method, "/mcp", body.as_bytes());
        assert!(
            matches!(r, Err(MappingError::Mcp(McpError::HttpMethod))),
            "{method}: {r:?}"
        );
    }
    assert_eq!(
        refusal(
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"read_dataset","arguments":{"dataset":"a"}}}"#
        ),
        McpError::NotJsonRpc("`tools/call` needs an `id`: a notification is never run")
    );
    assert_eq!(
        refusal(r#"{"jsonrpc":"2.0","id":1,"method":"admin/shutdown"}"#),
        McpError::UnknownMethod("admin/shutdown".into())
    );
    for method in ["ping\n", "p\u{1b}[2J", &"m".repeat(129)] {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method}).to_string();
        assert!(
            matches!(refusal(&body), McpError::NotJsonRpc(_)),
            "{method:?}"
        );
    }
    // A client's answer to the server: no id of the client's to echo, and
    // bound with what it answers.
    let answer = |v: u32| {
        post(&format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"v":{v}}}}}"#
        ))
        .unwrap()
    };
    let a = answer(1).mcp.unwrap();
    assert_eq!((a.method.as_str(), a.id.clone()), ("response", None));
    assert_ne!(a.bound, answer(2).mcp.unwrap().bound);
}
