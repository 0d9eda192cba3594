//! Case folding of the names upstreams may match case-insensitively (JSON
//! keys, query parameter names). Two names are taken as one if either of
//! two foldings equates them: Go's, with which `encoding/json` matches a
//! key to a struct field (each character through its simple lower- then
//! upper-case mapping: `ſ` is `s`, the Kelvin sign `k`, `İ` `i`), and
//! Unicode's full case folding (`ß` is `ss`), as other case-insensitive
//! matchers use. Refusing names that only some parser equates is the safe
//! side: no upstream can then read a key the policy did not see.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::MappingError;

/// A name under both foldings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Folded {
    go: String,
    full: String,
}

fn fold(name: &str) -> Folded {
    let go = if name.is_ascii() {
        name.to_ascii_uppercase()
    } else {
        name.chars().map(go_char).collect()
    };
    Folded {
        go,
        full: unicase::UniCase::unicode(name).to_folded_case(),
    }
}

/// Go's `unicode.ToUpper(unicode.ToLower(c))`: simple (one-character)
/// mappings. Rust gives full mappings; where one is longer, the simple
/// lower case of `İ` is `i`, and keeping the lower-case character keeps
/// the classes Go's folding makes.
fn go_char(c: char) -> char {
    fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }
    let lower = single(c.to_lowercase()).unwrap_or(if c == '\u{130}' { 'i' } else { c });
    single(lower.to_uppercase()).unwrap_or(lower)
}

/// Whether `a` and `b` are one name to some case-insensitive matcher.
pub fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (fold(a), fold(b));
    a.go == b.go || a.full == b.full
}

/// Names seen so far in one object (or query), under both foldings.
#[derive(Debug, Default)]
pub struct FoldSet {
    go: HashSet<String>,
    full: HashSet<String>,
}

impl FoldSet {
    /// Adds `name`; `false` if it folds like a name added before.
    pub fn insert(&mut self, name: &str) -> bool {
        let f = fold(name);
        let new = !self.go.contains(&f.go) && !self.full.contains(&f.full);
        self.go.insert(f.go);
        self.full.insert(f.full);
        new
    }
}

/// Names a policy may read (attributes the schema declares, allow-listed
/// query parameters), to refuse a name that is not one of them but folds
/// like one: an upstream matching names case-insensitively reads it as
/// that name, while the policy does not see it under that name.
#[derive(Debug, Default, Clone)]
pub struct Declared {
    exact: HashSet<String>,
    go: HashMap<String, String>,
    full: HashMap<String, String>,
}

impl Declared {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Self::default();
        for name in names {
            let f = fold(name);
            out.go.entry(f.go).or_insert_with(|| name.to_owned());
            out.full.entry(f.full).or_insert_with(|| name.to_owned());
            out.exact.insert(name.to_owned());
        }
        out
    }

    /// The declared name `name` folds like, unless it is one itself.
    pub fn folds_to(&self, name: &str) -> Option<&str> {
        if self.exact.contains(name) {
            return None;
        }
        let f = fold(name);
        self.go
            .get(&f.go)
            .or_else(|| self.full.get(&f.full))
            .map(String::as_str)
    }

    /// Refuses a body with a key, at any depth, that folds like a declared
    /// name without being it. Names the declared name, never the key.
    pub fn check_body(&self, body: &Map<String, Value>) -> Result<(), MappingError> {
        for (k, v) in body {
            if let Some(name) = self.folds_to(k) {
                return Err(MappingError::BodyKeyFolds(name.to_owned()));
            }
            self.check_value(v)?;
        }
        Ok(())
    }

    fn check_value(&self, v: &Value) -> Result<(), MappingError> {
        match v {
            Value::Object(map) => self.check_body(map),
            Value::Array(items) => items.iter().try_for_each(|i| self.check_value(i)),
            _ => Ok(()),
        }
    }

    /// The attribute names a Cedar schema (in its JSON form) declares:
    /// those of every record type, entity and context.
    pub fn from_schema_json(schemas: &[Value]) -> Self {
        fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::Object(attrs)) = map.get("attributes") {
                        out.extend(attrs.keys().map(String::as_str));
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut names = Vec::new();
        schemas.iter().for_each(|s| walk(s, &mut names));
        Self::new(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_as_go_and_as_unicode_full_folding() {
        for (a, b) in [
            ("rows", "ROWS"),
            ("rows", "row\u{17f}"),
            ("kind", "\u{212a}IND"),
            ("id", "\u{130}D"),
            ("stra\u{df}e", "STRASSE"),
            ("stra\u{df}e", "stra\u{1e9e}e"),
            ("\u{3c3}", "\u{3c2}"),
        ] {
            let mut seen = FoldSet::default();
            assert!(seen.insert(a));
            assert!(!seen.insert(b), "{a} {b}");
        }
        let mut seen = FoldSet::default();
        for name in ["rows", "row", "rowss", "format", "i", "j"] {
            assert!(seen.insert(name), "{name}");
        }
    }

    #[test]
    fn a_name_that_folds_to_a_declared_one_without_being_it_is_named() {
        let d = Declared::new(["rows", "roleRef"]);
        assert_eq!(d.folds_to("rows"), None);
        assert_eq!(d.folds_to("roleRef"), None);
        assert_eq!(d.folds_to("note"), None);
        assert_eq!(d.folds_to("ROWS"), Some("rows"));
        assert_eq!(d.folds_to("Row\u{17f}"), Some("rows"));
        assert_eq!(d.folds_to("roleref"), Some("roleRef"));
        let body = serde_json::json!({"a": [{"b": {"ROWS": 1}}]});
        assert_eq!(
            d.check_body(body.as_object().unwrap()),
            Err(MappingError::BodyKeyFolds("rows".into()))
        );
    }
}
