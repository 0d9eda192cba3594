//! Validation of the `[authzen]` section: the AuthZEN PDP's listener, TLS,
//! callers, type mapping and limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cedar_policy::EntityTypeName;
use serde::Deserialize;

use super::ConfigError;
use super::admin::{is_sha256_hex, read_pem, tls_pair};
use super::env::Origins;
use super::schema::RawAuthzen;

/// How much of a denial's grounds its answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Explain {
    /// The reason and the deciding policies' ids (the default).
    Policies,
    /// The reason only.
    Reason,
    /// Nothing: `{"decision": false}`.
    None,
}

/// A caller of the AuthZEN API known by a bearer token's hash.
#[derive(Clone)]
pub struct AuthzenClient {
    pub name: String,
    pub token_sha256: String,
}

impl std::fmt::Debug for AuthzenClient {
    // Only the name reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzenClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The AuthZEN PDP's settings.
#[derive(Clone)]
pub struct AuthzenConfig {
    pub listen: SocketAddr,
    /// The base URL the metadata advertises, without a trailing slash;
    /// `None`: the scheme and the address the listener bound.
    pub public_url: Option<String>,
    /// Certificate and key; `None` serves plain HTTP.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// CA for client certificates (needs TLS).
    pub client_ca_pem: Option<Vec<u8>>,
    pub clients: Vec<AuthzenClient>,
    /// AuthZEN `type` -> Cedar entity type; others are taken as written.
    pub types: BTreeMap<String, EntityTypeName>,
    pub explain: Explain,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// Keys the evaluation ids of requestable denials; every PDP that
    /// takes access requests for another must share it.
    pub binding_key: Vec<u8>,
    /// How long a requestable denial may be submitted as an access request.
    pub binding_window: Duration,
}

impl std::fmt::Debug for AuthzenConfig {
    // Neither the TLS key nor the binding key reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzenConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("tls", &self.tls.is_some())
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("clients", &self.clients)
            .field("types", &self.types)
            .field("explain", &self.explain)
            .finish_non_exhaustive()
    }
}

/// Shortest binding key accepted from a file.
const MIN_KEY_BYTES: usize = 32;

pub(super) fn validate_authzen(a: &RawAuthzen, o: &Origins) -> Result<AuthzenConfig, ConfigError> {
    let listen = a.listen.parse::<SocketAddr>().map_err(|_| {
        o.invalid(
            "authzen.listen",
            &format!(
                "expected an IP address and port such as `127.0.0.1:9194`, got `{}`",
                a.listen
            ),
        )
    })?;
    let tls = tls_pair(o, "authzen", &a.tls_cert, &a.tls_key)?;
    let client_ca_pem = a
        .client_ca
        .as_deref()
        .map(|p| read_pem(o, "authzen.client_ca", p))
        .transpose()?;
    if client_ca_pem.is_some() && tls.is_none() {
        return Err(o.invalid(
            "authzen.client_ca",
            "client certificates need TLS: set authzen.tls_cert and authzen.tls_key too",
        ));
    }
    let mut clients = Vec::new();
    for (i, c) in a.clients.iter().enumerate() {
        let f = |n: &str| format!("authzen.clients[{i}].{n}");
        if c.name.trim().is_empty() {
            return Err(o.invalid(&f("name"), "expected a non-empty name"));
        }
        if !is_sha256_hex(&c.token_sha256) {
            return Err(o.invalid(
                &f("token_sha256"),
                "expected 64 hex digits: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
            ));
        }
        clients.push(AuthzenClient {
            name: c.name.clone(),
            token_sha256: c.token_sha256.to_ascii_lowercase(),
        });
    }
    if client_ca_pem.is_none() && clients.is_empty() {
        return Err(o.invalid(
            "authzen.clients",
            "expected at least one client with `token_sha256`, or `client_ca` for client certificates: otherwise nobody can call the PDP",
        ));
    }
    let mut types = BTreeMap::new();
    for (from, to) in &a.types {
        let name = to.parse::<EntityTypeName>().map_err(|_| {
            o.invalid(
                &format!("authzen.types.{from}"),
                &format!("expected a Cedar entity type name, got `{to}`"),
            )
        })?;
        types.insert(from.clone(), name);
    }
    let public_url = match &a.public_url {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            Some(u.trim_end_matches('/').to_owned())
        }
        Some(u) => {
            return Err(o.invalid(
                "authzen.public_url",
                &format!("expected an https:// URL (no query or fragment), got `{u}`"),
            ));
        }
        None => None,
    };
    if public_url.as_ref().is_some_and(|u| u.contains(['?', '#'])) {
        return Err(o.invalid(
            "authzen.public_url",
            "expected a base URL without a query or fragment",
        ));
    }
    let positive = |field: &str, v: usize| {
        if v == 0 {
            Err(o.invalid(field, "expected a number above 0"))
        } else {
            Ok(v)
        }
    };
    let binding_key = match &a.binding_key_file {
        Some(p) => {
            let key = std::fs::read(p).map_err(|e| {
                o.invalid(
                    "authzen.binding_key_file",
                    &format!("cannot read `{}`: {e}", p.display()),
                )
            })?;
            if key.len() < MIN_KEY_BYTES {
                return Err(o.invalid(
                    "authzen.binding_key_file",
                    &format!("expected at least {MIN_KEY_BYTES} bytes of secret (e.g. `head -c 32 /dev/urandom > key`)"),
                ));
            }
            key
        }
        // One sidecar's own: an access request must reach the PDP that
        // gave the denial (or every PDP must share a key file).
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    Ok(AuthzenConfig {
        listen,
        public_url,
        tls,
        client_ca_pem,
        clients,
        types,
        explain: a.explain,
        max_body_bytes: positive("authzen.max_body_bytes", a.max_body_bytes)?,
        max_batch: positive("authzen.max_batch", a.max_batch)?,
        binding_key,
        binding_window: super::validate::duration(o, "authzen.binding_window", &a.binding_window)?,
    })
}
