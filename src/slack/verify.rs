//! Whether a request really comes from Slack: `X-Slack-Signature` is
//! `v0=` and the hex HMAC-SHA256, keyed with the app's signing secret, of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}`; and the timestamp is
//! recent, so that a captured request cannot be sent again later (within
//! the window, the store's `first_sight` refuses it).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from this clock (Slack's advice).
pub const WINDOW_SECS: i64 = 5 * 60;

/// Why a request is not believed to come from Slack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no `{0}` header")]
    Missing(&'static str),
    #[error("`{0}` is malformed")]
    Malformed(&'static str),
    #[error("the signature does not match the body and timestamp")]
    Mismatch,
    #[error("the timestamp is {0} seconds from this clock, more than 5 minutes")]
    Stale(i64),
}

pub const SIGNATURE: &str = "x-slack-signature";
pub const TIMESTAMP: &str = "x-slack-request-timestamp";

/// Checks `signature` over `timestamp` and `body` with `secret`, and that
/// `timestamp` is within [`WINDOW_SECS`] of `now` (Unix seconds). Returns
/// the signature in one spelling (lowercase hex), to remember against
/// replays: hex is read in either case, so the header as sent is not one.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<String, VerifyError> {
    let timestamp = timestamp.ok_or(VerifyError::Missing(TIMESTAMP))?;
    let signature = signature.ok_or(VerifyError::Missing(SIGNATURE))?;
    let at: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::Malformed(TIMESTAMP))?;
    let digest = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::Malformed(SIGNATURE))?;
    let mut mac = mac(secret, timestamp);
    mac.update(body);
    // Constant time: a forger learns nothing from how long a refusal took.
    mac.verify_slice(&digest)
        .map_err(|_| VerifyError::Mismatch)?;
    let skew = now.saturating_sub(at).saturating_abs();
    if skew > WINDOW_SECS {
        return Err(VerifyError::Stale(skew));
    }
    Ok(hex::encode(digest))
}

fn mac(secret: &[u8], timestamp: &str) -> Hmac<Sha256> {
    // INVARIANT: HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's own example (api.slack.com/authentication/verifying-requests-from-slack).
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), BODY, 1531420618),
            Ok(SIG["v0=".len()..].to_owned())
        );
        // In capitals: the same signature, spelt as one.
        let shouted = format!("v0={}", SIG["v0=".len()..].to_uppercase());
        assert_eq!(
            verify(SECRET, Some(TS), Some(&shouted), BODY, 1531420618),
            Ok(SIG["v0=".len()..].to_owned())
        );
    }

    #[test]
    fn a_changed_body_secret_or_signature_and_an_old_timestamp_are_refused() {
        let now = 1531420618;
        let v = |secret: &[u8], ts, sig, body: &[u8], now| verify(secret, ts, sig, body, now);
        assert_eq!(
            v(SECRET, Some(TS), Some(SIG), b"token=x", now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v(b"another-secret", Some(TS), Some(SIG), BODY, now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v(SECRET, Some("1531420619"), Some(SIG), BODY, now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v(SECRET, Some(TS), Some("v1=00"), BODY, now),
            Err(VerifyError::Malformed(SIGNATURE))
        );
        assert_eq!(
            v(SECRET, Some(TS), None, BODY, now),
            Err(VerifyError::Missing(SIGNATURE))
        );
        assert_eq!(
            v(SECRET, Some(TS), Some(SIG), BODY, now + 301),
            Err(VerifyError::Stale(301))
        );
        assert_eq!(
            v(SECRET, Some(TS), Some(SIG), BODY, now - 301),
            Err(VerifyError::Stale(301))
        );
        assert!(v(SECRET, Some(TS), Some(SIG), BODY, now + 300).is_ok());
    }
}
