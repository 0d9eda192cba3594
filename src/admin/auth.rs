//! Who is calling the admin API, first that applies: the client
//! certificate's name (checked by TLS against the configured CA), a bearer
//! token from the configuration, or an ID token from the identity provider
//! of `[admin.oidc]`. Never a header the caller could simply set.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

pub use crate::approval::approvers::Approver;
use crate::approval::approvers::Method;
use crate::config::ApproverConfig;
use crate::idp::{IdpError, Verifier};

#[derive(Debug)]
pub struct Authenticator {
    approvers: Vec<ApproverConfig>,
    idp: Option<Arc<Verifier>>,
}

impl Authenticator {
    pub fn new(approvers: Vec<ApproverConfig>) -> Self {
        Self {
            approvers,
            idp: None,
        }
    }

    /// Also signs in approvers with `idp`'s tokens.
    pub fn with_identity_provider(mut self, idp: Arc<Verifier>) -> Self {
        self.idp = Some(idp);
        self
    }

    pub fn identity_provider(&self) -> Option<&Verifier> {
        self.idp.as_deref()
    }

    /// The caller, who must be an approver: signed in with the identity
    /// provider, in at least one group (anyone the provider signs a token
    /// for could otherwise read every request).
    pub async fn authenticate<T>(&self, req: &Request<T>) -> Result<Approver, Status> {
        let a = self.identify(req).await?;
        if a.signed_in.method == Method::Oidc && a.groups.is_empty() {
            return Err(Status::permission_denied(format!(
                "`{}` is in no approver group: the token's groups (after admin.oidc.group_prefix and admin.oidc.groups) name none",
                crate::text::shortened(&a.name, 80)
            )));
        }
        Ok(a)
    }

    /// The caller, whoever they are (`WhoAmI`).
    pub async fn identify<T>(&self, req: &Request<T>) -> Result<Approver, Status> {
        if let Some(certs) = req.peer_certs()
            && let Some(cert) = certs.first()
        {
            let name = cert_name(cert.as_ref()).ok_or_else(|| {
                Status::unauthenticated("the client certificate names nobody (no CN, no SAN)")
            })?;
            return Ok(self.approver(name));
        }
        if let Some(v) = req.metadata().get("authorization") {
            let token =
                v.to_str().ok().and_then(bearer).ok_or_else(|| {
                    Status::unauthenticated("authorization must be `Bearer <token>`")
                })?;
            let hash = hex::encode(Sha256::digest(token.as_bytes()));
            let found = self
                .approvers
                .iter()
                .find(|a| a.token_sha256.as_deref() == Some(hash.as_str()));
            if let Some(a) = found {
                return Ok(Approver::configured(
                    a.name.clone(),
                    a.groups.clone(),
                    Method::Token,
                ));
            }
            return match &self.idp {
                Some(idp) if Verifier::is_jwt(token) => {
                    let a = idp.verify(token).await.map_err(idp_status)?;
                    // One name, one person: a provider's user who calls
                    // themselves after a configured approver would get
                    // their Cedar permits and their vote.
                    if self.approvers.iter().any(|c| c.name == a.name) {
                        return Err(Status::permission_denied(format!(
                            "`{}` is the name of an approver in [[admin.approvers]]; a sign-in with the identity provider cannot take it",
                            crate::text::shortened(&a.name, 80)
                        )));
                    }
                    Ok(a)
                }
                Some(_) => Err(Status::unauthenticated(
                    "unknown bearer token: neither one from the configuration nor a JWT from the identity provider",
                )),
                None => Err(Status::unauthenticated("unknown bearer token")),
            };
        }
        Err(Status::unauthenticated(if self.idp.is_some() {
            "no client certificate and no bearer token: sign in with `countersign login`, or use --cert/--key or --token"
        } else {
            "no client certificate and no bearer token: authenticate with --cert/--key or --token"
        }))
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
        Approver::configured(name, groups, Method::Certificate)
    }
}

/// The token of `Bearer <token>`, the scheme in any case (RFC 9110 §11.1).
fn bearer(v: &str) -> Option<&str> {
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A refused identity-provider token as a gRPC status, here at the edge:
/// keys not loaded is the server's state (UNAVAILABLE, retry), anything
/// else the caller's token (UNAUTHENTICATED).
fn idp_status(e: IdpError) -> Status {
    match e {
        IdpError::NotReady(_) | IdpError::Busy => Status::unavailable(e.to_string()),
        _ => Status::unauthenticated(e.to_string()),
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

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
