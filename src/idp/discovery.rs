//! An OpenID Provider's metadata (`/.well-known/openid-configuration`),
//! read by the admin API for its keys and by `countersign login` for its
//! endpoints.

use std::time::Duration;

use serde::Deserialize;

/// What countersign reads of the provider's metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// Why the provider's metadata or keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot reach `{url}`: {why}")]
    Unreachable { url: String, why: String },
    #[error("`{url}` answered {status}")]
    Status { url: String, status: u16 },
    #[error("`{url}` is not the JSON expected: {why}")]
    Invalid { url: String, why: String },
    /// OpenID Connect Discovery 1.0 §4.3: a mismatch means another
    /// provider's metadata, whose keys would sign for someone else.
    #[error("the metadata at `{url}` names issuer `{got}`, not the configured `{want}`")]
    Issuer {
        url: String,
        got: String,
        want: String,
    },
    #[error("cannot set up HTTPS to the identity provider: {0}")]
    Client(String),
}

/// An HTTP client for the provider: short timeouts, no redirects to
/// elsewhere, and `ca_pem` trusted besides the usual roots.
pub fn client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client, DiscoveryError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| DiscoveryError::Client(e.to_string()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| DiscoveryError::Client(e.to_string()))
}

/// HTTPS, or plain HTTP to this machine only (a provider started beside
/// the sidecar): keys or tokens sent in the clear elsewhere could be
/// anyone's.
pub fn is_tls_or_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match url.scheme() {
        "https" => true,
        "http" => loopback,
        _ => false,
    }
}

impl Discovery {
    /// The metadata of `issuer`, checked to be its own.
    pub async fn fetch(http: &reqwest::Client, issuer: &str) -> Result<Self, DiscoveryError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let d: Discovery = get_json(http, &url).await?;
        if d.issuer != issuer {
            return Err(DiscoveryError::Issuer {
                url,
                got: crate::text::shortened(&d.issuer, 200),
                want: issuer.to_owned(),
            });
        }
        Ok(d)
    }
}

/// Largest metadata or key set read: a provider's are a few KiB.
const MAX_BODY: usize = 512 * 1024;

/// GETs `url` as JSON, with errors that name it.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, DiscoveryError> {
    let response = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| DiscoveryError::Unreachable {
            url: url.to_owned(),
            why: crate::text::causes(&e),
        })?;
    if !response.status().is_success() {
        return Err(DiscoveryError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let too_big = || DiscoveryError::Invalid {
        url: url.to_owned(),
        why: format!("larger than {} KiB", MAX_BODY / 1024),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_big());
    }
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| DiscoveryError::Unreachable {
            url: url.to_owned(),
            why: crate::text::causes(&e),
        })?
    {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| DiscoveryError::Invalid {
        url: url.to_owned(),
        why: crate::text::shortened(&e.to_string(), 200),
    })
}

/// [`is_tls_or_loopback`], or why not.
pub fn is_safe_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| {
        format!("`{url}` is not a URL: expected one such as `https://login.example.com`")
    })?;
    if is_tls_or_loopback(&parsed) {
        return Ok(());
    }
    Err(format!(
        "`{url}` is not an https URL: an identity provider's keys must come over TLS (plain http only to 127.0.0.1 or localhost)"
    ))
}
