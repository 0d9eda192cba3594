use serde_json::{Value, json};

use super::*;

// ---- Callers -------------------------------------------------------------------------

/// Every endpoint that answers callers' requests: method, path, body.
fn guarded_endpoints() -> Vec<(reqwest::Method, &'static str, Option<Value>)> {
    let permit = ask(user("alice"), action("read"), record("record-1"));
    let batch = json!({"subject": user("alice"), "action": action("read"),
                       "evaluations": [{"resource": record("record-1")}]});
    vec![
        (
            reqwest::Method::POST,
            "/access/v1/evaluation",
            Some(permit.clone()),
        ),
        (reqwest::Method::POST, "/access/v1/evaluations", Some(batch)),
        (
            reqwest::Method::POST,
            "/access/v1/requests",
            Some(json!({})),
        ),
        (
            reqwest::Method::GET,
            "/access/v1/requests/some-request",
            None,
        ),
    ]
}

#[tokio::test]
async fn callers_without_a_known_token_get_401() {
    let pdp = certification();
    let credentials: [(&str, Option<String>); 6] = [
        ("no Authorization header", None),
        ("an unknown token", Some("Bearer not-the-token".into())),
        ("an empty bearer token", Some("Bearer ".into())),
        ("the token without its scheme", Some(CERT_TOKEN.into())),
        (
            "the token as Basic credentials",
            Some(format!("Basic {CERT_TOKEN}")),
        ),
        (
            "the token with a character more",
            Some(format!("Bearer {CERT_TOKEN}x")),
        ),
    ];
    for (method, path, body) in guarded_endpoints() {
        for (what, header) in &credentials {
            let mut req = pdp.http.request(method.clone(), pdp.url(path));
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let a = pdp.send(req).await;
            let what = format!("{method} {path} with {what}");
            a.assert_refused(401, &what);
            // RFC 6750 §3, and the AuthZEN spec's "Sender Authentication
            // Failure": a 401 says which scheme to use.
            let challenge = a.www_authenticate.as_deref().unwrap_or("");
            assert!(
                challenge.to_ascii_lowercase().starts_with("bearer"),
                "{what}: no Bearer challenge\n-> {a:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    // RFC 9110 §11.1: the authentication scheme is a case-insensitive token.
    let pdp = certification();
    let permit = ask(user("alice"), action("read"), record("record-1"));
    for scheme in ["bearer", "BEARER"] {
        let a = pdp
            .send(
                pdp.http
                    .post(pdp.url("/access/v1/evaluation"))
                    .header("authorization", format!("{scheme} {CERT_TOKEN}"))
                    .header("content-type", "application/json")
                    .body(permit.to_string()),
            )
            .await;
        assert!(a.decision(&permit), "scheme `{scheme}`");
    }
}

#[tokio::test]
async fn client_certificates_from_the_configured_ca_authenticate() {
    let tls = certification_tls();
    let (pdp, pki) = (&tls.pdp, &tls.pki);
    let permit = ask(user("alice"), action("read"), record("record-1"));
    let post = |client: reqwest::Client| {
        let pdp = &pdp;
        let body = permit.to_string();
        async move {
            pdp.send(
                client
                    .post(pdp.url("/access/v1/evaluation"))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
        }
    };
    // A certificate from the CA, no token: a caller.
    let a = post(tls_client(pki, Some("agent-7"))).await;
    assert!(a.decision(&permit));
    // Neither certificate nor token: refused.
    post(tls_client(pki, None))
        .await
        .assert_refused(401, "HTTPS, no certificate, no token");
    // A certificate from another CA: refused, in the handshake or with 401.
    let stranger = Pki::new();
    let ca = std::fs::read(pki.ca()).unwrap();
    let (cert, key) = stranger.client("stranger");
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    let other = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let res = other
        .post(pdp.url("/access/v1/evaluation"))
        .header("content-type", "application/json")
        .body(permit.to_string())
        .send()
        .await;
    if let Ok(res) = res {
        Answer::read(res)
            .await
            .assert_refused(401, "a certificate from another CA");
    }
    // The PDP still answers its callers.
    assert!(pdp.decide(&permit).await);
}

// ---- Limits --------------------------------------------------------------------------

#[tokio::test]
async fn oversized_bodies_and_batches_are_refused_and_the_pdp_keeps_serving() {
    let pdp = Pdp::start("authzen-certification", CERT_TOKEN, None);
    let permit = ask(user("alice"), action("read"), record("record-1"));
    // A body over the limit: refused, whatever it holds.
    let mut big = permit.clone();
    big["context"] = json!({"padding": "x".repeat(MAX_BODY_BYTES)});
    let res = pdp
        .post_json(pdp.url("/access/v1/evaluation"))
        .body(big.to_string())
        .send()
        .await;
    match res {
        Ok(res) => Answer::read(res)
            .await
            .assert_refused(413, "a body over 1 MiB"),
        // The PDP may answer before reading the whole body and close the
        // connection under the sender; then there is nothing to read.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    assert!(pdp.decide(&permit).await, "after a body over the limit");
    // A batch at the limit is answered whole...
    let item = json!({"resource": record("record-1")});
    let batch = |n: usize| {
        json!({"subject": user("alice"), "action": action("read"),
               "evaluations": vec![item.clone(); n]})
    };
    let at_limit = batch(MAX_BATCH);
    assert_eq!(
        pdp.decide_all(&at_limit).await,
        vec![true; MAX_BATCH],
        "a batch of {MAX_BATCH}"
    );
    // ...one item more is refused.
    pdp.evaluations(&batch(MAX_BATCH + 1))
        .await
        .assert_refused(413, &format!("a batch of {}", MAX_BATCH + 1));
    assert!(pdp.decide(&permit).await, "after a batch over the limit");
}
