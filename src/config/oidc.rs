//! Validation of `[admin.oidc]`: the identity provider whose tokens
//! approvers sign in with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::admin::read_pem;
use super::env::Origins;
use super::validate::duration;
use crate::idp::discovery::is_tls_or_loopback;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    pub audience: Option<String>,
    pub scopes: Vec<String>,
    pub approver_claim: String,
    pub groups_claim: String,
    pub group_prefix: String,
    pub groups: BTreeMap<String, String>,
    pub requester_claim: String,
    pub clock_skew: String,
    pub ca: Option<PathBuf>,
    pub jwks_min_refresh: String,
}

impl Default for RawOidc {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            audience: None,
            scopes: ["openid", "email", "profile", "offline_access"]
                .map(String::from)
                .to_vec(),
            approver_claim: "email".into(),
            groups_claim: "groups".into(),
            group_prefix: String::new(),
            groups: BTreeMap::new(),
            requester_claim: "sub".into(),
            clock_skew: "60s".into(),
            ca: None,
            jwks_min_refresh: "10s".into(),
        }
    }
}

/// The identity provider approvers sign in with, and how its tokens name
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// As the provider's tokens write `iss`; discovery at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The public client `countersign login` signs in as.
    pub client_id: String,
    /// What a token's `aud` must hold (default: `client_id`, as in an ID
    /// token).
    pub audience: String,
    pub scopes: Vec<String>,
    /// The claim that names the approver (`email`, `preferred_username`,
    /// `sub`, ...).
    pub approver_claim: String,
    pub groups_claim: String,
    /// Only groups with this prefix count, without it ("": all).
    pub group_prefix: String,
    /// Identity-provider group -> approver group; when set, only these count.
    pub groups: BTreeMap<String, String>,
    /// The claim holding what callers' principals hold for the same person
    /// (the `sub` Envoy verified, the on-behalf-of claim).
    pub requester_claim: String,
    pub clock_skew: Duration,
    /// Extra CA (PEM) to trust for the provider's TLS.
    pub ca_pem: Option<Vec<u8>>,
    /// At most one key refresh per this, however many unknown `kid`s arrive.
    pub jwks_min_refresh: Duration,
}

/// Longest clock skew allowed: more would keep expired tokens usable.
const MAX_SKEW: Duration = Duration::from_secs(300);

pub(super) fn validate_oidc(r: &RawOidc, o: &Origins) -> Result<OidcConfig, ConfigError> {
    let f = |n: &str| format!("admin.oidc.{n}");
    let issuer = r.issuer.trim().to_owned();
    if issuer.is_empty() {
        return Err(o.invalid(
            &f("issuer"),
            "expected the identity provider's issuer URL, such as `https://login.example.com/realms/corp`",
        ));
    }
    if let Err(why) = issuer_is_safe(&issuer) {
        return Err(o.invalid(&f("issuer"), &why));
    }
    let client_id = r.client_id.trim().to_owned();
    if client_id.is_empty() {
        return Err(o.invalid(
            &f("client_id"),
            "expected the public client registered for `countersign login` (its ID tokens' `aud`)",
        ));
    }
    for (field, claim) in [
        ("approver_claim", &r.approver_claim),
        ("groups_claim", &r.groups_claim),
        ("requester_claim", &r.requester_claim),
    ] {
        if claim.trim().is_empty() {
            return Err(o.invalid(&f(field), "expected a claim name, such as `email` or `sub`"));
        }
    }
    if !r.scopes.iter().any(|s| s == "openid") {
        return Err(o.invalid(
            &f("scopes"),
            "expected `openid` among the scopes: without it there is no ID token",
        ));
    }
    let clock_skew = duration(o, &f("clock_skew"), &r.clock_skew)?;
    if clock_skew > MAX_SKEW {
        return Err(o.invalid(
            &f("clock_skew"),
            "expected at most 5m: a longer skew keeps expired tokens usable",
        ));
    }
    Ok(OidcConfig {
        audience: r
            .audience
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(&client_id)
            .to_owned(),
        issuer,
        client_id,
        scopes: r.scopes.clone(),
        approver_claim: r.approver_claim.trim().to_owned(),
        groups_claim: r.groups_claim.trim().to_owned(),
        group_prefix: r.group_prefix.clone(),
        groups: r.groups.clone(),
        requester_claim: r.requester_claim.trim().to_owned(),
        clock_skew,
        ca_pem: r
            .ca
            .as_deref()
            .map(|p| read_pem(o, &f("ca"), p))
            .transpose()?,
        jwks_min_refresh: duration(o, &f("jwks_min_refresh"), &r.jwks_min_refresh)?,
    })
}

/// HTTPS, or plain HTTP to this machine only: see [`is_tls_or_loopback`].
fn issuer_is_safe(issuer: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(issuer).map_err(|_| {
        format!("`{issuer}` is not a URL: expected one such as `https://login.example.com`")
    })?;
    if is_tls_or_loopback(&url) {
        return Ok(());
    }
    Err(format!(
        "`{issuer}` is not an https URL: an identity provider's keys must come over TLS (plain http only to 127.0.0.1 or localhost)"
    ))
}

#[cfg(test)]
mod tests {
    use super::issuer_is_safe;

    #[test]
    fn only_https_or_loopback_http_issuers_are_trusted() {
        assert!(issuer_is_safe("https://login.example.com/realms/corp").is_ok());
        assert!(issuer_is_safe("http://127.0.0.1:8080").is_ok());
        assert!(issuer_is_safe("http://localhost:8080").is_ok());
        assert!(issuer_is_safe("http://[::1]:8080").is_ok());
        let plain = issuer_is_safe("http://login.example.com").unwrap_err();
        assert!(plain.contains("not an https URL"), "{plain}");
        assert!(issuer_is_safe("login.example.com").is_err());
    }
}
