use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::*;
use crate::approval::approvers::{KnownAs, Method};

fn cfg() -> OidcConfig {
    OidcConfig {
        issuer: "https://idp.example.com".into(),
        client_id: "countersign-cli".into(),
        audience: "countersign-cli".into(),
        scopes: vec!["openid".into()],
        approver_claim: "email".into(),
        groups_claim: "groups".into(),
        group_prefix: String::new(),
        groups: BTreeMap::new(),
        requester_claim: "sub".into(),
        require_verified_email: true,
        clock_skew: Duration::from_secs(60),
        ca_pem: None,
        jwks_min_refresh: Duration::from_secs(10),
    }
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn jwt(header: Value) -> String {
    let b = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    format!("{}.{}.c2ln", b(&header), b(&json!({"sub": "x"})))
}

#[test]
fn none_and_hmac_are_refused_before_any_key_is_looked_at() {
    for alg in ["none", "HS256", "HS512", "nOnE"] {
        let e = header(&jwt(json!({"alg": alg, "kid": "k1"}))).unwrap_err();
        assert_eq!(e, IdpError::Algorithm(alg.into()), "{alg}");
        assert!(e.to_string().contains("asymmetric"), "{e}");
    }
    assert_eq!(
        header(&jwt(json!({"alg": "RS256", "kid": "k1"}))).unwrap(),
        (Algorithm::RS256, "k1".to_owned())
    );
    assert!(matches!(header("not-a-jwt"), Err(IdpError::Malformed(_))));
    assert!(!Verifier::is_jwt("a.b"));
    assert!(!Verifier::is_jwt("a.b.c.d"));
    assert!(!Verifier::is_jwt("s3cret token"));
}

#[test]
fn the_approver_is_named_by_the_configured_claim_with_the_tokens_groups() {
    let a = claims::approver(
        &cfg(),
        &claims(json!({
            "iss": "https://idp.example.com", "sub": "00u1", "email": "dora@example.com", "email_verified": true,
            "groups": ["data-owners", "everyone", "data-owners"]
        })),
    )
    .unwrap();
    assert_eq!(a.name, "dora@example.com");
    assert_eq!(a.groups, ["data-owners", "everyone"]);
    assert_eq!(a.signed_in.method, Method::Oidc);
    assert_eq!(a.signed_in.subject, "00u1");
    assert_eq!(a.known_as, KnownAs::Also("00u1".into()));
}

#[test]
fn a_prefix_or_a_mapping_keeps_only_the_groups_it_names() {
    let token = claims(
        json!({"sub": "s", "email": "e@x", "email_verified": true, "groups": ["cs-data-owners", "eng", "cs-"]}),
    );
    let mut c = cfg();
    c.group_prefix = "cs-".into();
    assert_eq!(
        claims::approver(&c, &token).unwrap().groups,
        ["data-owners"]
    );
    c.groups = BTreeMap::from([("eng".to_owned(), "on-call".to_owned())]);
    assert_eq!(claims::approver(&c, &token).unwrap().groups, ["on-call"]);
}

#[test]
fn tokens_that_cannot_name_or_place_the_approver_are_refused() {
    let c = cfg();
    assert_eq!(
        claims::approver(&c, &claims(json!({"sub": "s"}))).unwrap_err(),
        IdpError::NoName("email".into())
    );
    assert_eq!(
        claims::approver(
            &c,
            &claims(json!({"sub": "s", "email": "e@x", "email_verified": false}))
        )
        .unwrap_err(),
        IdpError::UnverifiedEmail
    );
    // Absent is not verified either (a provider that never says so needs
    // `require_verified_email = false`).
    let unsaid = claims(json!({"sub": "s", "email": "e@x"}));
    assert_eq!(
        claims::approver(&c, &unsaid).unwrap_err(),
        IdpError::UnverifiedEmail
    );
    let mut lenient = cfg();
    lenient.require_verified_email = false;
    assert!(claims::approver(&lenient, &unsaid).is_ok());
    assert_eq!(
        claims::approver(
            &c,
            &claims(json!({"sub": "s", "email": "e@x", "email_verified": "true", "groups": [1]}))
        )
        .unwrap_err(),
        IdpError::BadGroups("groups".into())
    );
}

#[test]
fn without_the_requester_claim_the_approver_cannot_be_compared() {
    let mut c = cfg();
    c.requester_claim = "employee_id".into();
    let a = claims::approver(
        &c,
        &claims(json!({"sub": "s", "email": "e@x", "email_verified": true})),
    )
    .unwrap();
    assert_eq!(
        a.known_as,
        KnownAs::Unknown {
            claim: "employee_id".into()
        }
    );
    c.requester_claim = "email".into();
    let a = claims::approver(
        &c,
        &claims(json!({"sub": "s", "email": "e@x", "email_verified": true})),
    )
    .unwrap();
    assert_eq!(a.known_as, KnownAs::Name);
}

#[tokio::test]
async fn only_an_id_token_for_this_client_signs_in() {
    let mut c = cfg();
    // Nothing listens there: the key loader fails quietly in the background.
    c.issuer = "http://127.0.0.1:9".into();
    let v = Verifier::start(c).unwrap();
    let header = |typ: Option<&str>| jsonwebtoken::Header {
        typ: typ.map(str::to_owned),
        ..jsonwebtoken::Header::new(Algorithm::RS256)
    };
    let aud = |aud: Value, azp: Option<&str>| {
        let mut c = claims(json!({"aud": aud}));
        if let Some(azp) = azp {
            c.insert("azp".into(), azp.into());
        }
        c
    };
    let one = aud(json!("countersign-cli"), None);
    assert_eq!(v.issued_to_this_client(&header(Some("JWT")), &one), Ok(()));
    assert_eq!(v.issued_to_this_client(&header(None), &one), Ok(()));
    assert_eq!(
        v.issued_to_this_client(&header(Some("at+jwt")), &one),
        Err(IdpError::NotAnIdToken("at+jwt".into()))
    );
    let shared = json!(["countersign-cli", "reports"]);
    assert_eq!(
        v.issued_to_this_client(&header(None), &aud(shared.clone(), None)),
        Err(IdpError::OtherClient("(none)".into()))
    );
    assert_eq!(
        v.issued_to_this_client(&header(None), &aud(shared.clone(), Some("reports"))),
        Err(IdpError::OtherClient("reports".into()))
    );
    assert_eq!(
        v.issued_to_this_client(&header(None), &aud(shared, Some("countersign-cli"))),
        Ok(())
    );
}
