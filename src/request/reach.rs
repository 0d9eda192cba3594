//! Which guarded actions no request can reach. A configuration file
//! replaces the embedded route table, so a file without `[[routes]]` sends
//! every call to the default route: a guarded export would then be decided
//! as `http_request`, never as a guarded call, and nothing would say so.

use cedar_policy::{EntityTypeName, EntityUid, Request};

use super::Mapper;
use crate::policy::Loaded;

/// The route table against a policy set, for the start-up log and
/// `policy validate`.
#[derive(Debug)]
pub struct RouteCoverage {
    /// Configured `[[routes]]` (the default route not counted).
    pub routes: usize,
    /// Guarded actions a request can be made for, as the configuration
    /// spells them, sorted.
    pub guarded: Vec<String>,
    /// Of those, the ones no route, protocol message or tool call maps to,
    /// that a route could map to...
    pub unrouted: Vec<String>,
    /// ...and that no route could: their schema context or types do not
    /// fit a route's request (an MCP tool's action, without its endpoint).
    pub unroutable: Vec<String>,
    /// The default route's action, as the configuration spells it.
    default_action: String,
    mcp_endpoints: usize,
}

impl RouteCoverage {
    pub fn of(mapper: &Mapper, loaded: &Loaded) -> Self {
        let schema = &loaded.schema;
        // INVARIANT: the mapper made its probes when the policies loaded;
        // should it fail now, every action counts as routable.
        let samples = mapper.samples().ok();
        let mut out = Self {
            routes: mapper.routes.specs().count(),
            guarded: Vec::new(),
            unrouted: Vec::new(),
            unroutable: Vec::new(),
            default_action: spelling(mapper.routes.default_action()),
            mcp_endpoints: mapper.mcp.len(),
        };
        for action in schema.actions() {
            // Action groups without `appliesTo` cannot be requested: only
            // their members need a route.
            let resources: Vec<&EntityTypeName> = schema
                .resources_for_action(action)
                .map(Iterator::collect)
                .unwrap_or_default();
            if resources.is_empty() || !loaded.guarded_actions.contains(action) {
                continue;
            }
            out.guarded.push(spelling(action));
            if mapper.reaches(action, &resources) {
                continue;
            }
            // As the loader checks a route: every probe must fit.
            let routable = samples.as_ref().is_none_or(|s| {
                resources.iter().any(|ty| {
                    s.for_route("", action, ty, false).all(|p| {
                        Request::new(p.principal, p.action, p.resource, p.context, Some(schema))
                            .is_ok()
                    })
                })
            });
            match routable {
                true => out.unrouted.push(spelling(action)),
                false => out.unroutable.push(spelling(action)),
            }
        }
        out.guarded.sort();
        out.unrouted.sort();
        out.unroutable.sort();
        out
    }

    /// `11 routes`, `1 route`, with the MCP endpoints when there are any.
    pub fn counted(&self) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let mut out = plural(self.routes, "route");
        if self.mcp_endpoints > 0 {
            out = format!("{out}, {}", plural(self.mcp_endpoints, "MCP endpoint"));
        }
        out
    }

    /// With an AuthZEN PDP configured: its callers name actions directly,
    /// so no declared action goes unreached for want of a route.
    pub fn with_authzen(mut self, on: bool) -> Self {
        if on {
            self.unrouted.clear();
            self.unroutable.clear();
        }
        self
    }

    /// What to do about guarded actions no request reaches, one line per
    /// remedy; `origin` is where the configuration came from.
    pub fn warnings(&self, origin: &str) -> Vec<String> {
        let mut out = Vec::new();
        let nor_mcp = if self.mcp_endpoints > 0 {
            " (nor does any MCP tool call)"
        } else {
            ""
        };
        if !self.unrouted.is_empty() {
            let (s, are, them) = number(&self.unrouted);
            let entries = self
                .unrouted
                .iter()
                .map(|a| format!("`action = {}`", toml_string(a)))
                .collect::<Vec<_>>()
                .join(", ");
            let place = if origin == crate::config::EMBEDDED_ORIGIN {
                "a configuration file given with --config (the embedded default maps only the example API)".to_owned()
            } else if self.routes == 0 {
                format!(
                    "`{origin}`, which has no `[[routes]]` at all (a configuration file replaces the embedded example's route table)"
                )
            } else {
                format!("`{origin}`")
            };
            out.push(format!(
                "guarded action{s} {} {are} declared in the schema, but no route maps to {them}{nor_mcp}: requests for {them} are decided as the default route's `{}`, never as guarded calls; add a `[[routes]]` entry with {entries} to {place}",
                quoted(&self.unrouted),
                self.default_action
            ));
        }
        if !self.unroutable.is_empty() {
            let (s, are, them) = number(&self.unroutable);
            let (tools, mcp) = match self.unroutable.len() {
                1 => ("it is an MCP tool's action", "its tool"),
                _ => ("they are MCP tools' actions", "their tools"),
            };
            let remedy = if self.mcp_endpoints > 0 {
                format!(
                    "check that an `[[mcp]]` endpoint's `tool_action` spells {them} and that `[mcp.resources]` gives {mcp} a resource the schema allows"
                )
            } else {
                format!(
                    "add an `[[mcp]]` endpoint, with `[mcp.resources]` giving {mcp} a resource the schema allows"
                )
            };
            out.push(format!(
                "guarded action{s} {} {are} declared in the schema, but no request reaches {them} and no route can: the schema gives {them} a context or types a route's request does not have; if {tools}, {remedy} (see docs/mcp.md)",
                quoted(&self.unroutable),
            ));
        }
        out
    }
}

/// `(plural s, are/is, them/it)` for a list of actions.
fn number(actions: &[String]) -> (&'static str, &'static str, &'static str) {
    match actions.len() {
        1 => ("", "is", "it"),
        _ => ("s", "are", "them"),
    }
}

impl Mapper {
    /// Whether some request maps to `action`, which the schema lets apply
    /// to `resources`.
    fn reaches(&self, action: &EntityUid, resources: &[&EntityTypeName]) -> bool {
        let routed = self.routes.specs().any(|r| r.action == *action)
            || self.routes.default_action() == action;
        let protocol = self
            .mcp
            .iter()
            .any(|e| e.protocol_action == *action || e.methods.values().any(|m| m == action));
        // A tool call's action is whatever its tool's name spells, so with an
        // MCP endpoint every action is reachable by name. It counts only when
        // the tool's call gets a resource the action applies to: otherwise
        // the call does not fit the schema and is refused, and a route
        // action such as `export` would never be warned about beside `/mcp`.
        let tool = self.mcp.iter().any(|e| {
            e.tool_resource_type(action)
                .is_some_and(|ty| resources.contains(&ty))
        });
        routed || protocol || tool
    }
}

/// `export` for `Action::"export"`, as a route's `action` is written; a
/// namespaced action in full.
fn spelling(action: &EntityUid) -> String {
    if action.type_name().to_string() == "Action" {
        action.id().unescaped().to_owned()
    } else {
        action.to_string()
    }
}

/// A TOML string holding `v`.
fn toml_string(v: &str) -> String {
    if v.contains('"') {
        format!("'{v}'")
    } else {
        format!("\"{v}\"")
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
