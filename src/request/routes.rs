//! The route table: method + path template -> Cedar action and resource.

use std::collections::HashMap;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use percent_encoding::percent_decode_str;

/// One configured route, already parsed.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Upper-case method, or `None` for any method.
    pub method: Option<String>,
    /// Path template such as `/v1/datasets/{id}/export`.
    pub path: String,
    pub action: EntityUid,
    pub resource_type: EntityTypeName,
    /// Resource id template such as `{id}` or `reports/{year}/{name}`.
    pub resource_id: String,
    /// Whether the route asks for the request body as `context.body`.
    pub body: bool,
    /// Whether the route's decisions are only recorded (shadow mode).
    pub shadow: bool,
}

/// A route that cannot be added to the table.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("path template `{0}` must start with `/`")]
    NotAbsolute(String),
    #[error("path template `{path}` is not usable: {reason}")]
    Template { path: String, reason: String },
    #[error("resource id `{id}` uses `{{{param}}}`, which path template `{path}` does not define")]
    UnknownParam {
        id: String,
        param: String,
        path: String,
    },
    #[error("resource id `{0}` has an unclosed `{{`")]
    Unclosed(String),
}

/// A path parameter that cannot name a resource.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PathParamError {
    #[error("path parameter `{0}` is not valid UTF-8 once percent-decoded")]
    NotUtf8(String),
    /// Upstreams read these differently (`;` starts a matrix parameter in
    /// Tomcat and Spring, `\\` is a separator on some servers), so the policy
    /// could judge a resource other than the one the upstream serves.
    #[error("path parameter `{name}` contains `{found}`, which upstreams may read as a separator")]
    Separator { name: String, found: char },
    #[error("path parameter `{0}` is empty")]
    Empty(String),
    /// The path misses every route, yet an upstream that ignores case,
    /// trailing `/`, `;` parameters or percent-encoding would serve it as a
    /// route's: deciding it as the default route could skip that route's
    /// policies (and its approvals).
    #[error(
        "request path resembles route `{0}` but does not match it exactly (case, a trailing `/`, `;`, `\\` or percent-encoding differ)"
    )]
    Resembles(String),
}

#[derive(Debug)]
enum Part {
    Lit(String),
    /// A path parameter; a catch-all (`{*rest}`) may span segments.
    Param {
        name: String,
        catch_all: bool,
    },
}

#[derive(Debug)]
struct Route {
    spec: RouteSpec,
    id: Vec<Part>,
}

/// What a request path resolved to.
#[derive(Debug)]
pub struct Resolved<'t> {
    pub action: &'t EntityUid,
    pub resource: EntityUid,
    /// `None` for the default route.
    pub route: Option<&'t RouteSpec>,
}

/// Routes indexed per method, then an any-method table, then the default.
#[derive(Debug)]
pub struct RouteTable {
    by_method: HashMap<String, matchit::Router<usize>>,
    any_method: matchit::Router<usize>,
    /// The same routes in [`loose`] form, to catch near misses.
    loose_by_method: HashMap<String, matchit::Router<usize>>,
    loose_any_method: matchit::Router<usize>,
    routes: Vec<Route>,
    default_action: EntityUid,
    default_resource_type: EntityTypeName,
    /// Whether the default route is in shadow mode.
    default_shadow: bool,
}

impl RouteTable {
    /// Builds the table. `Err` carries the index of the offending route.
    pub fn new(
        specs: Vec<RouteSpec>,
        default_action: EntityUid,
        default_resource_type: EntityTypeName,
    ) -> Result<Self, (usize, RouteError)> {
        let mut table = Self {
            by_method: HashMap::new(),
            any_method: matchit::Router::new(),
            loose_by_method: HashMap::new(),
            loose_any_method: matchit::Router::new(),
            routes: Vec::with_capacity(specs.len()),
            default_action,
            default_resource_type,
            default_shadow: false,
        };
        for (i, spec) in specs.into_iter().enumerate() {
            let id = parse_id_template(&spec).map_err(|e| (i, e))?;
            let router = match &spec.method {
                Some(m) => table.by_method.entry(m.clone()).or_default(),
                None => &mut table.any_method,
            };
            router.insert(spec.path.clone(), i).map_err(|e| {
                let reason = e.to_string();
                (
                    i,
                    RouteError::Template {
                        path: spec.path.clone(),
                        reason,
                    },
                )
            })?;
            let loose_router = match &spec.method {
                Some(m) => table.loose_by_method.entry(m.clone()).or_default(),
                None => &mut table.loose_any_method,
            };
            // Two routes may share a loose form (`/a` and `/A`); the first
            // one is enough to recognise a near miss.
            let _ = loose_router.insert(loose(&spec.path), i);
            table.routes.push(Route { spec, id });
        }
        Ok(table)
    }

    /// The configured routes, in order.
    pub fn specs(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter().map(|r| &r.spec)
    }

    pub fn default_action(&self) -> &EntityUid {
        &self.default_action
    }

    /// The routes in shadow mode, as `METHOD path` (`* path` for any
    /// method) and `default route`.
    pub fn in_shadow(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.spec.shadow)
            .map(|r| {
                format!(
                    "{} {}",
                    r.spec.method.as_deref().unwrap_or("*"),
                    r.spec.path
                )
            })
            .collect();
        if self.default_shadow {
            out.push("default route".into());
        }
        out
    }

    /// Puts the default route in shadow mode, or not.
    pub fn set_default_shadow(&mut self, shadow: bool) {
        self.default_shadow = shadow;
    }

    /// Whether the decisions of a call resolved to `route` (`None`: the
    /// default route) are only recorded.
    pub fn shadow(&self, route: Option<&RouteSpec>) -> bool {
        route.map_or(self.default_shadow, |r| r.shadow)
    }

    pub fn default_resource_type(&self) -> &EntityTypeName {
        &self.default_resource_type
    }

    /// Resolves a path (query already split off). A method-specific route
    /// wins over an any-method route; no match gives the default route, whose
    /// resource is the path itself.
    pub fn resolve(&self, method: &str, path: &str) -> Result<Resolved<'_>, PathParamError> {
        let hit = self
            .by_method
            .get(method)
            .and_then(|r| r.at(path).ok())
            .or_else(|| self.any_method.at(path).ok());
        let Some(hit) = hit else {
            if let Some(i) = self.resembled(method, path) {
                return Err(PathParamError::Resembles(self.routes[i].spec.path.clone()));
            }
            return Ok(Resolved {
                action: &self.default_action,
                resource: EntityUid::from_type_name_and_id(
                    self.default_resource_type.clone(),
                    EntityId::new(path),
                ),
                route: None,
            });
        };
        let route = &self.routes[*hit.value];
        let mut id = String::with_capacity(32);
        for part in &route.id {
            match part {
                Part::Lit(s) => id.push_str(s),
                Part::Param { name, catch_all } => {
                    let raw = hit.params.get(name).unwrap_or_default();
                    let decoded = percent_decode_str(raw)
                        .decode_utf8()
                        .map_err(|_| PathParamError::NotUtf8(name.clone()))?;
                    if decoded.is_empty() {
                        return Err(PathParamError::Empty(name.clone()));
                    }
                    let bad =
                        |c: char| c == ';' || c == '\\' || c == '\0' || (c == '/' && !catch_all);
                    if let Some(found) = decoded.chars().find(|&c| bad(c)) {
                        return Err(PathParamError::Separator {
                            name: name.clone(),
                            found,
                        });
                    }
                    id.push_str(&decoded);
                }
            }
        }
        Ok(Resolved {
            action: &route.spec.action,
            resource: EntityUid::from_type_name_and_id(
                route.spec.resource_type.clone(),
                EntityId::new(id),
            ),
            route: Some(&route.spec),
        })
    }
}

impl RouteTable {
    /// The route a path that matched none would match in loose form.
    fn resembled(&self, method: &str, path: &str) -> Option<usize> {
        use std::borrow::Cow;
        let path = loosened(path);
        let method = if method.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(method.to_ascii_uppercase())
        } else {
            Cow::Borrowed(method)
        };
        self.loose_by_method
            .get(method.as_ref())
            .and_then(|r| r.at(&path).ok())
            .or_else(|| self.loose_any_method.at(&path).ok())
            .map(|hit| *hit.value)
    }
}

/// [`loose`], without a copy for a path it would leave unchanged: every
/// default-route check comes here (`/healthz` included).
pub(crate) fn loosened(path: &str) -> std::borrow::Cow<'_, str> {
    if is_loose(path) {
        std::borrow::Cow::Borrowed(path)
    } else {
        std::borrow::Cow::Owned(loose(path))
    }
}

/// Whether [`loose`] would return `path` unchanged: ASCII without `%`,
/// `;`, `\\` or upper case, no empty or dot segment, no trailing `/`.
fn is_loose(path: &str) -> bool {
    !path
        .bytes()
        .any(|b| !b.is_ascii() || matches!(b, b'%' | b';' | b'\\' | b'A'..=b'Z'))
        && !path.contains("//")
        && !path.contains("/.")
        && (path.len() == 1 || !path.ends_with('/'))
}

/// A path as the most lenient upstream might read it: percent-decoded, `\`
/// as `/`, `;` parameters dropped, dot segments resolved, empty segments and
/// the trailing `/` removed, lower case.
fn loose(path: &str) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_lowercase()),
        }
    }
    format!("/{}", segments.join("/"))
}

fn parse_id_template(spec: &RouteSpec) -> Result<Vec<Part>, RouteError> {
    if !spec.path.starts_with('/') {
        return Err(RouteError::NotAbsolute(spec.path.clone()));
    }
    let mut parts = Vec::new();
    let mut rest = spec.resource_id.as_str();
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Lit(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| RouteError::Unclosed(spec.resource_id.clone()))?;
        let written = &rest[open + 1..open + close];
        // matchit writes a catch-all as `{*name}` and reports it as `name`;
        // `{{` and `}}` are literal braces, not parameters.
        let name = written.trim_start_matches('*');
        let path = spec.path.replace("{{", "").replace("}}", "");
        let catch_all = path.contains(&format!("{{*{name}}}"));
        let declared = catch_all || path.contains(&format!("{{{name}}}"));
        if !declared || name.is_empty() {
            return Err(RouteError::UnknownParam {
                id: spec.resource_id.clone(),
                param: name.to_owned(),
                path: spec.path.clone(),
            });
        }
        parts.push(Part::Param {
            name: name.to_owned(),
            catch_all,
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_owned()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn spec(method: Option<&str>, path: &str, action: &str, res: &str, id: &str) -> RouteSpec {
        RouteSpec {
            method: method.map(str::to_owned),
            path: path.into(),
            action: EntityUid::from_str(&format!(r#"Action::"{action}""#)).unwrap(),
            resource_type: EntityTypeName::from_str(res).unwrap(),
            resource_id: id.into(),
            body: false,
            shadow: false,
        }
    }

    fn table(specs: Vec<RouteSpec>) -> RouteTable {
        RouteTable::new(
            specs,
            EntityUid::from_str(r#"Action::"http_request""#).unwrap(),
            EntityTypeName::from_str("Path").unwrap(),
        )
        .unwrap()
    }

    fn resolve(t: &RouteTable, method: &str, path: &str) -> (String, String) {
        let r = t.resolve(method, path).unwrap();
        (r.action.to_string(), r.resource.to_string())
    }

    #[test]
    fn templates_fill_the_resource_from_path_parameters() {
        let t = table(vec![
            spec(
                Some("POST"),
                "/v1/datasets/{id}/export",
                "export",
                "Dataset",
                "{id}",
            ),
            spec(Some("GET"), "/v1/datasets/{id}", "read", "Dataset", "{id}"),
            spec(
                None,
                "/v1/reports/{year}/{name}",
                "report",
                "Report",
                "{year}/{name}",
            ),
        ]);
        assert_eq!(
            resolve(&t, "POST", "/v1/datasets/sales-2026/export"),
            (
                r#"Action::"export""#.into(),
                r#"Dataset::"sales-2026""#.into()
            )
        );
        assert_eq!(
            resolve(&t, "GET", "/v1/datasets/a%20b"),
            (r#"Action::"read""#.into(), r#"Dataset::"a b""#.into())
        );
        assert_eq!(
            resolve(&t, "DELETE", "/v1/reports/2026/q3").1,
            r#"Report::"2026/q3""#
        );
    }

    #[test]
    fn method_specific_route_wins_and_other_methods_fall_to_default() {
        let t = table(vec![
            spec(None, "/v1/items/{id}", "any", "Item", "{id}"),
            spec(Some("GET"), "/v1/items/{id}", "read", "Item", "{id}"),
        ]);
        assert_eq!(resolve(&t, "GET", "/v1/items/1").0, r#"Action::"read""#);
        assert_eq!(resolve(&t, "PUT", "/v1/items/1").0, r#"Action::"any""#);
        let t = table(vec![spec(
            Some("GET"),
            "/v1/items/{id}",
            "read",
            "Item",
            "{id}",
        )]);
        assert_eq!(
            resolve(&t, "PUT", "/v1/items/1"),
            (
                r#"Action::"http_request""#.into(),
                r#"Path::"/v1/items/1""#.into()
            )
        );
    }

    #[test]
    fn grpc_paths_map_like_http_paths() {
        let t = table(vec![spec(
            Some("POST"),
            "/acme.iam.v1.Roles/{method}",
            "call",
            "GrpcMethod",
            "acme.iam.v1.Roles/{method}",
        )]);
        assert_eq!(
            resolve(&t, "POST", "/acme.iam.v1.Roles/Grant").1,
            r#"GrpcMethod::"acme.iam.v1.Roles/Grant""#
        );
    }

    #[test]
    fn the_allocation_free_check_never_skips_a_path_loosening_changes() {
        for p in [
            "/",
            "/healthz",
            "/v1/datasets/sales",
            "/healthz/",
            "/Admin",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/.well-known",
            "/a;b",
            "/a%41",
            "/a\\b",
            "/caf\u{e9}",
            "/a.b/c",
        ] {
            // It may copy a path needlessly (`/.well-known`), never skip one.
            if is_loose(p) {
                assert_eq!(loose(p), p);
            }
        }
        assert!(
            ["/", "/healthz", "/v1/datasets/sales", "/a.b/c"]
                .into_iter()
                .all(is_loose)
        );
    }

    #[test]
    fn near_misses_of_a_route_are_refused_not_sent_to_the_default_route() {
        let t = table(vec![
            spec(Some("GET"), "/admin", "admin", "Page", "admin"),
            spec(
                Some("POST"),
                "/acme.iam.v1.Roles/GrantRole",
                "grant_role",
                "Service",
                "roles",
            ),
        ]);
        assert_eq!(resolve(&t, "GET", "/admin").0, r#"Action::"admin""#);
        for (m, p) in [
            ("GET", "/admin/"),
            ("GET", "/Admin"),
            ("GET", "/ADMIN"),
            ("get", "/admin/"),
            ("GET", "/admin;x=1"),
            ("GET", "/adm%69n"),
            ("GET", "/x/%2e%2e/admin"),
            ("GET", "/admin\\"),
            ("POST", "/acme.iam.v1.roles/grantrole"),
            ("POST", "/acme.iam.v1.Roles/GrantRole/"),
        ] {
            assert_eq!(
                t.resolve(m, p).unwrap_err(),
                PathParamError::Resembles(if p.contains("cme") {
                    "/acme.iam.v1.Roles/GrantRole".into()
                } else {
                    "/admin".into()
                }),
                "{m} {p}"
            );
        }
        // Other paths, and the same path with a method no route has, still
        // go to the default route.
        for (m, p) in [
            ("GET", "/admin/x"),
            ("GET", "/administrator"),
            ("PUT", "/admin"),
        ] {
            assert_eq!(resolve(&t, m, p).0, r#"Action::"http_request""#, "{m} {p}");
        }
    }

    #[test]
    fn bad_templates_and_parameters_are_refused() {
        let err = |s| {
            RouteTable::new(
                vec![s],
                EntityUid::from_str(r#"Action::"a""#).unwrap(),
                EntityTypeName::from_str("Path").unwrap(),
            )
            .unwrap_err()
            .1
        };
        assert!(matches!(
            err(spec(None, "v1/x", "a", "T", "x")),
            RouteError::NotAbsolute(_)
        ));
        assert!(matches!(
            err(spec(None, "/v1/{id}", "a", "T", "{name}")),
            RouteError::UnknownParam { .. }
        ));
        assert!(matches!(
            err(spec(None, "/v1/{id}", "a", "T", "{id")),
            RouteError::Unclosed(_)
        ));
        let t = table(vec![spec(None, "/v1/{id}", "a", "T", "{id}")]);
        assert_eq!(
            t.resolve("GET", "/v1/%ff").unwrap_err(),
            PathParamError::NotUtf8("id".into())
        );
        assert!(matches!(
            err(spec(None, "/v1/{{id}}", "a", "T", "{id}")),
            RouteError::UnknownParam { .. }
        ));
    }

    #[test]
    fn parameters_with_separators_upstreams_disagree_on_are_refused() {
        let t = table(vec![
            spec(None, "/v1/{id}", "a", "T", "{id}"),
            spec(None, "/files/{*rest}", "f", "File", "{*rest}"),
        ]);
        for (path, found) in [
            ("/v1/a;x=1", ';'),
            ("/v1/a%3Bx", ';'),
            ("/v1/a%2Fb", '/'),
            ("/v1/a%5Cb", '\\'),
            ("/v1/a%00", '\0'),
        ] {
            assert_eq!(
                t.resolve("GET", path).unwrap_err(),
                PathParamError::Separator {
                    name: "id".into(),
                    found
                },
                "{path}"
            );
        }
        // A catch-all spans segments, and its resource id is the whole rest.
        assert_eq!(resolve(&t, "GET", "/files/a/b.txt").1, r#"File::"a/b.txt""#);
        assert!(t.resolve("GET", "/files/a;b").is_err());
    }
}
