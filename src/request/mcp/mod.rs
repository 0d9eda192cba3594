//! MCP (Model Context Protocol) endpoints: one JSON-RPC message in a
//! Streamable HTTP POST -> the Cedar action, resource and context of a tool
//! call or of a protocol message. The body is parsed here rather than by
//! Envoy's MCP filter (work in progress in 1.40): one strict parser decides
//! both what the policy sees and what an approval binds.

use std::collections::HashMap;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde_json::{Map, Value};

use super::value;

/// The method whose calls map to one action per tool.
pub const TOOLS_CALL: &str = "tools/call";
/// Longest tool name accepted (the MCP spec's limit).
const MAX_TOOL_NAME: usize = 128;

/// One configured MCP endpoint (`[[mcp]]`).
#[derive(Debug, Clone)]
pub struct McpEndpoint {
    /// The Streamable HTTP path, such as `/mcp`.
    pub path: String,
    /// The server's name, for approvers and `context.mcp.server`.
    pub server: String,
    /// The resource of calls no tool template names.
    pub server_resource: EntityUid,
    /// The text around `{tool}` in the action of a `tools/call`.
    pub tool_action: (String, String),
    /// The action of every other message, unless `methods` names one.
    pub protocol_action: EntityUid,
    pub methods: HashMap<String, EntityUid>,
    /// Per tool: its resource, from its arguments.
    pub resources: HashMap<String, ResourceTemplate>,
    /// Whether the endpoint's decisions are only recorded (shadow mode).
    pub shadow: bool,
}

/// `Type::"…{arguments.NAME}…"`: a tool's resource from its arguments.
#[derive(Debug, Clone)]
pub struct ResourceTemplate {
    pub entity_type: EntityTypeName,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Arg(String),
}

/// Why a configured resource template is not usable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("`{{{0}}}` is not `{{arguments.NAME}}`")]
    Placeholder(String),
    #[error("an unclosed `{{`")]
    Unclosed,
}

impl ResourceTemplate {
    pub fn parse(entity_type: EntityTypeName, id: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = id;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or(TemplateError::Unclosed)? + open;
            let inner = &rest[open + 1..close];
            let name = inner
                .strip_prefix("arguments.")
                .filter(|n| !n.is_empty() && !n.contains(['{', '.']))
                .ok_or_else(|| TemplateError::Placeholder(inner.to_owned()))?;
            parts.push(Part::Arg(name.to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Self { entity_type, parts })
    }

    /// The arguments the template reads.
    pub fn arguments(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Arg(name) => Some(name.as_str()),
            Part::Lit(_) => None,
        })
    }

    fn resolve(&self, tool: &str, arguments: &Map<String, Value>) -> Result<EntityUid, McpError> {
        let mut id = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => id.push_str(s),
                Part::Arg(name) => match arguments.get(name) {
                    Some(Value::String(s)) if !s.is_empty() => id.push_str(s),
                    _ => {
                        return Err(McpError::ResourceArgument {
                            tool: tool.to_owned(),
                            argument: name.clone(),
                        });
                    }
                },
            }
        }
        Ok(EntityUid::from_type_name_and_id(
            self.entity_type.clone(),
            EntityId::new(id),
        ))
    }
}

/// Why a request to an MCP endpoint cannot be decided. Messages never echo
/// the body: they reach the caller, logs and spans.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum McpError {
    #[error(
        "an MCP request must carry one JSON-RPC message: batches are refused, send each call on its own"
    )]
    Batch,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
    #[error("an MCP endpoint takes POST (one JSON-RPC message), GET and DELETE")]
    HttpMethod,
    #[error(
        "`{0}` is not an MCP method countersign knows: name its action in `[mcp.methods]` to allow it"
    )]
    UnknownMethod(String),
    #[error("`tools/call` needs `params.name`, the tool's name as a string")]
    NoToolName,
    #[error(
        "tool name must be 1 to {MAX_TOOL_NAME} characters of letters, digits, `_`, `-`, `.` and `/`"
    )]
    BadToolName,
    #[error("`params.arguments` of `tools/call` must be a JSON object")]
    ArgumentsNotObject,
    #[error("`params.arguments` cannot be represented in Cedar: {0}")]
    Unrepresentable(String),
    #[error(
        "tool `{tool}` names its resource from `arguments.{argument}`, which the call does not give as a non-empty string"
    )]
    ResourceArgument { tool: String, argument: String },
}

/// One JSON-RPC message, as decided.
#[derive(Debug, Clone)]
pub struct McpCall {
    /// The request's `id`; `None` for a notification or a non-POST.
    pub id: Option<Value>,
    /// The JSON-RPC method; `http/get`, `http/delete`… for a request
    /// without a message, `response` for a client's answer to the server.
    pub method: String,
    pub tool: Option<String>,
    pub server: String,
    /// What an approval binds: the method and its parameters in canonical
    /// JSON, without `id` and `_meta`, which change on every retry.
    pub bound: Vec<u8>,
    /// On a tool call: the shape of its Cedar request (action, principal
    /// and resource types, optional context parts, every argument's name
    /// and type; no value), to know it fits the schema without asking Cedar
    /// each time.
    pub shape: String,
}

impl McpCall {
    pub fn is_tool_call(&self) -> bool {
        self.tool.is_some()
    }
}

/// A resolved MCP request: what it is, the action and resource it maps to,
/// and the tool's arguments.
#[derive(Debug)]
pub struct Resolved {
    pub call: McpCall,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub arguments: Option<Map<String, Value>>,
}

/// Whether `tool` is a name a `tools/call` may carry.
pub fn is_tool_name(tool: &str) -> bool {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    !tool.is_empty() && tool.len() <= MAX_TOOL_NAME && tool.chars().all(valid)
}

impl McpEndpoint {
    /// Reads the request: a POST carries one message, any other method
    /// (the event stream's GET, the session's DELETE) none.
    pub fn resolve(&self, method: &str, body: &[u8]) -> Result<Resolved, McpError> {
        match method {
            "POST" => {}
            // The event stream and the session's end carry no message.
            "GET" | "DELETE" => {
                let method = format!("http/{}", method.to_ascii_lowercase());
                return Ok(self.protocol(method, None, Map::new()));
            }
            // A server that reads a body whatever the method would run
            // what no one decided on.
            _ => return Err(McpError::HttpMethod),
        }
        let json = value::parse_strict(body).map_err(|e| McpError::NotJson(e.to_string()))?;
        let mut message = match json {
            Value::Object(m) => m,
            Value::Array(_) => return Err(McpError::Batch),
            _ => return Err(McpError::NotJsonRpc("it must be a JSON object")),
        };
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(McpError::NotJsonRpc("`jsonrpc` must be \"2.0\""));
        }
        let id = match message.remove("id") {
            None => None,
            Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
            Some(_) => return Err(McpError::NotJsonRpc("`id` must be a string or a number")),
        };
        let mut params = match message.remove("params") {
            None => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => return Err(McpError::NotJsonRpc("`params` must be an object")),
        };
        let method = match message.get("method") {
            Some(Value::String(m)) if is_method_name(m) => m.clone(),
            Some(_) => {
                return Err(McpError::NotJsonRpc(
                    "`method` must be a string of 1 to 128 printable ASCII characters",
                ));
            }
            // A client's answer to a request from the server: bound with
            // what it answers, and answered like a notification (its `id` is
            // the server's, not the client's).
            None if message.contains_key("result") || message.contains_key("error") => {
                let answer = ["result", "error"]
                    .into_iter()
                    .filter_map(|k| message.remove(k).map(|v| (k.to_owned(), v)))
                    .collect();
                return Ok(self.protocol("response".to_owned(), None, answer));
            }
            None => return Err(McpError::NotJsonRpc("it has no `method`")),
        };
        if method != TOOLS_CALL {
            if !self.methods.contains_key(&method) && !is_known_method(&method) {
                return Err(McpError::UnknownMethod(method));
            }
            return Ok(self.protocol(method, id, params));
        }
        // A notification is never run: deciding (and approving) it would
        // spend an approval on nothing.
        if id.is_none() {
            return Err(McpError::NotJsonRpc(
                "`tools/call` needs an `id`: a notification is never run",
            ));
        }
        let tool = match params.get("name") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(McpError::NoToolName),
        };
        if !is_tool_name(&tool) {
            return Err(McpError::BadToolName);
        }
        if !matches!(
            params.get("arguments"),
            None | Some(Value::Null | Value::Object(_))
        ) {
            return Err(McpError::ArgumentsNotObject);
        }
        let bound = bound(&method, &params);
        let arguments = match params.remove("arguments") {
            Some(Value::Object(a)) => a,
            _ => Map::new(),
        };
        let resource = match self.resources.get(&tool) {
            Some(t) => t.resolve(&tool, &arguments)?,
            None => self.server_resource.clone(),
        };
        let (prefix, suffix) = &self.tool_action;
        let action = EntityUid::from_type_name_and_id(
            ACTION.clone(),
            EntityId::new(format!("{prefix}{tool}{suffix}")),
        );
        Ok(Resolved {
            call: McpCall {
                id,
                method,
                tool: Some(tool),
                server: self.server.clone(),
                bound,
                shape: String::new(),
            },
            action,
            resource,
            arguments: Some(arguments),
        })
    }

    /// The resource type of the tool call that would be decided as
    /// `action`, if any: every tool name spells an action through
    /// `tool_action`.
    pub fn tool_resource_type(&self, action: &EntityUid) -> Option<&EntityTypeName> {
        if action.type_name() != &*ACTION {
            return None;
        }
        let (prefix, suffix) = &self.tool_action;
        let id = action.id().unescaped();
        let tool = id
            .strip_prefix(prefix.as_str())?
            .strip_suffix(suffix.as_str())?;
        if !is_tool_name(tool) {
            return None;
        }
        Some(match self.resources.get(tool) {
            Some(t) => &t.entity_type,
            None => self.server_resource.type_name(),
        })
    }

    fn protocol(&self, method: String, id: Option<Value>, params: Map<String, Value>) -> Resolved {
        let action = self
            .methods
            .get(&method)
            .unwrap_or(&self.protocol_action)
            .clone();
        let bound = bound(&method, &params);
        Resolved {
            call: McpCall {
                id,
                method,
                tool: None,
                server: self.server.clone(),
                bound,
                shape: String::new(),
            },
            action,
            resource: self.server_resource.clone(),
            arguments: None,
        }
    }
}

/// A method name that can be quoted in answers, logs and spans.
fn is_method_name(m: &str) -> bool {
    (1..=128).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_graphic())
}

/// The protocol's own methods (MCP 2025-11-25 and 2026-07-28) other than
/// `tools/call`. Anything else is refused unless `[mcp.methods]` names it,
/// so a method a later revision adds is not allowed by a rule written
/// before it.
fn is_known_method(m: &str) -> bool {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    ];
    KNOWN.contains(&m) || m.starts_with("notifications/")
}

/// `Action`, the type of every action (parsed once).
static ACTION: std::sync::LazyLock<EntityTypeName> =
    // INVARIANT: a valid type name.
    std::sync::LazyLock::new(|| "Action".parse().expect("`Action` is a type name"));

/// `{"method":…,"params":{…}}` without `params._meta` (progress tokens,
/// client hints), in canonical JSON: object keys sorted at every depth.
fn bound(method: &str, params: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"method\":");
    // INVARIANT: a string always serialises.
    let _ = serde_json::to_writer(&mut out, method);
    out.extend_from_slice(b",\"params\":");
    object(params, |k| k != "_meta", &mut out);
    out.push(b'}');
    out
}

/// An object's members that `keep`, keys sorted.
fn object(m: &Map<String, Value>, keep: impl Fn(&str) -> bool, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = m.keys().filter(|k| keep(k)).collect();
    keys.sort_unstable();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // INVARIANT: a string always serialises.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        canonical(&m[k], out);
    }
    out.push(b'}');
}

fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => object(m, |_| true, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        // INVARIANT: a scalar always serialises.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// The tool's arguments as the Cedar record `context.arguments`.
pub fn arguments_record(
    arguments: &Map<String, Value>,
) -> Result<cedar_policy::RestrictedExpression, McpError> {
    value::record(arguments, 1)
        .map_err(|e| McpError::Unrepresentable(super::identity::describe(&e)))
}

#[cfg(test)]
mod tests;
