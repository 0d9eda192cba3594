//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the
//! `webhook-signature` header is `v1,` and the base64 of
//! HMAC-SHA256(key, `{webhook-id}.{webhook-timestamp}.{body}`), one per
//! key, separated by spaces, so that during a rotation a receiver that
//! knows either the old or the new secret verifies.

use std::fmt;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How a secret is written: `whsec_` and the base64 of the key.
pub const PREFIX: &str = "whsec_";
/// The key lengths the specification allows, in bytes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Standard base64, padded or not (the reference libraries accept both).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One signing key, keyed once when the configuration is read. `Debug`
/// shows none of it.
#[derive(Clone)]
pub struct SigningKey {
    key: Vec<u8>,
    mac: Hmac<Sha256>,
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for SigningKey {}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// Why a secret cannot be used. No message quotes the secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("expected a secret starting with `{PREFIX}`")]
    Prefix,
    #[error("expected base64 after `{PREFIX}`")]
    Base64,
    #[error("expected a key of 24 to 64 bytes after `{PREFIX}`, got {0} bytes")]
    Length(usize),
}

impl SigningKey {
    /// `whsec_` and the base64 of 24 to 64 random bytes, as in
    /// `echo "whsec_$(head -c 32 /dev/urandom | base64)"`.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let key = LENIENT.decode(encoded).map_err(|_| SecretError::Base64)?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        // HMAC takes a key of any length: this never fails.
        let mac = Hmac::new_from_slice(&key).map_err(|_| SecretError::Length(key.len()))?;
        Ok(Self { key, mac })
    }

    /// A new random key (32 bytes), written as a secret.
    pub fn generate() -> String {
        format!("{PREFIX}{}", STANDARD.encode(rand::random::<[u8; 32]>()))
    }

    /// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header of `body` sent as `id` at `timestamp`
/// (Unix seconds): one signature per key, space-separated.
pub fn signature(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signs_as_the_reference_libraries_do() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(
            signature(
                std::slice::from_ref(&key),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_keys_give_two_signatures_in_order() {
        let old = SigningKey::parse(SECRET).unwrap();
        let new = SigningKey::parse(&SigningKey::generate()).unwrap();
        let both = signature(&[old.clone(), new.clone()], "1-0", 5, b"{}");
        let one = |k: &SigningKey| signature(std::slice::from_ref(k), "1-0", 5, b"{}");
        assert_eq!(both, format!("{} {}", one(&old), one(&new)));
        assert_ne!(one(&old), one(&new));
    }

    #[test]
    fn a_secret_needs_the_prefix_base64_and_24_to_64_bytes() {
        let b64 = |n: usize| STANDARD.encode(vec![7u8; n]);
        assert_eq!(
            SigningKey::parse(&b64(32)).unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(
            SigningKey::parse("whsec_not base64!").unwrap_err(),
            SecretError::Base64
        );
        assert_eq!(
            SigningKey::parse(&format!("whsec_{}", b64(16))).unwrap_err(),
            SecretError::Length(16)
        );
        assert_eq!(
            SigningKey::parse(&format!("whsec_{}", b64(65))).unwrap_err(),
            SecretError::Length(65)
        );
        for n in [24, 64] {
            assert!(SigningKey::parse(&format!("whsec_{}", b64(n))).is_ok());
        }
        // Unpadded, as some generators write it.
        let unpadded = format!("whsec_{}", b64(32).trim_end_matches('='));
        assert!(SigningKey::parse(&unpadded).is_ok());
        assert_eq!(
            format!("{:?}", SigningKey::parse(SECRET).unwrap()),
            "SigningKey(***)"
        );
    }
}
