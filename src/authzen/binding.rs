//! The evaluation id of a requestable denial: the denial's expiry and a MAC,
//! under the PDP's binding key, of that expiry and the fingerprint of the
//! call it denied. An access request naming it is checked by recomputing
//! the MAC over the call it submits: nothing is stored per evaluation, and
//! an id cannot be moved to another call or given a later expiry.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every evaluation id.
const PREFIX: &str = "ev_";
/// MAC bytes kept: 128 bits.
const MAC_BYTES: usize = 16;

/// Why an evaluation id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("`denial.evaluation_id` is not an evaluation id this PDP issued")]
    Malformed,
    #[error("the requestable denial expired")]
    Expired,
}

/// Issues and checks evaluation ids.
#[derive(Clone)]
pub struct Binder {
    key: Vec<u8>,
}

impl std::fmt::Debug for Binder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Binder { key: *** }")
    }
}

impl Binder {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, fingerprint: &str, expires_at: i64) -> HmacSha256 {
        // INVARIANT: HMAC takes a key of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(&expires_at.to_be_bytes());
        mac.update(fingerprint.as_bytes());
        mac
    }

    /// The id of a denial of the call `fingerprint`, valid until
    /// `expires_at` (Unix seconds).
    pub fn issue(&self, fingerprint: &str, expires_at: i64) -> String {
        let tag = self.mac(fingerprint, expires_at).finalize().into_bytes();
        let mut raw = expires_at.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag[..MAC_BYTES]);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// The expiry an id claims, if it has the form of one; not yet
    /// whether it is genuine (see [`Self::binds`]).
    pub fn expiry(id: &str) -> Result<i64, BindingError> {
        let raw = id
            .strip_prefix(PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .filter(|raw| raw.len() == 8 + MAC_BYTES)
            .ok_or(BindingError::Malformed)?;
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&raw[..8]);
        Ok(i64::from_be_bytes(secs))
    }

    /// Whether `id` was issued for the call `fingerprint` and has not
    /// expired at `now`; the MAC is compared in constant time.
    pub fn check(&self, id: &str, fingerprint: &str, now: i64) -> Result<(), BindingError> {
        let expires_at = Self::expiry(id)?;
        if !self.binds(id, fingerprint) {
            return Err(BindingError::Malformed);
        }
        if now > expires_at {
            return Err(BindingError::Expired);
        }
        Ok(())
    }

    /// Whether `id` was issued for the call `fingerprint`.
    pub fn binds(&self, id: &str, fingerprint: &str) -> bool {
        let Ok(expires_at) = Self::expiry(id) else {
            return false;
        };
        let raw = id
            .strip_prefix(PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .unwrap_or_default();
        self.mac(fingerprint, expires_at)
            .verify_truncated_left(&raw[8..])
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_binds_its_call_key_and_expiry() {
        let b = Binder::new(vec![7; 32]);
        let id = b.issue("fp-1", 1_000);
        assert!(id.starts_with("ev_"));
        assert_eq!(b.check(&id, "fp-1", 999), Ok(()));
        assert_eq!(b.check(&id, "fp-2", 999), Err(BindingError::Malformed));
        assert_eq!(b.check(&id, "fp-1", 1_001), Err(BindingError::Expired));
        let other = Binder::new(vec![8; 32]);
        assert!(!other.binds(&id, "fp-1"));
        // A later expiry with the same MAC is not genuine.
        let raw = URL_SAFE_NO_PAD.decode(&id[3..]).unwrap();
        let mut forged = 2_000i64.to_be_bytes().to_vec();
        forged.extend_from_slice(&raw[8..]);
        let forged = format!("ev_{}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(
            b.check(&forged, "fp-1", 1_500),
            Err(BindingError::Malformed)
        );
        assert_eq!(Binder::expiry("ev_x"), Err(BindingError::Malformed));
        assert_eq!(Binder::expiry("nope"), Err(BindingError::Malformed));
    }
}
