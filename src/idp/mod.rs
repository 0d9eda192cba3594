//! Approvers signing in with their identity provider: the provider's
//! metadata and keys, and ID tokens verified into an [`Approver`] whose
//! name and groups come from the token, so an approver added in the
//! provider can approve without any sidecar changing.
//!
//! - this file: [`Verifier`] and why a token is refused ([`IdpError`]).
//! - `keys.rs`: the signing keys, loaded and refreshed in the background.
//! - `claims.rs`: a verified token's claims as an approver.
//! - `discovery.rs`: the provider's metadata, shared with `countersign login`.

mod claims;
pub mod discovery;
mod keys;

use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::approval::approvers::Approver;
use crate::config::OidcConfig;
use crate::text::shortened;
use keys::KeyCache;

/// Why a bearer token does not sign anyone in. Every message is the
/// caller's to read; none holds the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdpError {
    /// The provider's keys have not loaded yet: not the caller's fault.
    #[error("cannot verify tokens: the identity provider's keys are not loaded ({0}); retrying")]
    NotReady(String),
    #[error("the bearer token is not a JWT: {0}")]
    Malformed(String),
    #[error(
        "the token's algorithm `{0}` is refused: only the identity provider's asymmetric signatures (RS, PS, ES, EdDSA) are accepted"
    )]
    Algorithm(String),
    #[error(
        "the token is signed with key `{0}`, which the identity provider does not publish (another issuer's token, or a key rotated away)"
    )]
    UnknownKey(String),
    #[error("the token's signature does not verify with the identity provider's key `{0}`")]
    Signature(String),
    #[error("the token expired{0}: sign in again with `countersign login`")]
    Expired(String),
    #[error("the token is not valid yet (`nbf` in the future): check this machine's clock")]
    NotYetValid,
    #[error("the token was issued by `{got}`, not by the configured issuer `{want}`")]
    Issuer { got: String, want: String },
    #[error("the token is for audience {got}, not `{want}`")]
    Audience { got: String, want: String },
    #[error("the token is not an ID token (its `typ` is `{0}`): sign in with `countersign login`")]
    NotAnIdToken(String),
    #[error("the token was issued to client `{0}` (`azp`), not to this admin API's client")]
    OtherClient(String),
    #[error("too many tokens under keys not seen yet at once: retry in a few seconds")]
    Busy,
    #[error("the token has no `{0}` claim to name the approver by")]
    NoName(String),
    #[error(
        "the token's `email` is not verified (`email_verified` is not true): an unverified address names nobody"
    )]
    UnverifiedEmail,
    #[error("the token's `{0}` claim must be a string or a list of strings")]
    BadGroups(String),
    #[error("the token cannot be verified: {0}")]
    Invalid(String),
}

/// Verifies the provider's tokens into approvers.
pub struct Verifier {
    cfg: OidcConfig,
    keys: Arc<KeyCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts loading the provider's keys in the background; tokens are
    /// refused with [`IdpError::NotReady`] until they load. Needs a Tokio
    /// runtime.
    pub fn start(cfg: OidcConfig) -> Result<Self, discovery::DiscoveryError> {
        let http = discovery::client(cfg.ca_pem.as_deref())?;
        let keys = Arc::new(KeyCache::new(
            http,
            cfg.issuer.clone(),
            cfg.jwks_min_refresh,
        ));
        keys.spawn_refresher();
        Ok(Self { cfg, keys })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// Whether `token` looks like a JWT (three base64url parts), to tell
    /// it from a configured bearer token.
    pub fn is_jwt(token: &str) -> bool {
        let mut parts = token.split('.');
        let ok = |p: Option<&str>| {
            p.is_some_and(|p| {
                p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        };
        ok(parts.next()) && ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
    }

    /// The approver `token` signs in, or why not.
    pub async fn verify(&self, token: &str) -> Result<Approver, IdpError> {
        let (alg, kid) = header(token)?;
        // Another issuer's token is refused before it can prompt a key
        // fetch (its signature is checked with the rest below).
        let unverified = unverified_claims(token).unwrap_or_default();
        if let Some(iss) = unverified.get("iss").and_then(Value::as_str)
            && iss != self.cfg.issuer
        {
            return Err(IdpError::Issuer {
                got: shortened(iss, 80),
                want: self.cfg.issuer.clone(),
            });
        }
        let key = self.key(&kid).await?;
        if key.algorithm != alg {
            return Err(IdpError::Algorithm(format!("{alg:?}")));
        }
        let mut v = Validation::new(alg);
        v.leeway = self.cfg.clock_skew.as_secs();
        v.validate_nbf = true;
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &v)
            .map_err(|e| self.refusal(e.kind(), token, &kid))?;
        self.issued_to_this_client(&data.header, &data.claims)?;
        claims::approver(&self.cfg, &data.claims)
    }

    /// An ID token issued to this client: not an access token, logout or
    /// event token that shares the audience (RFC 9068 `at+jwt`), and not
    /// one authorised for another client (OIDC Core §2 `azp`).
    fn issued_to_this_client(
        &self,
        header: &jsonwebtoken::Header,
        claims: &Map<String, Value>,
    ) -> Result<(), IdpError> {
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
        {
            return Err(IdpError::NotAnIdToken(shortened(typ, 32)));
        }
        let several = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.cfg.client_id => {
                Err(IdpError::OtherClient(shortened(azp, 80)))
            }
            None if several => Err(IdpError::OtherClient("(none)".into())),
            _ => Ok(()),
        }
    }

    /// The key named `kid`; an unknown one prompts a refresh (rate-limited).
    async fn key(&self, kid: &str) -> Result<Arc<keys::Key>, IdpError> {
        let find = |keys: &Option<Arc<keys::KeySet>>| {
            keys.as_ref().and_then(|k| {
                k.keys
                    .get(kid)
                    // A set of one key without `kid`s verifies tokens without.
                    .or_else(|| {
                        (kid.is_empty() && k.keys.len() == 1).then(|| k.keys.values().next())?
                    })
                    .cloned()
            })
        };
        let current = self.keys.current();
        if let Some(k) = find(&current) {
            return Ok(k);
        }
        if !self.keys.refresh_for_unknown_key().await {
            return Err(IdpError::Busy);
        }
        let current = self.keys.current();
        match (find(&current), current) {
            (Some(k), _) => Ok(k),
            (None, None) => Err(IdpError::NotReady(self.keys.not_loaded_because())),
            (None, Some(_)) => Err(IdpError::UnknownKey(shortened(kid, 64))),
        }
    }

    /// What a failed check means, said with the claims that failed (read
    /// unverified, from the caller's own token, shortened).
    fn refusal(&self, kind: &ErrorKind, token: &str, kid: &str) -> IdpError {
        let claims = unverified_claims(token).unwrap_or_default();
        match kind {
            ErrorKind::InvalidSignature => IdpError::Signature(shortened(kid, 64)),
            ErrorKind::ExpiredSignature => IdpError::Expired(
                claims
                    .get("exp")
                    .and_then(Value::as_i64)
                    .map(|exp| format!(" at {}", crate::clock::rfc3339(exp)))
                    .unwrap_or_default(),
            ),
            ErrorKind::ImmatureSignature => IdpError::NotYetValid,
            ErrorKind::InvalidIssuer => IdpError::Issuer {
                got: claims
                    .get("iss")
                    .and_then(Value::as_str)
                    .map(|s| shortened(s, 80))
                    .unwrap_or_else(|| "(none)".into()),
                want: self.cfg.issuer.clone(),
            },
            ErrorKind::InvalidAudience => IdpError::Audience {
                got: audiences(claims.get("aud")),
                want: self.cfg.audience.clone(),
            },
            ErrorKind::InvalidAlgorithm => {
                IdpError::Algorithm(header_alg(token).unwrap_or_else(|| "(unreadable)".into()))
            }
            ErrorKind::MissingRequiredClaim(c) => {
                IdpError::Invalid(format!("it has no `{c}` claim"))
            }
            ErrorKind::InvalidClaimFormat(c) => IdpError::Invalid(format!(
                "its `{}` claim is not of the type the standard says",
                shortened(c, 40)
            )),
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => {
                IdpError::Malformed("its parts are not base64url-encoded JSON".into())
            }
            // Key and crypto failures: the provider's key is unusable.
            other => IdpError::Invalid(format!(
                "the identity provider's key `{}` cannot check it ({other:?}); tell whoever runs the sidecar",
                shortened(kid, 64)
            )),
        }
    }
}

/// The header's algorithm and key id; `none` and HMAC refused before any
/// key is looked at (an HMAC "signed" with the public key is the classic
/// forgery).
fn header(token: &str) -> Result<(Algorithm, String), IdpError> {
    if !Verifier::is_jwt(token) {
        return Err(IdpError::Malformed(
            "expected three base64url parts separated by `.`".into(),
        ));
    }
    let Some(alg) = header_alg(token) else {
        return Err(IdpError::Malformed(
            "its header is not JSON with `alg`".into(),
        ));
    };
    let algorithm = match alg.as_str() {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(IdpError::Algorithm(shortened(&alg, 32))),
    };
    let h = jsonwebtoken::decode_header(token)
        .map_err(|e| IdpError::Malformed(format!("its header cannot be read ({e})")))?;
    Ok((algorithm, h.kid.unwrap_or_default()))
}

/// `aud` as written: `a`, or `a`, `b`.
fn audiences(aud: Option<&Value>) -> String {
    let one = |v: &Value| format!("`{}`", shortened(v.as_str().unwrap_or("?"), 80));
    match aud {
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().take(5).map(one).collect::<Vec<_>>().join(", ")
        }
        Some(v @ Value::String(_)) => one(v),
        _ => "(none)".into(),
    }
}

fn part(token: &str, n: usize) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(n)?)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn header_alg(token: &str) -> Option<String> {
    part(token, 0)?.get("alg")?.as_str().map(str::to_owned)
}

/// The claims of `token`, not verified: for what a client shows or keeps
/// (`countersign login` reads `exp`), never for a decision.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    part(token, 1)
}

#[cfg(test)]
mod tests;
