//! The test OpenID Provider (`common::idp`) does what the OIDC tests rely on:
//! discovery, the authorization code flow with PKCE through a loopback
//! redirect on any port, refresh, the device flow, and its test controls
//! (key rotation, JWKS fetch count, minted tokens, stop and restart).
//! Each test drives a flow by hand, as a client would, to show how.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::idp::{CLIENT_ID, Idp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn users() -> Value {
    json!({
        "dora": {"email": "dora@example.com", "groups": ["data-owners"], "password": "dora-pw"},
        "sam": {"email": "sam@example.com", "groups": []},
    })
}

/// A JWT's header and payload, unverified.
fn jwt_parts(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut decode = || {
        let bytes = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    (decode(), decode())
}

/// A loopback redirect listener for one request, as a CLI runs: answers 200
/// and hands back the request path.
fn loopback() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let body = "signed in; you can close this tab";
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        tx.send(path).unwrap();
    });
    (port, rx)
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn token(idp: &Idp, form: &[(&str, &str)]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(idp.url("/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// The refresh_token grant with the refresh token in `tokens`: new tokens.
async fn refresh(idp: &Idp, tokens: &Value) -> Value {
    let rt = tokens["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_id", CLIENT_ID),
    ];
    let (status, tokens) = token(idp, &form).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

/// The device authorization request: device_code, user_code, verification_uri...
async fn device_start(idp: &Idp) -> Value {
    let endpoint = idp.discovery().await["device_authorization_endpoint"].clone();
    let res = reqwest::Client::new()
        .post(endpoint.as_str().unwrap())
        .form(&[("client_id", CLIENT_ID), ("scope", "openid email groups")])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    res.json().await.unwrap()
}

/// One poll of the token endpoint for `device`.
async fn device_poll(idp: &Idp, device: &Value) -> (u16, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device["device_code"].as_str().unwrap()),
        ("client_id", CLIENT_ID),
    ];
    token(idp, &form).await
}

#[tokio::test]
async fn code_flow_with_pkce_then_refresh_and_key_rotation() {
    let idp = Idp::start(users());
    let discovery = idp.discovery().await;
    assert_eq!(discovery["issuer"], idp.issuer);
    assert_eq!(discovery["jwks_uri"], idp.url("/jwks"));
    assert_eq!(
        discovery["device_authorization_endpoint"],
        idp.url("/device/auth")
    );
    assert!(
        discovery["code_challenge_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("S256"))
    );

    // The redirect URI registered is http://127.0.0.1/callback; any port works.
    let (port, received) = loopback();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let (verifier, challenge) = pkce();
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile groups")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "state-1")
        .append_pair("nonce", "nonce-1")
        .finish();
    let authorize = format!(
        "{}?{query}",
        discovery["authorization_endpoint"].as_str().unwrap()
    );

    let callback = idp.authorize_as(&authorize, "dora").await;
    assert_eq!(callback.status, 200);
    assert_eq!(callback.param("state").as_deref(), Some("state-1"));
    assert_eq!(callback.param("iss").as_deref(), Some(idp.issuer.as_str()));
    let path = received.recv().unwrap();
    assert!(path.starts_with("/callback?code="), "{path}");
    let code = callback.param("code").unwrap();

    let (status, tokens) = token(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", CLIENT_ID),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let (header, claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], idp.issuer);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "dora");
    assert_eq!(claims["nonce"], "nonce-1");
    assert_eq!(claims["email"], "dora@example.com");
    assert_eq!(claims["preferred_username"], "dora");
    assert_eq!(claims["groups"], json!(["data-owners"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(
        idp.kids()
            .await
            .contains(&header["kid"].as_str().unwrap().to_string())
    );

    // A refresh reads the user again: a group added since shows up. Refresh
    // tokens rotate (public client), so each refresh uses the last one.
    let mut users = users();
    users["dora"]["groups"] = json!(["data-owners", "approvers"]);
    idp.set_users(users);
    let tokens = refresh(&idp, &tokens).await;
    let (_, claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["groups"], json!(["data-owners", "approvers"]));

    // Rotation: the new key signs, the old one stays published until dropped;
    // tokens and sessions from before still work.
    let old = header["kid"].as_str().unwrap().to_string();
    let new = idp.rotate(false).await;
    assert_ne!(new, old);
    assert_eq!(idp.kids().await, vec![new.clone(), old.clone()]);
    let tokens = refresh(&idp, &tokens).await;
    let (header, _) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(header["kid"], new.as_str());
    let newest = idp.rotate(true).await;
    assert_eq!(idp.kids().await, vec![newest]);
}

#[tokio::test]
async fn a_declined_sign_in_redirects_with_access_denied() {
    let idp = Idp::start(users());
    let (port, _received) = loopback();
    let (_, challenge) = pkce();
    let authorize = idp.url(&format!(
        "/auth?client_id={CLIENT_ID}&response_type=code&scope=openid\
         &redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fcallback\
         &code_challenge={challenge}&code_challenge_method=S256&state=s"
    ));
    let callback = idp.authorize_declined(&authorize, "dora").await;
    assert_eq!(callback.param("error").as_deref(), Some("access_denied"));
    assert_eq!(callback.param("code"), None);
}

#[tokio::test]
async fn device_flow() {
    // Short-lived ID tokens, as a test of expiry would want.
    let idp = Idp::start_with_id_token_ttl(users(), 5);
    let device = device_start(&idp).await;
    let (status, pending) = device_poll(&idp, &device).await;
    assert_eq!(status, 400);
    assert_eq!(pending["error"], "authorization_pending");
    // The code typed at verification_uri (verification_uri_complete works too).
    idp.device_as(
        device["verification_uri"].as_str().unwrap(),
        device["user_code"].as_str().unwrap(),
        "sam",
    )
    .await;
    let (status, tokens) = device_poll(&idp, &device).await;
    assert_eq!(status, 200, "{tokens}");
    let (_, claims) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "sam");
    assert_eq!(claims["email"], "sam@example.com");
    assert_eq!(claims["groups"], json!([]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        5
    );
    assert!(tokens["refresh_token"].is_string());

    let device = device_start(&idp).await;
    idp.device_declined(
        device["verification_uri_complete"].as_str().unwrap(),
        device["user_code"].as_str().unwrap(),
        "sam",
    )
    .await;
    let (status, denied) = device_poll(&idp, &device).await;
    assert_eq!(status, 400);
    assert_eq!(denied["error"], "access_denied");
}

#[tokio::test]
async fn minted_tokens_jwks_hits_and_restart() {
    let mut idp = Idp::start(users());
    let hits = idp.jwks_hits().await;
    let kids = idp.kids().await;
    assert_eq!(idp.jwks_hits().await, hits + 1);

    let expired = idp
        .mint("dora", CLIENT_ID, -60, json!({"groups": ["x"]}))
        .await;
    let (header, claims) = jwt_parts(&expired);
    assert!(kids.contains(&header["kid"].as_str().unwrap().to_string()));
    assert_eq!(claims["iss"], idp.issuer);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["groups"], json!(["x"]));
    assert!(claims["exp"].as_i64().unwrap() < claims["iat"].as_i64().unwrap());
    let unknown = idp
        .mint_with_kid("dora", CLIENT_ID, 60, json!({"exp": null}), "no-such-kid")
        .await;
    let (header, claims) = jwt_parts(&unknown);
    assert_eq!(header["kid"], "no-such-kid");
    assert!(claims.get("exp").is_none());

    // Down, then back on the same port with new keys.
    let port = idp.port;
    idp.stop();
    assert!(reqwest::get(idp.url("/jwks")).await.is_err());
    idp.restart();
    assert_eq!(idp.port, port);
    assert_ne!(idp.kids().await, kids);
    let other = Idp::start_on(common::free_port(), users());
    assert_eq!(other.discovery().await["issuer"], other.issuer);
}
