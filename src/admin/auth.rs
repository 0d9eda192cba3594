//! Who is calling the admin API: the client certificate's name (checked by
//! TLS against the configured CA), or a bearer token from the configuration.
//! Never a header the caller could simply set.

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

pub use crate::approval::approvers::Approver;
use crate::config::ApproverConfig;

#[derive(Debug)]
pub struct Authenticator {
    approvers: Vec<ApproverConfig>,
}

impl Authenticator {
    pub fn new(approvers: Vec<ApproverConfig>) -> Self {
        Self { approvers }
    }

    pub fn authenticate<T>(&self, req: &Request<T>) -> Result<Approver, Status> {
        if let Some(certs) = req.peer_certs()
            && let Some(cert) = certs.first()
        {
            let name = cert_name(cert.as_ref()).ok_or_else(|| {
                Status::unauthenticated("the client certificate names nobody (no CN, no SAN)")
            })?;
            return Ok(self.approver(name));
        }
        if let Some(v) = req.metadata().get("authorization") {
            let token = v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            let hash = hex::encode(Sha256::digest(token.trim().as_bytes()));
            let found = self
                .approvers
                .iter()
                .find(|a| a.token_sha256.as_deref() == Some(hash.as_str()));
            return found
                .map(|a| Approver {
                    name: a.name.clone(),
                    groups: a.groups.clone(),
                })
                .ok_or_else(|| Status::unauthenticated("unknown bearer token"));
        }
        Err(Status::unauthenticated(
            "no client certificate and no bearer token: authenticate with --cert/--key or --token",
        ))
    }

    /// A certificate holder, with the groups the configuration gives them.
    /// An entry with `token_sha256` is a token's: a certificate that names
    /// it gets none of its groups.
    fn approver(&self, name: String) -> Approver {
        let groups = self
            .approvers
            .iter()
            .find(|a| a.name == name && a.token_sha256.is_none())
            .map(|a| a.groups.clone())
            .unwrap_or_default();
        Approver { name, groups }
    }
}

/// The subject's common name, else its first e-mail, URI or DNS SAN.
pub fn cert_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::RFC822Name(s) | GeneralName::URI(s) | GeneralName::DNSName(s) => {
            Some((*s).to_owned())
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, group: &str, token: Option<&str>) -> ApproverConfig {
        ApproverConfig {
            name: name.into(),
            groups: vec![group.into()],
            token_sha256: token.map(|t| hex::encode(Sha256::digest(t.as_bytes()))),
        }
    }

    #[test]
    fn a_certificate_gets_the_groups_of_certificate_entries_only() {
        let auth = Authenticator::new(vec![
            entry("ci-bot", "on-call", Some("s3cret")),
            entry("dora", "data-owners", None),
        ]);
        assert!(auth.approver("ci-bot".into()).groups.is_empty());
        assert_eq!(auth.approver("dora".into()).groups, ["data-owners"]);
    }
}
