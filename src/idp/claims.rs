//! A verified token's claims as an approver: the name from the configured
//! claim, the groups from the groups claim (filtered by prefix or mapped),
//! and what callers' tokens would call the same person.

use serde_json::{Map, Value};

use super::IdpError;
use crate::approval::approvers::{Approver, KnownAs, Method, SignedIn};
use crate::config::OidcConfig;

pub(super) fn approver(
    cfg: &OidcConfig,
    claims: &Map<String, Value>,
) -> Result<Approver, IdpError> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let name = text(&cfg.approver_claim)
        .ok_or_else(|| IdpError::NoName(cfg.approver_claim.clone()))?
        .to_owned();
    // An address anyone could have typed names nobody: whether it names
    // the approver or is compared with the people a call names.
    let email_used = cfg.approver_claim == "email" || cfg.requester_claim == "email";
    if email_used && cfg.require_verified_email {
        match claims.get("email_verified") {
            Some(Value::Bool(true)) => {}
            Some(Value::String(s)) if s == "true" => {}
            _ => return Err(IdpError::UnverifiedEmail),
        }
    }
    let known_as = match text(&cfg.requester_claim) {
        Some(v) if v == name => KnownAs::Name,
        Some(v) => KnownAs::Also(v.to_owned()),
        None => KnownAs::Unknown {
            claim: cfg.requester_claim.clone(),
        },
    };
    Ok(Approver {
        groups: groups(cfg, claims)?,
        signed_in: SignedIn {
            method: Method::Oidc,
            issuer: text("iss").unwrap_or_default().to_owned(),
            subject: text("sub").unwrap_or_default().to_owned(),
        },
        known_as,
        name,
    })
}

/// The token's groups as approver groups: with a mapping, only mapped
/// groups; else with a prefix, only prefixed groups, without it.
fn groups(cfg: &OidcConfig, claims: &Map<String, Value>) -> Result<Vec<String>, IdpError> {
    let raw: Vec<&str> = match claims.get(&cfg.groups_claim) {
        None | Some(Value::Null) => vec![],
        Some(Value::String(g)) => vec![g.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| IdpError::BadGroups(cfg.groups_claim.clone()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(IdpError::BadGroups(cfg.groups_claim.clone())),
    };
    let mut out: Vec<String> = raw
        .into_iter()
        .filter_map(|g| {
            if !cfg.groups.is_empty() {
                return cfg.groups.get(g).cloned();
            }
            g.strip_prefix(cfg.group_prefix.as_str())
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
