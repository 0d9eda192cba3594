//! Validation of the `[admin]` section: the admin API's listener, TLS
//! files and approvers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    let Some((cert_pem, key_pem)) = tls_pair(o, "admin", &a.tls_cert, &a.tls_key)? else {
        return Ok(None);
    };
    let client_ca_pem = a
        .client_ca
        .as_deref()
        .map(|p| read_pem(o, "admin.client_ca", p))
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
    let oidc = a
        .oidc
        .as_ref()
        .map(|r| super::oidc::validate_oidc(r, o))
        .transpose()?;
    if client_ca_pem.is_none()
        && oidc.is_none()
        && approvers.iter().all(|a| a.token_sha256.is_none())
    {
        return Err(o.invalid(
            "admin.client_ca",
            "expected a CA for client certificates, an identity provider in [admin.oidc], or at least one approver with `token_sha256`: otherwise nobody can authenticate",
        ));
    }
    Ok(Some(AdminConfig {
        listen,
        cert_pem,
        key_pem,
        client_ca_pem,
        approvers,
        oidc,
    }))
}

/// A certificate and its private key, as PEM.
pub(super) type Pem = (Vec<u8>, Vec<u8>);

/// The PEM certificate and key of `section` (`tls_cert`, `tls_key`):
/// both or neither.
pub(super) fn tls_pair(
    o: &Origins,
    section: &str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<Option<Pem>, ConfigError> {
    let field = |name: &str| format!("{section}.{name}");
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => Ok(Some((
            read_pem(o, &field("tls_cert"), c)?,
            read_pem(o, &field("tls_key"), k)?,
        ))),
        (Some(_), None) => Err(o.invalid(
            &field("tls_key"),
            &format!("expected a PEM private key, since {section}.tls_cert is set"),
        )),
        (None, Some(_)) => Err(o.invalid(
            &field("tls_cert"),
            &format!("expected a PEM certificate, since {section}.tls_key is set"),
        )),
    }
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
