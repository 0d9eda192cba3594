//! JSON (JWT claims, request bodies) to Cedar values.

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Deepest JSON nesting turned into Cedar records; deeper input is refused
/// rather than walked, so a hostile body cannot blow the stack.
pub const MAX_DEPTH: usize = 16;

/// Why a JSON value has no Cedar form. Messages name no values: they go
/// back to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    TooDeep,
    Number,
    DuplicateKey(String),
}

/// Converts a JSON value. `Ok(None)` means "leave the attribute out": JSON
/// `null` has no Cedar form, and an absent attribute is what `has` tests for.
///
/// Integers become `Long`; other numbers become `decimal` when Cedar's
/// four-digit decimal can hold them exactly, and are refused otherwise.
pub fn to_cedar(value: &Value, depth: usize) -> Result<Option<RestrictedExpression>, ValueError> {
    if depth > MAX_DEPTH {
        return Err(ValueError::TooDeep);
    }
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => number(n)?,
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(v) = to_cedar(item, depth + 1)? {
                    out.push(v);
                }
            }
            RestrictedExpression::new_set(out)
        }
        Value::Object(map) => record(map, depth + 1)?,
    }))
}

/// Converts a JSON object to a Cedar record, leaving out `null` members.
pub fn record(
    map: &serde_json::Map<String, Value>,
    depth: usize,
) -> Result<RestrictedExpression, ValueError> {
    let mut fields = Vec::with_capacity(map.len());
    for (k, v) in map {
        if let Some(v) = to_cedar(v, depth)? {
            fields.push((k.clone(), v));
        }
    }
    // serde_json keeps object keys unique, so this cannot fail in practice.
    RestrictedExpression::new_record(fields).map_err(|e| ValueError::DuplicateKey(e.to_string()))
}

/// Appends the Cedar type [`to_cedar`] gives `value` (its shape: member
/// names and types, never values) to `out`: values of one shape fit a
/// schema type alike. Only for values [`to_cedar`] accepts.
pub fn shape(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push('_'),
        Value::Bool(_) => out.push('b'),
        Value::String(_) => out.push('s'),
        Value::Number(n) => out.push(if long(n).is_some() { 'l' } else { 'd' }),
        Value::Array(items) => {
            out.push('[');
            for item in items.iter().filter(|v| !v.is_null()) {
                shape(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => record_shape(map, out),
    }
}

/// [`shape`] of a record: members in name order, `null` ones left out as
/// [`record`] leaves them out.
pub fn record_shape(map: &serde_json::Map<String, Value>, out: &mut String) {
    let mut names: Vec<&String> = map.keys().filter(|k| !map[*k].is_null()).collect();
    names.sort_unstable();
    out.push('{');
    for name in names {
        // JSON-quoted, so that no name can forge the punctuation.
        out.push_str(&Value::String(name.clone()).to_string());
        out.push(':');
        shape(&map[name], out);
        out.push(',');
    }
    out.push('}');
}

/// The `Long` a JSON number becomes, if it is one.
fn long(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    // Protobuf `Struct` (how Envoy hands over JWT claims) carries every
    // number as a double, so `exp: 1700000000` arrives as 1.7e9.
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn number(n: &serde_json::Number) -> Result<RestrictedExpression, ValueError> {
    if let Some(i) = long(n) {
        return Ok(RestrictedExpression::new_long(i));
    }
    // Decide on the shortest text form, not on binary arithmetic: 19.99 is
    // not a whole number of ten-thousandths as a double.
    let text = n.to_string();
    let fits = match text.split_once('.') {
        Some((int, frac)) => {
            (1..=4).contains(&frac.len())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && int.trim_start_matches('-').len() <= 14
        }
        None => false,
    };
    if fits {
        return Ok(RestrictedExpression::new_decimal(text));
    }
    Err(ValueError::Number)
}

/// Parses JSON, refusing an object with a repeated key, or keys that differ
/// only in case or fold alike (see [`super::fold`]): parsers disagree on
/// which copy wins (serde_json keeps the last, others the first or match
/// case-insensitively), so a policy could judge one value while the
/// upstream acts on another.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        let mut seen = super::fold::FoldSet::default();
        while let Some(key) = map.next_key::<String>()? {
            // Go's encoding/json folds `ſ` to `s` and `K` (Kelvin) to `k`,
            // and the last copy wins; others fold `ß` to `ss`.
            if !seen.insert(&key) {
                // The key itself is body text: it stays out of the reason,
                // which reaches logs and spans.
                return Err(serde::de::Error::custom(
                    "duplicate key in an object (keys that differ only in case count as the same)",
                ));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cedar(v: Value) -> String {
        let expr = to_cedar(&v, 0).unwrap().unwrap();
        let ctx = cedar_policy::Context::from_pairs([("v".to_owned(), expr)]).unwrap();
        ctx.get("v").unwrap().to_string()
    }

    #[test]
    fn scalars_sets_and_records_convert() {
        assert_eq!(cedar(json!("a")), r#""a""#);
        assert_eq!(cedar(json!(true)), "true");
        assert_eq!(cedar(json!(42)), "42");
        assert_eq!(cedar(json!(1.7e9)), "1700000000");
        assert_eq!(cedar(json!(9.99)), r#"decimal("9.99")"#);
        assert_eq!(cedar(json!(19.99)), r#"decimal("19.99")"#);
        assert_eq!(cedar(json!(0.57)), r#"decimal("0.57")"#);
        assert_eq!(cedar(json!(-1.5)), r#"decimal("-1.5")"#);
        assert_eq!(cedar(json!(["a", null])), r#"["a"]"#);
        assert_eq!(cedar(json!({"a": 1, "b": null})), r#"{"a": 1}"#);
    }

    #[test]
    fn null_is_left_out_and_unrepresentable_numbers_refused() {
        assert!(to_cedar(&json!(null), 0).unwrap().is_none());
        for n in [json!(0.123456), json!(1e300), json!(1e-9)] {
            assert_eq!(to_cedar(&n, 0).unwrap_err(), ValueError::Number, "{n}");
        }
    }

    #[test]
    fn nesting_up_to_the_limit_converts_and_beyond_is_refused() {
        let nest = |levels: usize, array: bool| {
            let mut v = json!(1);
            for _ in 0..levels {
                v = if array { json!([v]) } else { json!({ "a": v }) };
            }
            v
        };
        for array in [true, false] {
            assert!(
                to_cedar(&nest(MAX_DEPTH, array), 0).is_ok(),
                "array: {array}"
            );
            assert_eq!(
                to_cedar(&nest(MAX_DEPTH + 1, array), 0).unwrap_err(),
                ValueError::TooDeep
            );
        }
    }

    #[test]
    fn a_shape_names_every_member_and_type_and_no_value() {
        let shape_of = |v: Value| {
            let mut out = String::new();
            shape(&v, &mut out);
            out
        };
        let base = shape_of(json!({"a": 1, "b": "x", "c": [true], "d": {"e": 1.5}}));
        assert_eq!(
            base,
            shape_of(json!({"d": {"e": 2.25}, "c": [false], "b": "y", "a": 7}))
        );
        assert_eq!(
            base,
            shape_of(json!({"a": 1, "b": "x", "c": [true, null], "d": {"e": 1.5}, "z": null}))
        );
        for other in [
            json!({"a": "1", "b": "x", "c": [true], "d": {"e": 1.5}}),
            json!({"a": 1.5, "b": "x", "c": [true], "d": {"e": 1.5}}),
            json!({"a": 1, "b": "x", "c": [true, true], "d": {"e": 1.5}}),
            json!({"a": 1, "b": "x", "c": [true], "d": {"e": 1}}),
            json!({"a": 1, "b": "x", "c": [true], "d": {"e": 1.5}, "f": 0}),
            json!({"a": 1, "b,\"c\":s": "x", "c": [true], "d": {"e": 1.5}}),
        ] {
            assert_ne!(base, shape_of(other.clone()), "{other}");
        }
    }

    #[test]
    fn strict_parsing_refuses_repeated_keys_at_any_depth_and_in_any_case() {
        assert_eq!(
            parse_strict(br#"{"a":1,"b":[{"c":null}]}"#).unwrap(),
            json!({"a":1,"b":[{"c":null}]})
        );
        for body in [
            r#"{"format":"xml","format":"csv"}"#,
            r#"{"x":{"k":1,"k":2}}"#,
            r#"{"format":"xml","FORMAT":"csv"}"#,
            // Equal once case-folded: the long s, the sharp s.
            "{\"dest\":1,\"de\u{17f}t\":2}",
            "{\"stra\u{df}e\":1,\"STRASSE\":2}",
            // Equal under Go's folding (encoding/json matches fields so):
            // the Kelvin sign, the capital sharp s, the dotted capital I.
            "{\"kind\":1,\"\u{212a}IND\":2}",
            "{\"stra\u{df}e\":1,\"stra\u{1e9e}e\":2}",
            "{\"id\":1,\"\u{130}d\":2}",
            "{\"\u{3c3}\":1,\"\u{3c2}\":2}",
            "{\"rows\":10,\"row\u{17f}\":2000000}",
        ] {
            let err = parse_strict(body.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with("duplicate key"), "{body}: {err}");
        }
    }
}
