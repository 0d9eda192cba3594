//! Wall-clock time as the approval records keep it: Unix seconds, shown as
//! RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds by this process' clock.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
