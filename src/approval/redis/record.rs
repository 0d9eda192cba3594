//! A stored request (hash fields and votes) back into an [`Approval`].

use std::collections::HashMap;

use crate::approval::store::StoreError;
use crate::approval::{Approval, RequestInfo, Status};

/// The request `id` from its hash `f` and `votes`, its status as of `t`
/// (Redis' clock, as the scripts judge it).
pub(super) fn parse(
    id: &str,
    f: &HashMap<String, String>,
    votes: &[String],
    t: i64,
) -> Result<Approval, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("approval `{id}`: {what}"));
    let num = |k: &str| {
        f.get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| corrupt(k))
    };
    let info: RequestInfo = serde_json::from_str(f.get("info").ok_or_else(|| corrupt("info"))?)
        .map_err(|e| corrupt(&e.to_string()))?;
    let stored = f
        .get("status")
        .and_then(|s| Status::parse(s))
        .ok_or_else(|| corrupt("status"))?;
    let (expires_at, use_until, uses_left) =
        (num("expires_at")?, num("use_until")?, num("uses_left")?);
    let status = stored.effective(t, expires_at, use_until, uses_left);
    Ok(Approval {
        id: id.into(),
        status,
        info,
        created_at: num("created_at")?,
        expires_at,
        use_until,
        uses_left: uses_left.max(0) as u32,
        votes: votes
            .iter()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect(),
        opened_by: f.get("trace").cloned().unwrap_or_default(),
    })
}
