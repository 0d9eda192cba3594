//! The identity provider's signing keys: loaded in the background (an
//! unreachable provider never delays start-up), refreshed periodically and
//! on a token signed with a key not yet seen, at most once per
//! `min_refresh` however many such tokens arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::discovery::{Discovery, DiscoveryError, get_json};
use crate::text::shortened;

/// A usable public key and the algorithm it signs with.
pub struct Key {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// The keys of one JWKS fetch, by `kid` (keys without a `kid` under "").
pub struct KeySet {
    pub keys: HashMap<String, Arc<Key>>,
}

/// How often keys are fetched again with no unknown `kid` to prompt it,
/// so a key the provider withdrew stops verifying.
const PERIODIC: Duration = Duration::from_secs(15 * 60);

pub struct KeyCache {
    http: reqwest::Client,
    issuer: String,
    min_refresh: Duration,
    current: ArcSwapOption<KeySet>,
    /// The last attempt, and why it failed (if it did).
    attempt: Mutex<(Option<Instant>, Option<String>)>,
    /// One fetch at a time; callers that waited find it done.
    fetching: tokio::sync::Mutex<()>,
    /// Calls waiting for a fetch: bounded, so tokens under made-up keys
    /// cannot pile up requests.
    waiters: tokio::sync::Semaphore,
}

/// Most calls that may wait for a key fetch at once.
const MAX_WAITERS: usize = 64;

impl KeyCache {
    pub fn new(http: reqwest::Client, issuer: String, min_refresh: Duration) -> Self {
        Self {
            http,
            issuer,
            min_refresh,
            current: ArcSwapOption::empty(),
            attempt: Mutex::new((None, None)),
            fetching: tokio::sync::Mutex::new(()),
            waiters: tokio::sync::Semaphore::new(MAX_WAITERS),
        }
    }

    /// Keeps the keys loaded: retries with backoff until the first load,
    /// then refreshes every 15 minutes. Ends with the cache.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let Some(cache) = weak.upgrade() else { return };
                // Fetched meanwhile for a token under a new key: the next
                // periodic fetch counts from then.
                if let Some(since) = cache.fetched_recently() {
                    drop(cache);
                    tokio::time::sleep(PERIODIC.saturating_sub(since)).await;
                    continue;
                }
                let wait = match cache.refresh().await {
                    Ok(()) => {
                        backoff = Duration::from_secs(1);
                        PERIODIC
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %cache.issuer, "cannot load the identity provider's keys: {e}; retrying in {}s", backoff.as_secs());
                        let w = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        w
                    }
                };
                drop(cache);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// How long ago the last fetch began, if it succeeded less than
    /// [`PERIODIC`] ago.
    fn fetched_recently(&self) -> Option<Duration> {
        let attempt = self.attempt.lock().unwrap_or_else(|p| p.into_inner());
        let since = attempt.0?.elapsed();
        (attempt.1.is_none() && self.current().is_some() && since < PERIODIC).then_some(since)
    }

    /// The keys, if loaded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Why the keys are not loaded: the last failure, or that none ended yet.
    pub fn not_loaded_because(&self) -> String {
        let attempt = self.attempt.lock().unwrap_or_else(|p| p.into_inner());
        attempt
            .1
            .clone()
            .unwrap_or_else(|| format!("still fetching them from `{}`", self.issuer))
    }

    /// Fetches again for a key not seen yet: at once if the last fetch
    /// began `min_refresh` ago, else once that much has passed, so a token
    /// under a just-rotated key waits instead of failing. Callers waiting
    /// together share one fetch. False if too many wait already.
    pub async fn refresh_for_unknown_key(&self) -> bool {
        let Ok(_waiting) = self.waiters.try_acquire() else {
            return false;
        };
        let started = self.attempt_started();
        if let Some(t) = started {
            let wait = self.min_refresh.saturating_sub(t.elapsed());
            tokio::time::sleep(wait).await;
        }
        let _one = self.fetching.lock().await;
        // Someone else fetched while this call waited.
        if self.attempt_started() == started {
            let _ = self.fetch_locked().await;
        }
        true
    }

    /// Fetches now (the refresher's path).
    async fn refresh(&self) -> Result<(), DiscoveryError> {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await
    }

    fn attempt_started(&self) -> Option<Instant> {
        self.attempt.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    async fn fetch_locked(&self) -> Result<(), DiscoveryError> {
        self.attempt.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Instant::now());
        let result = self.fetch().await;
        let mut attempt = self.attempt.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                tracing::info!(issuer = %self.issuer, keys = set.keys.len(), "identity provider keys loaded");
                self.current.store(Some(Arc::new(set)));
                attempt.1 = None;
                Ok(())
            }
            Err(e) => {
                // The last good keys stay: a provider that is down for a
                // while must not lock approvers out.
                attempt.1 = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, DiscoveryError> {
        let d = Discovery::fetch(&self.http, &self.issuer).await?;
        if let Err(why) = super::discovery::is_safe_url(&d.jwks_uri) {
            return Err(DiscoveryError::Invalid {
                url: shortened(&d.jwks_uri, 200),
                why,
            });
        }
        let raw: serde_json::Value = get_json(&self.http, &d.jwks_uri).await?;
        let Some(items) = raw.get("keys").and_then(|k| k.as_array()) else {
            return Err(DiscoveryError::Invalid {
                url: d.jwks_uri,
                why: "no `keys` array".into(),
            });
        };
        let mut keys = HashMap::new();
        for item in items {
            // Keys for encryption, or of types this build cannot verify,
            // are skipped rather than failing the whole set.
            let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
                continue;
            };
            if let Some(key) = usable(&jwk) {
                let kid = jwk.common.key_id.clone().unwrap_or_default();
                keys.insert(kid, Arc::new(key));
            }
        }
        if keys.is_empty() {
            return Err(DiscoveryError::Invalid {
                url: d.jwks_uri,
                why: "no signing key this server can verify with (RSA, EC or Ed25519)".into(),
            });
        }
        Ok(KeySet { keys })
    }
}

/// A signature key with its algorithm: the JWK's `alg`, else the usual one
/// for its type. Symmetric keys never: a provider's shared secret would
/// let whoever holds it mint approvers.
fn usable(jwk: &Jwk) -> Option<Key> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm, PublicKeyUse};
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let from_alg = jwk.common.key_algorithm.and_then(|a| match a {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::PS384 => Some(Algorithm::PS384),
        KeyAlgorithm::PS512 => Some(Algorithm::PS512),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    });
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (_, Some(_)) => from_alg?,
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
        (AlgorithmParameters::OctetKey(_), None) => return None,
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        algorithm,
        decoding,
    })
}
