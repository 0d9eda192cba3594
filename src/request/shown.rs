//! What an approver is shown of a call, and what they would not be: an
//! approval binds the whole call, so a call carrying anything unshown
//! cannot be approved.

use std::collections::BTreeMap;

use serde_json::Value;

use super::MappedRequest;

/// `@show` entry that shows every body field (or tool argument) and every
/// query parameter.
pub const SHOW_ALL: &str = "*";

/// Longest name quoted in [`Shown::unshown`]: names come from the caller.
const NAME_CHARS: usize = 40;

/// A call as an approver would see it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shown {
    /// Label → value, in full: allow-listed query parameters under their
    /// name, other query parameters as `query.<name>`, body fields as
    /// `body.<field>`, tool arguments as `arguments.<name>`.
    pub parameters: BTreeMap<String, String>,
    /// What the call carries that would not be shown, described by name
    /// (escaped, shortened), never by value.
    pub unshown: Vec<String>,
}

impl MappedRequest {
    /// What an approver sees of this call under `show` (a guard's `@show`
    /// fields), given the raw `query` and the size of the body it binds.
    pub fn shown(&self, show: &[String], query: &str, body_bytes: usize) -> Shown {
        let everything = show.iter().any(|f| f == SHOW_ALL);
        let mut out = Shown::default();
        for (name, value) in &self.query {
            out.put(name.clone(), value.clone(), || {
                format!("query parameter {}", quoted(name))
            });
        }
        self.other_query(query, everything, &mut out);
        let mut label = "body";
        if let Some(mcp) = &self.mcp {
            label = "arguments";
            out.put("mcp.server".to_owned(), mcp.server.clone(), String::new);
            if let Some(tool) = &mcp.tool {
                out.put("mcp.tool".to_owned(), tool.clone(), String::new);
            }
        }
        match &self.body {
            Some(body) => {
                for (field, v) in body {
                    let noun = if label == "body" {
                        "body field"
                    } else {
                        "argument"
                    };
                    if !everything && !show.contains(field) {
                        out.unshown.push(format!("{noun} {}", quoted(field)));
                        continue;
                    }
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.put(format!("{label}.{field}"), text, || {
                        format!("{noun} {}", quoted(field))
                    });
                }
            }
            // An MCP call binds its tool and arguments, shown above.
            None if body_bytes > 0 && self.mcp.is_none() => out
                .unshown
                .push("a body that this route does not read (`body = true`)".to_owned()),
            None => {}
        }
        out
    }

    /// Query parameters the context allow-list leaves out: shown as
    /// `query.<name>` under [`SHOW_ALL`], else unshown.
    fn other_query(&self, query: &str, everything: bool, out: &mut Shown) {
        let mut others: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if self.query.iter().any(|(name, _)| *name == k) {
                continue;
            }
            others
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
        for (name, mut values) in others {
            if !everything {
                out.unshown
                    .push(format!("query parameter {}", quoted(&name)));
                continue;
            }
            // Every value, in order: upstreams differ on which one counts.
            let text = match values.len() {
                1 => values.pop().unwrap_or_default(),
                _ => Value::from(values).to_string(),
            };
            out.put(format!("query.{name}"), text, || {
                format!("query parameter {}", quoted(&name))
            });
        }
    }
}

impl Shown {
    /// Shows `value` as `label`; a label already taken would hide one of
    /// the two values, so the newcomer counts as unshown.
    fn put(&mut self, label: String, value: String, what: impl FnOnce() -> String) {
        match self.parameters.entry(label) {
            std::collections::btree_map::Entry::Occupied(_) => {
                self.unshown
                    .push(format!("{} (its label is taken)", what()));
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value);
            }
        }
    }
}

/// A caller's name, quoted for a reason: control characters escaped, long
/// names shortened.
fn quoted(name: &str) -> String {
    format!("`{}`", crate::text::shortened(name, NAME_CHARS))
}
