//! Who is asking: verified JWT, mTLS peer, a trusted header, or anonymous.

use std::collections::{HashMap, HashSet};

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};

use super::value::{self, ValueError};

/// How principals are derived; built once from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    pub user_type: EntityTypeName,
    pub group_type: EntityTypeName,
    pub workload_type: EntityTypeName,
    pub anonymous: EntityUid,
    /// The claim naming the principal (`sub`; `oid` where a provider gives
    /// each application its own `sub` for the same person).
    pub principal_claim: String,
    pub groups_claim: String,
    /// Claim naming the human an agent acts for: a string, or an object
    /// with `sub` (as in RFC 8693's `act`).
    pub on_behalf_of_claim: String,
    /// Lower-case header name and the entity type of its value. Only set when
    /// a trusted component in front of Envoy owns that header.
    pub trusted_header: Option<(String, EntityTypeName)>,
}

/// Where the principal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Jwt,
    Mtls,
    Header,
    Anonymous,
}

/// A resolved principal and the entities that describe it.
#[derive(Debug)]
pub struct Identity {
    pub uid: EntityUid,
    pub source: Source,
    pub entity: Entity,
    /// The human behind an agent, from a verified JWT only.
    pub on_behalf_of: Option<EntityUid>,
}

/// What decides the principal (see [`IdentitySettings::input`]).
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    Claims(&'a Map<String, Value>),
    Peer(&'a str),
    /// The trusted header's name and entity type, and its value as sent.
    Header(&'a String, &'a EntityTypeName, &'a str),
    Anonymous,
}

/// A verified token or trusted header whose content cannot identify anyone.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the verified JWT has no string `{0}` claim")]
    MissingSub(String),
    #[error("JWT claim `{0}` must be a string or a list of strings")]
    BadGroups(String),
    #[error("JWT claim `{claim}` cannot be represented in Cedar: {reason}")]
    BadClaim { claim: String, reason: String },
    /// Treating it as absent would let the human behind the agent approve
    /// the agent's own call.
    #[error(
        "JWT claim `{0}` must name one user: a non-empty string, or an object with a non-empty string `sub` and no nested `act`"
    )]
    BadOnBehalfOf(String),
    #[error("trusted identity header `{0}` is empty")]
    EmptyHeader(String),
    /// Envoy joins a repeated header's values with `,`, so a value with a
    /// comma may be two callers' claims: never pick one of them.
    #[error("trusted identity header `{0}` holds several values (sent more than once?)")]
    SeveralValues(String),
}

impl IdentitySettings {
    /// Resolves the principal, first source that applies: verified JWT
    /// claims, mTLS peer principal, the trusted header (only if configured),
    /// anonymous. Client-sent headers are never consulted otherwise.
    pub fn resolve(
        &self,
        claims: Option<&Map<String, Value>>,
        peer_principal: &str,
        headers: &HashMap<String, String>,
    ) -> Result<Identity, IdentityError> {
        self.resolve_input(self.input(claims, peer_principal, headers))
    }

    /// As [`Self::resolve`], from what [`Self::input`] picked.
    pub(super) fn resolve_input(&self, input: Input<'_>) -> Result<Identity, IdentityError> {
        let plain = |uid: EntityUid, source| Identity {
            entity: Entity::new_no_attrs(uid.clone(), HashSet::new()),
            uid,
            source,
            on_behalf_of: None,
        };
        match input {
            Input::Claims(claims) => self.resolve_claims(claims),
            Input::Peer(peer) => Ok(plain(uid(&self.workload_type, peer), Source::Mtls)),
            Input::Header(name, ty, value) => {
                let value = value.trim();
                if value.is_empty() {
                    return Err(IdentityError::EmptyHeader(name.clone()));
                }
                if value.contains(',') {
                    return Err(IdentityError::SeveralValues(name.clone()));
                }
                Ok(plain(uid(ty, value), Source::Header))
            }
            Input::Anonymous => Ok(plain(self.anonymous.clone(), Source::Anonymous)),
        }
    }

    /// What decides the principal, in [`Self::resolve`]'s order: the first
    /// of these that is there.
    pub(super) fn input<'a>(
        &'a self,
        claims: Option<&'a Map<String, Value>>,
        peer_principal: &'a str,
        headers: &'a HashMap<String, String>,
    ) -> Input<'a> {
        if let Some(c) = claims {
            return Input::Claims(c);
        }
        if !peer_principal.is_empty() {
            return Input::Peer(peer_principal);
        }
        if let Some((name, ty)) = &self.trusted_header
            && let Some(value) = headers.get(name)
        {
            return Input::Header(name, ty, value);
        }
        Input::Anonymous
    }

    fn resolve_claims(&self, claims: &Map<String, Value>) -> Result<Identity, IdentityError> {
        let Some(Value::String(sub)) = claims.get(&self.principal_claim) else {
            return Err(IdentityError::MissingSub(self.principal_claim.clone()));
        };
        let uid = uid(&self.user_type, sub);
        let mut parents = HashSet::new();
        match claims.get(&self.groups_claim) {
            None | Some(Value::Null) => {}
            Some(Value::String(g)) => {
                parents.insert(self::uid(&self.group_type, g));
            }
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(g) = item else {
                        return Err(IdentityError::BadGroups(self.groups_claim.clone()));
                    };
                    parents.insert(self::uid(&self.group_type, g));
                }
            }
            Some(_) => return Err(IdentityError::BadGroups(self.groups_claim.clone())),
        }
        let mut attrs: HashMap<String, RestrictedExpression> = HashMap::with_capacity(claims.len());
        for (name, v) in claims {
            if name == &self.groups_claim {
                continue;
            }
            match value::to_cedar(v, 1) {
                Ok(Some(expr)) => {
                    attrs.insert(name.clone(), expr);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(IdentityError::BadClaim {
                        claim: name.clone(),
                        reason: describe(&e),
                    });
                }
            }
        }
        let entity =
            Entity::new(uid.clone(), attrs, parents).map_err(|e| IdentityError::BadClaim {
                claim: "*".into(),
                reason: e.to_string(),
            })?;
        let on_behalf_of = self
            .on_behalf_of(claims)?
            .map(|h| self::uid(&self.user_type, h));
        Ok(Identity {
            uid,
            source: Source::Jwt,
            entity,
            on_behalf_of,
        })
    }
}

impl IdentitySettings {
    /// The human an agent acts for. A claim that is present must name one
    /// user (absent and `null` name nobody); a delegation chain is refused,
    /// for its links could not all be kept from approving.
    fn on_behalf_of<'c>(
        &self,
        claims: &'c Map<String, Value>,
    ) -> Result<Option<&'c str>, IdentityError> {
        let named = match claims.get(&self.on_behalf_of_claim) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(h)) => Some(h.as_str()),
            Some(Value::Object(o)) if !o.contains_key("act") => {
                o.get("sub").and_then(Value::as_str)
            }
            Some(_) => None,
        };
        match named {
            Some(h) if !h.trim().is_empty() => Ok(Some(h)),
            _ => Err(IdentityError::BadOnBehalfOf(
                self.on_behalf_of_claim.clone(),
            )),
        }
    }
}

/// Human wording of a value conversion failure, shared with body mapping.
pub fn describe(e: &ValueError) -> String {
    match e {
        ValueError::TooDeep => format!("nested deeper than {} levels", value::MAX_DEPTH),
        ValueError::Number => {
            "a number that is neither an integer nor a decimal with at most 4 fraction digits"
                .to_owned()
        }
        ValueError::DuplicateKey(k) => format!("duplicate key: {k}"),
    }
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    /// Shared with the principal memory's tests.
    pub(in crate::request) fn settings(trusted: Option<&str>) -> IdentitySettings {
        IdentitySettings {
            user_type: EntityTypeName::from_str("User").unwrap(),
            group_type: EntityTypeName::from_str("Group").unwrap(),
            workload_type: EntityTypeName::from_str("Workload").unwrap(),
            anonymous: EntityUid::from_str(r#"Anonymous::"anonymous""#).unwrap(),
            principal_claim: "sub".into(),
            groups_claim: "groups".into(),
            on_behalf_of_claim: "on_behalf_of".into(),
            trusted_header: trusted.map(|h| (h.into(), EntityTypeName::from_str("User").unwrap())),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn jwt_claims_give_user_groups_and_attributes() {
        let claims = json!({"sub": "alice", "groups": ["analysts", "data-owners"],
                            "email": "alice@example.com", "exp": 1.7e9});
        let id = settings(None)
            .resolve(claims.as_object(), "spiffe://x", &headers(&[]))
            .unwrap();
        assert_eq!(id.source, Source::Jwt);
        assert_eq!(id.uid.to_string(), r#"User::"alice""#);
        let json = id.entity.to_json_value().unwrap();
        let parents: Vec<_> = json["parents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].clone())
            .collect();
        assert!(parents.contains(&json!("analysts")) && parents.contains(&json!("data-owners")));
        assert_eq!(json["attrs"]["email"], json!("alice@example.com"));
        assert_eq!(json["attrs"]["exp"], json!(1_700_000_000));
    }

    #[test]
    fn a_single_group_string_is_one_group_and_other_shapes_are_refused() {
        let s = settings(None);
        let id = s
            .resolve(
                json!({"sub": "bob", "groups": "ops"}).as_object(),
                "",
                &headers(&[]),
            )
            .unwrap();
        assert_eq!(
            id.entity.to_json_value().unwrap()["parents"][0]["id"],
            json!("ops")
        );
        let err = s.resolve(
            json!({"sub": "bob", "groups": [1]}).as_object(),
            "",
            &headers(&[]),
        );
        assert_eq!(err.unwrap_err(), IdentityError::BadGroups("groups".into()));
        let err = s.resolve(json!({"name": "no sub"}).as_object(), "", &headers(&[]));
        assert_eq!(err.unwrap_err(), IdentityError::MissingSub("sub".into()));
    }

    #[test]
    fn an_on_behalf_of_claim_that_names_nobody_clearly_is_refused_not_ignored() {
        let s = settings(None);
        let human = |claim: Value| {
            let mut claims = json!({"sub": "agent-7"});
            claims["on_behalf_of"] = claim;
            s.resolve(claims.as_object(), "", &headers(&[]))
                .map(|id| id.on_behalf_of.map(|u| u.id().unescaped().to_owned()))
        };
        assert_eq!(human(json!("alice")), Ok(Some("alice".to_owned())));
        assert_eq!(human(json!({"sub": "alice"})), Ok(Some("alice".to_owned())));
        assert_eq!(human(Value::Null), Ok(None));
        let refused = Err(IdentityError::BadOnBehalfOf("on_behalf_of".into()));
        for malformed in [
            json!(["alice", "bob"]),
            json!({"email": "alice@example.com"}),
            json!({"sub": "alice", "act": {"sub": "bob"}}),
            json!({"sub": 7}),
            json!(""),
            json!(" "),
            json!(true),
        ] {
            assert_eq!(human(malformed.clone()), refused, "{malformed}");
        }
    }

    #[test]
    fn mtls_peer_is_a_workload_when_there_is_no_jwt() {
        let id = settings(None)
            .resolve(
                None,
                "spiffe://mesh.local/ns/jobs/sa/exporter",
                &headers(&[]),
            )
            .unwrap();
        assert_eq!(id.source, Source::Mtls);
        assert_eq!(
            id.uid.to_string(),
            r#"Workload::"spiffe://mesh.local/ns/jobs/sa/exporter""#
        );
    }

    #[test]
    fn identity_headers_are_ignored_unless_configured() {
        let h = headers(&[
            ("x-user", "admin"),
            ("x-countersign-principal", r#"User::"admin""#),
        ]);
        let id = settings(None).resolve(None, "", &h).unwrap();
        assert_eq!(id.source, Source::Anonymous);
        assert_eq!(id.uid.to_string(), r#"Anonymous::"anonymous""#);

        let id = settings(Some("x-user")).resolve(None, "", &h).unwrap();
        assert_eq!(id.source, Source::Header);
        assert_eq!(id.uid.to_string(), r#"User::"admin""#);
        let empty = settings(Some("x-user")).resolve(None, "", &headers(&[("x-user", " ")]));
        assert_eq!(
            empty.unwrap_err(),
            IdentityError::EmptyHeader("x-user".into())
        );
        // Sent twice, the header reaches us as Envoy merged it.
        let twice =
            settings(Some("x-user")).resolve(None, "", &headers(&[("x-user", "admin,bob")]));
        assert_eq!(
            twice.unwrap_err(),
            IdentityError::SeveralValues("x-user".into())
        );
    }

    #[test]
    fn a_verified_jwt_outranks_mtls_and_the_trusted_header() {
        let h = headers(&[("x-user", "mallory")]);
        let id = settings(Some("x-user"))
            .resolve(json!({"sub": "alice"}).as_object(), "spiffe://x", &h)
            .unwrap();
        assert_eq!(id.uid.to_string(), r#"User::"alice""#);
        let id = settings(Some("x-user"))
            .resolve(None, "spiffe://x", &h)
            .unwrap();
        assert_eq!(id.source, Source::Mtls);
    }
}
