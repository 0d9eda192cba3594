//! JSON (JWT claims, request bodies) to Cedar values.

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Deepest JSON nesting turned into Cedar records; deeper input is refused
/// rather than walked, so a hostile body cannot blow the stack.
pub const MAX_DEPTH: usize = 16;

/// Why a JSON value has no Cedar form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    TooDeep,
    Number(String),
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

fn number(n: &serde_json::Number) -> Result<RestrictedExpression, ValueError> {
    if let Some(i) = n.as_i64() {
        return Ok(RestrictedExpression::new_long(i));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    // Protobuf `Struct` (how Envoy hands over JWT claims) carries every
    // number as a double, so `exp: 1700000000` arrives as 1.7e9.
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        return Ok(RestrictedExpression::new_long(f as i64));
    }
    let scaled = f * 10_000.0;
    if f.is_finite() && scaled.fract() == 0.0 && scaled.abs() < 9.0e18 {
        return Ok(RestrictedExpression::new_decimal(format!("{f:.4}")));
    }
    Err(ValueError::Number(n.to_string()))
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
        assert_eq!(cedar(json!(9.99)), r#"decimal("9.9900")"#);
        assert_eq!(cedar(json!(["a", null])), r#"["a"]"#);
        assert_eq!(cedar(json!({"a": 1, "b": null})), r#"{"a": 1}"#);
    }

    #[test]
    fn null_is_left_out_and_unrepresentable_numbers_refused() {
        assert!(to_cedar(&json!(null), 0).unwrap().is_none());
        assert_eq!(
            to_cedar(&json!(0.123456), 0).unwrap_err(),
            ValueError::Number("0.123456".into())
        );
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        let mut v = json!(1);
        for _ in 0..=MAX_DEPTH {
            v = json!([v]);
        }
        assert_eq!(to_cedar(&v, 0).unwrap_err(), ValueError::TooDeep);
    }
}
