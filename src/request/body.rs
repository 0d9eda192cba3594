//! The request body: whether there is one to read, whether it is sent as
//! countersign reads it, and the JSON it holds.

use std::collections::HashMap;

use cedar_policy::RestrictedExpression;
use serde_json::{Map, Value};

use super::{HttpRequest, Mapper, MappingError, PARTIAL_BODY_HEADER, identity, value};

impl Mapper {
    /// The body as sent, `None` if there is none; refused if Envoy sent
    /// only part of it, or announced one and did not send it.
    pub(super) fn body_bytes<'r>(
        &self,
        req: &HttpRequest<'r>,
    ) -> Result<Option<&'r [u8]>, MappingError> {
        if req
            .headers
            .get(PARTIAL_BODY_HEADER)
            .is_some_and(|v| v == "true")
        {
            return Err(MappingError::PartialBody);
        }
        if req.body.is_empty() {
            // A body announced but not forwarded means Envoy does not buffer
            // this route (`with_request_body`): deciding without it would
            // skip every rule on the body.
            let announced = req
                .headers
                .get("content-length")
                .is_some_and(|v| v.trim() != "0")
                || req.headers.contains_key("transfer-encoding");
            if announced {
                return Err(MappingError::BodyNotForwarded);
            }
            return Ok(None);
        }
        let limit = self.context.max_body_bytes;
        if req.body.len() > limit {
            return Err(MappingError::BodyTooLarge {
                size: req.body.len(),
                limit,
            });
        }
        Ok(Some(req.body))
    }

    /// Refuses a body that the upstream may read other than as the JSON
    /// countersign parses: see [`json_media`]. Names no header value.
    pub(super) fn check_body_media(
        &self,
        headers: &HashMap<String, String>,
    ) -> Result<(), MappingError> {
        let header = |name: &str| headers.get(name).map_or("", String::as_str);
        json_media(
            header("content-type"),
            header("content-encoding"),
            &self.context.body_content_types,
        )
        .map_err(MappingError::BodyMedia)
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn body(
        &self,
        req: &HttpRequest<'_>,
    ) -> Result<Option<(RestrictedExpression, Map<String, Value>)>, MappingError> {
        let Some(bytes) = self.body_bytes(req)? else {
            return Ok(None);
        };
        self.check_body_media(req.headers)?;
        let json =
            value::parse_strict(bytes).map_err(|e| MappingError::BodyNotJson(e.to_string()))?;
        let Value::Object(map) = json else {
            return Err(MappingError::BodyNotObject);
        };
        let record = value::record(&map, 1)
            .map_err(|e| MappingError::BodyUnrepresentable(identity::describe(&e)))?;
        Ok(Some((record, map)))
    }
}

/// Whether a body sent with these `content-type` and `content-encoding`
/// headers is read as the JSON countersign parses: a media type in `types`
/// (a form or XML body is not what the policy judged), no charset but
/// UTF-8 (a UTF-7 reader sees other keys), not compressed (countersign
/// cannot read it). The refusal says what to send, and names no value.
pub fn json_media(content_type: &str, encoding: &str, types: &[String]) -> Result<(), String> {
    let encoding = encoding.trim();
    if !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity") {
        return Err(
            "countersign cannot read a compressed body: send it without `content-encoding` (or with `content-encoding: identity`)".into(),
        );
    }
    let mut parts = content_type.trim().split(';');
    let media = parts.next().unwrap_or_default().trim();
    let listed = types.iter().any(|t| t.eq_ignore_ascii_case(media));
    let utf8 = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    if listed && utf8 {
        return Ok(());
    }
    let types: Vec<String> = types.iter().map(|t| format!("`{t}`")).collect();
    Err(format!(
        "its content-type must be {} (with `charset=utf-8`, if a charset is given)",
        types.join(" or ")
    ))
}
