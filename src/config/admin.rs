//! Validation of the `[admin]` section: the admin API's listener, TLS
//! files and approvers.

use std::net::SocketAddr;
use std::path::Path;

use super::env::Origins;
use super::schema::RawAdmin;
use super::{AdminConfig, ApproverConfig, ConfigError};

pub(super) fn validate_admin(
    a: &RawAdmin,
    o: &Origins,
) -> Result<Option<AdminConfig>, ConfigError> {
    let listen = a.listen.parse::<SocketAddr>().map_err(|_| {
        o.invalid(
            "admin.listen",
            &format!(
                "expected an IP address and port such as `127.0.0.1:9192`, got `{}`",
                a.listen
            ),
        )
    })?;
    let read = |field: &str, path: &Path| read_pem(o, field, path);
    let (cert_pem, key_pem) = match (&a.tls_cert, &a.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (read("admin.tls_cert", c)?, read("admin.tls_key", k)?),
        (Some(_), None) => {
            return Err(o.invalid(
                "admin.tls_key",
                "expected a PEM private key, since admin.tls_cert is set",
            ));
        }
        (None, Some(_)) => {
            return Err(o.invalid(
                "admin.tls_cert",
                "expected a PEM certificate, since admin.tls_key is set",
            ));
        }
    };
    let client_ca_pem = a
        .client_ca
        .as_deref()
        .map(|p| read("admin.client_ca", p))
        .transpose()?;
    let mut approvers = Vec::new();
    for (i, ap) in a.approvers.iter().enumerate() {
        let f = |n: &str| format!("admin.approvers[{i}].{n}");
        if ap.name.trim().is_empty() {
            return Err(o.invalid(&f("name"), "expected a non-empty name"));
        }
        if let Some(h) = &ap.token_sha256
            && !is_sha256_hex(h)
        {
            return Err(o.invalid(
                &f("token_sha256"),
                "expected 64 hex digits: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
            ));
        }
        approvers.push(ApproverConfig {
            name: ap.name.clone(),
            groups: ap.groups.clone(),
            token_sha256: ap.token_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
        });
    }
    if client_ca_pem.is_none() && approvers.iter().all(|a| a.token_sha256.is_none()) {
        return Err(o.invalid(
            "admin.client_ca",
            "expected a CA for client certificates, or at least one approver with `token_sha256`: otherwise nobody can authenticate",
        ));
    }
    Ok(Some(AdminConfig {
        listen,
        cert_pem,
        key_pem,
        client_ca_pem,
        approvers,
    }))
}

/// A PEM file's bytes, or why not.
pub(super) fn read_pem(o: &Origins, field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| o.invalid(field, &format!("cannot read `{}`: {e}", path.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(o.invalid(field, &format!("`{}` is not a PEM file", path.display())));
    }
    Ok(bytes)
}

/// Whether `h` is a SHA-256 in hex.
pub(super) fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}
