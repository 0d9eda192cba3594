//! The admin API's sign-in with a real OpenID Provider (`oidc-provider`,
//! tests/oidc/): every kind of token it must refuse, each with its message;
//! the provider down at start and later; its keys rotated.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::idp::{Idp, admin_oidc_table};
use common::stack::{Stack, stack_with};
use common::{eventually, policy_copy, token_with};
use countersign::admin::pb::{self, approvals_client::ApprovalsClient};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const EXPORT: &str = "/v1/datasets/sales/export";
const BODY: &str = r#"{"format":"csv","rows":10}"#;
const CLIENT: &str = "countersign-cli";

fn users() -> Value {
    json!({
        "dora": {"email": "dora@example.com", "groups": ["data-owners"]},
        "alice": {"email": "alice@example.com", "groups": ["data-owners"]},
        "agent-7": {"email": "agent-7@example.com", "groups": ["data-owners"]},
        "ivan": {"email": "ivan@example.com", "groups": ["interns"]}
    })
}

async fn client(s: &Stack) -> ApprovalsClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(s.pki.ca()).unwrap()));
    let addr = s.sidecar.admin_addr.clone().unwrap();
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    ApprovalsClient::new(channel)
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// The agent's export on behalf of alice, through Envoy: its approval id.
async fn open_export(s: &Stack) -> String {
    let agent = token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}));
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(r.body["decision"], "approval_required", "{:?}", r.body);
    r.body["approval_id"].as_str().unwrap().to_owned()
}

/// A JWT with `header` and `claims`, signed with HMAC-SHA256 under `secret`
/// (or unsigned if `None`).
fn crafted(header: Value, claims: Value, secret: Option<&[u8]>) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let signature = secret.map_or(String::new(), |key| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(signing_input.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    });
    format!("{signing_input}.{signature}")
}

fn now() -> i64 {
    countersign::clock::now_secs()
}

#[tokio::test]
async fn tokens_the_provider_did_not_sign_for_this_api_are_refused_each_with_its_reason() {
    let idp = Idp::start(users());
    let other = Idp::start(users());
    let issuer = idp.issuer.clone();
    let s = stack_with(policy_copy(), None, &|t| t + &admin_oidc_table(&issuer)).await;
    let id = open_export(&s).await;
    let admin = client(&s).await;
    let approve = |token: String| {
        let mut admin = admin.clone();
        let id = id.clone();
        async move {
            admin
                .approve(bearer(
                    pb::DecideRequest {
                        id,
                        reason: "quarterly report".into(),
                    },
                    &token,
                ))
                .await
        }
    };
    let refused = |r: Result<tonic::Response<pb::Approval>, tonic::Status>| {
        let e = r.expect_err("refused");
        (e.code(), e.message().to_owned())
    };

    let jwks: Value = reqwest::get(format!("{issuer}/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let claims = json!({
        "iss": issuer, "aud": CLIENT, "sub": "dora", "email": "dora@example.com",
        "groups": ["data-owners"], "iat": now(), "exp": now() + 300
    });

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            idp.mint(
                "dora",
                CLIENT,
                -600,
                json!({"email": "dora@example.com", "email_verified": true, "groups": ["data-owners"]}),
            )
            .await,
            "the token expired at ",
        ),
        (
            "another audience",
            idp.mint(
                "dora",
                "other-app",
                300,
                json!({"email": "dora@example.com", "email_verified": true}),
            )
            .await,
            "the token is for audience `other-app`, not `countersign-cli`",
        ),
        (
            "another issuer",
            idp.mint(
                "dora",
                CLIENT,
                300,
                json!({"email": "dora@example.com", "email_verified": true, "iss": "https://evil.example"}),
            )
            .await,
            "the token was issued by `https://evil.example`, not by the configured issuer",
        ),
        (
            "another provider's key",
            other
                .mint(
                    "dora",
                    CLIENT,
                    300,
                    json!({"iss": issuer, "email": "dora@example.com", "email_verified": true, "groups": ["data-owners"]}),
                )
                .await,
            "which the identity provider does not publish",
        ),
        (
            "alg none",
            crafted(json!({"alg": "none", "kid": kid}), claims.clone(), None),
            "the token's algorithm `none` is refused",
        ),
        (
            "HS256 keyed with the provider's public key",
            crafted(
                json!({"alg": "HS256", "kid": kid}),
                claims.clone(),
                Some(jwks["keys"][0]["n"].as_str().unwrap().as_bytes()),
            ),
            "the token's algorithm `HS256` is refused",
        ),
        (
            "a valid header over another signature",
            {
                let good = idp
                    .mint("dora", CLIENT, 300, json!({"email": "dora@example.com", "email_verified": true}))
                    .await;
                let mut parts: Vec<&str> = good.split('.').collect();
                let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(serde_json::to_vec(&claims).unwrap());
                parts[1] = &forged;
                parts.join(".")
            },
            "the token's signature does not verify with the identity provider's key",
        ),
        (
            "issued to another client",
            idp.mint(
                "dora",
                CLIENT,
                300,
                json!({"email": "dora@example.com", "email_verified": true, "azp": "other-app"}),
            )
            .await,
            "the token was issued to client `other-app` (`azp`)",
        ),
        (
            "not valid yet",
            idp.mint(
                "dora",
                CLIENT,
                300,
                json!({"email": "dora@example.com", "email_verified": true, "nbf": now() + 3600}),
            )
            .await,
            "the token is not valid yet",
        ),
        (
            "an unverified e-mail",
            idp.mint(
                "dora",
                CLIENT,
                300,
                json!({"email": "dora@example.com", "email_verified": false}),
            )
            .await,
            "the token's `email` is not verified",
        ),
        (
            "no approver name",
            idp.mint("dora", CLIENT, 300, json!({"groups": ["data-owners"]}))
                .await,
            "the token has no `email` claim to name the approver by",
        ),
    ];
    for (what, token, says) in cases {
        let (code, message) = refused(approve(token).await);
        // What an approver sees, for the record (`--nocapture`).
        eprintln!("{what}: {message}");
        assert_eq!(code, tonic::Code::Unauthenticated, "{what}: {message}");
        assert!(message.contains(says), "{what}: {message}");
        assert!(!message.contains("eyJ"), "{what}: a token in {message}");
    }

    let as_user = |sub: &str, email: &str, groups: Value| {
        let (sub, email) = (sub.to_owned(), email.to_owned());
        let idp = &idp;
        async move {
            idp.mint(
                &sub,
                CLIENT,
                300,
                json!({"email": email, "email_verified": true, "groups": groups}),
            )
            .await
        }
    };
    // Signed by the provider for this API, but the wrong person; and a
    // configured approver's name, which is not the provider's to give.
    let people = [
        (
            "agent-7",
            "agent-7@example.com",
            json!(["data-owners"]),
            "asked for this call",
        ),
        (
            "alice",
            "alice@example.com",
            json!(["data-owners"]),
            "acts on behalf of `User::\"alice\"`",
        ),
        (
            "ivan",
            "ivan@example.com",
            json!(["interns"]),
            "needs an approver in `data-owners`; `ivan@example.com` is in `interns`",
        ),
        (
            "mallory",
            "sara",
            json!(["security"]),
            "`sara` is the name of an approver in [[admin.approvers]]",
        ),
    ];
    for (sub, email, groups, says) in people {
        let (code, message) = refused(approve(as_user(sub, email, groups).await).await);
        eprintln!("{sub}: {message}");
        assert_eq!(code, tonic::Code::PermissionDenied, "{sub}: {message}");
        assert!(message.contains(says), "{sub}: {message}");
    }
    // Someone the provider knows, in no approver group, may ask who they
    // are and nothing else.
    let nobody = as_user("ivan", "ivan@example.com", json!([])).await;
    let e = admin
        .clone()
        .list(bearer(pb::ListRequest::default(), &nobody))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("is in no approver group"),
        "{}",
        e.message()
    );
    let me = admin
        .clone()
        .who_am_i(bearer(pb::WhoAmIRequest {}, &nobody))
        .await
        .unwrap()
        .into_inner();
    assert!(me.groups.is_empty());

    // And the right person.
    let dora = as_user("dora", "dora@example.com", json!(["data-owners"])).await;
    let me = admin
        .clone()
        .who_am_i(bearer(pb::WhoAmIRequest {}, &dora))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (me.name.as_str(), me.method.as_str(), me.subject.as_str()),
        ("dora@example.com", "oidc", "dora")
    );
    assert_eq!(me.groups, ["data-owners"]);
    assert_eq!(me.issuer, issuer);
    let approved = approve(dora).await.unwrap().into_inner();
    assert_eq!(approved.status, "approved");
    assert_eq!(
        (
            approved.votes[0].method.as_str(),
            approved.votes[0].subject.as_str()
        ),
        ("oidc", "dora")
    );
    // Client certificates keep working beside the provider.
    let (code, out) = s.cli("sara", &["show", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dora@example.com"), "{out}");
}

#[tokio::test]
async fn a_provider_down_at_start_stops_no_check_and_its_keys_are_picked_up_when_it_comes() {
    let port = common::free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let s = stack_with(policy_copy(), None, &|t| t + &admin_oidc_table(&issuer)).await;
    // Checks are served as always.
    let agent = token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}));
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(r.body["decision"], "approval_required", "{:?}", r.body);
    let mut admin = client(&s).await;
    let someone = crafted(
        json!({"alg": "RS256", "kid": "k"}),
        json!({"iss": issuer, "aud": CLIENT, "sub": "dora", "exp": now() + 300}),
        None,
    );
    let e = admin
        .who_am_i(bearer(pb::WhoAmIRequest {}, &someone))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    assert!(
        e.message()
            .starts_with("cannot verify tokens: the identity provider's keys are not loaded")
            && e.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        e.message()
    );

    let mut idp = Idp::start_on(port, users());
    let dora = idp
        .mint(
            "dora",
            CLIENT,
            300,
            json!({"email": "dora@example.com", "email_verified": true}),
        )
        .await;
    let signed_in = eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let mut admin = admin.clone();
        let dora = dora.clone();
        async move {
            admin
                .who_am_i(bearer(pb::WhoAmIRequest {}, &dora))
                .await
                .is_ok()
        }
    })
    .await;
    assert!(signed_in, "{}", s.sidecar.log());

    // Rotation: a token under a new key prompts one refresh, however many
    // arrive at once.
    idp.rotate(true).await;
    let hits = idp.jwks_hits().await;
    let rotated = idp
        .mint(
            "dora",
            CLIENT,
            300,
            json!({"email": "dora@example.com", "email_verified": true}),
        )
        .await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut admin = admin.clone();
            let t = rotated.clone();
            tokio::spawn(async move { admin.who_am_i(bearer(pb::WhoAmIRequest {}, &t)).await })
        })
        .collect();
    let mut accepted = 0;
    for c in calls {
        if c.await.unwrap().is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 8, "{}", s.sidecar.log());
    assert_eq!(
        idp.jwks_hits().await - hits,
        1,
        "one refresh for eight tokens"
    );
    // The key rotated away no longer verifies.
    let e = admin
        .who_am_i(bearer(pb::WhoAmIRequest {}, &dora))
        .await
        .unwrap_err();
    assert!(e.message().contains("does not publish"), "{}", e.message());

    // Down later: the keys already loaded keep verifying.
    idp.stop();
    admin
        .who_am_i(bearer(pb::WhoAmIRequest {}, &rotated))
        .await
        .unwrap();
    let r = s.post(EXPORT, &agent, BODY, None).await;
    assert_eq!(r.body["decision"], "approval_required", "{:?}", r.body);
}

#[test]
fn an_unusable_issuer_is_a_configuration_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::tls::Pki::new();
    let (cert, key) = pki.server();
    let config = dir.path().join("countersign.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[admin.oidc]\nissuer = \"http://idp.example.com\"\nclient_id = \"c\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let out = common::countersign(&["serve", "--config", config.to_str().unwrap()]);
    let text = common::output_text(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("field `admin.oidc.issuer`") && text.contains("not an https URL"),
        "{text}"
    );
}
