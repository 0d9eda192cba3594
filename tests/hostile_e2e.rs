//! Hostile input through the real Envoy: path variants, duplicate and
//! spoofed headers, bodies over the limit, bytes that are not UTF-8.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::stack::{stack, stack_with_envoy};
use common::{eventually, token, token_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends one HTTP/1.1 request as raw bytes, so that no client library
/// resolves dot segments or re-encodes the path on the way to Envoy.
async fn raw(port: u16, method: &str, target: &str, headers: &[(&str, &[u8])], body: &str) -> Raw {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nhost: api\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body.as_bytes());
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut out))
        .await
        .expect("Envoy answered within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// An agent acting for alice; agents' exports need a data owner's approval.
fn agent() -> String {
    token_with("agent-7", &["agents"], json!({"on_behalf_of": "alice"}))
}

/// How Envoy and countersign together treat a variant of a guarded path.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Seen {
    /// Decided as the canonical path, and the upstream is given that path.
    Canonical,
    /// Refused with 400, by Envoy or by countersign.
    Refused,
}

#[tokio::test]
async fn no_spelling_of_a_guarded_path_reaches_the_upstream_unguarded() {
    let s = stack().await;
    spellings_of_a_guarded_path(&s, true).await;
}

/// The shipped `envoy/envoy.yaml` without `normalize_path`, `merge_slashes`
/// and the rejection of escaped slashes: every other setting as shipped.
fn not_normalising(yaml: String) -> String {
    let mut out = yaml;
    for (from, to) in [
        ("normalize_path: true", "normalize_path: false"),
        ("merge_slashes: true", "merge_slashes: false"),
        (
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "path_with_escaped_slashes_action: KEEP_UNCHANGED",
        ),
    ] {
        assert_eq!(out.matches(from).count(), 1, "{from} in envoy.yaml");
        out = out.replace(from, to);
    }
    out
}

#[tokio::test]
async fn through_an_envoy_that_does_not_normalise_no_spelling_reaches_the_upstream_unguarded() {
    let s = stack_with_envoy(&not_normalising).await;
    spellings_of_a_guarded_path(&s, false).await;
}

/// Sends spellings of the guarded export route through `s`'s Envoy, as an
/// agent (who needs an approval) and as a data owner (who may export).
/// Through a normalising Envoy (`normalising`) each is seen as the table
/// says; through one that does not, each is either decided as the
/// canonical path or refused with 400: never let through as a path the
/// policy did not judge.
async fn spellings_of_a_guarded_path(s: &common::stack::Stack, normalising: bool) {
    // An open-by-default deployment: agents may make any call no route
    // names. A near miss of the export route must not land here.
    std::fs::write(
        s.policies.path().join("open.cedar"),
        r#"@id("agents-call-anything-else") permit (principal in Group::"agents", action == Action::"http_request", resource);"#,
    )
    .unwrap();
    let agent = format!("Bearer {}", agent());
    let dora = format!("Bearer {}", token("dora", &["data-owners"]));
    let as_ = |bearer: &str| -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("authorization", bearer.as_bytes().to_vec()),
            ("content-type", b"application/json".to_vec()),
        ]
    };
    let send = |path: &'static str, who: Vec<(&'static str, Vec<u8>)>| {
        let port = s.envoy.port;
        async move {
            let hs: Vec<(&str, &[u8])> = who.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            raw(port, "POST", path, &hs, r#"{"format":"csv","rows":1}"#).await
        }
    };
    let opened = eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { send("/v1/other", as_(&agent)).await.status == 200 },
    )
    .await;
    assert!(opened, "open.cedar never loaded:\n{}", s.sidecar.log());

    let canonical = "/v1/datasets/sales/export";
    let first = send(canonical, as_(&agent)).await;
    assert_eq!(first.json()["decision"], "approval_required", "{first:?}");
    let id = first.json()["approval_id"].clone();

    use Seen::*;
    let table = [
        ("//v1/datasets/sales/export", Canonical),
        ("/v1//datasets///sales/export", Canonical),
        ("/v1/x/../datasets/sales/export", Canonical),
        ("/v1/datasets/sales/./export", Canonical),
        ("/v1/datasets/sales/x/%2e%2e/export", Canonical),
        ("/v1/datasets/sales/x/%2E%2e/export", Canonical),
        ("/v1/datasets/%2e%2e/datasets/sales/export", Canonical),
        ("/v1/datasets/sal%65s/expor%74", Canonical),
        ("/v1/%64atasets/sales/%65xport", Canonical),
        ("/v1/datasets/sales\\export", Canonical),
        ("http://api/v1/datasets/sales/export", Canonical),
        // Dot segments with parameters, as Tomcat and Spring read them.
        ("/v1/x/..;/datasets/sales/export", Canonical),
        ("/v1/datasets/sales/x/..;y=1/export", Canonical),
        ("/v1/datasets/sales/.;/export", Canonical),
        // Double-encoded dots, slashes, backslashes and letters.
        ("/v1/datasets/sales/x/%252e%252e/export", Refused),
        ("/v1/datasets/sales/x/%252E%252E/export", Refused),
        ("/v1/datasets/sales%252Fexport", Refused),
        ("/v1/datasets/sales%252fexport", Refused),
        ("/v1/datasets/sales%255Cexport", Refused),
        ("/v1/datasets/sales/%2565xport", Refused),
        ("/v1/datasets/sales/export/", Refused),
        ("/v1/datasets/sales%2Fexport", Refused),
        ("/v1/datasets/sales%2fexport", Refused),
        ("/v1/datasets/sales%5Cexport", Refused),
        ("/v1/datasets/sales/export;x=1", Refused),
        ("/v1/datasets/sales;x=1/export", Refused),
        ("/V1/datasets/sales/export", Refused),
        ("/v1/datasets/sales/EXPORT", Refused),
        ("/v1/datasets/sales/export%00", Refused),
        ("/v1/datasets/sales/export#frag", Refused),
        ("/acme.iam.v1.roles/grantrole", Refused),
        ("/acme.iam.v1.Roles/GrantRole/", Refused),
        ("/acme.iam.v1.Roles/GrantRole;x=1", Refused),
    ];
    for (path, expected) in table {
        // The same approval request: the same action, resource and body.
        let r = send(path, as_(&agent)).await;
        let decided = (r.status, &r.json()["approval_id"]) == (403, &id);
        // A data owner may export: the upstream gets the path that was decided.
        let owner = send(path, as_(&dora)).await;
        let upstream = owner.headers.get("x-upstream-saw-path").map(String::as_str);
        let passed = (owner.status, upstream) == (200, Some(canonical));
        let seen = match (r.status, owner.status) {
            (400, 400) => Refused,
            _ if decided && passed => Canonical,
            _ => panic!(
                "{path} (normalising: {normalising}) was neither refused nor decided as {canonical}:\nagent: {r:?}\ndata owner: {owner:?}"
            ),
        };
        if normalising {
            assert_eq!(seen, expected, "{path}: {r:?} {owner:?}");
        }
    }
}

#[tokio::test]
async fn repeated_and_client_sent_identity_headers_never_name_the_principal() {
    let s = stack().await;
    let alice = format!("Bearer {}", token("alice", &["analysts"]));
    let forged = format!("Bearer {}", common::forged_token("alice", &["analysts"]));
    let unsigned = {
        // alg "none": a JWT anyone can write.
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "Bearer {}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"iss": "countersign-demo", "sub": "alice", "groups": ["analysts"]}))
        )
    };
    let read = |hs: Vec<(&'static str, Vec<u8>)>| {
        let port = s.envoy.port;
        async move {
            let hs: Vec<(&str, &[u8])> = hs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            raw(port, "GET", "/v1/datasets/sales", &hs, "").await
        }
    };
    let b = |v: &str| v.as_bytes().to_vec();

    // A valid token next to another one: Envoy refuses rather than pick one.
    for pair in [[&alice, &forged], [&forged, &alice], [&alice, &alice]] {
        let r = read(vec![
            ("authorization", b(pair[0])),
            ("authorization", b(pair[1])),
        ])
        .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    // Unverifiable tokens are refused by Envoy; a token in another header,
    // identity headers and a client certificate header are ignored.
    assert_eq!(
        read(vec![("authorization", b(&unsigned))]).await.status,
        401
    );
    let spoofed = read(vec![
        ("x-jwt", b(alice.trim_start_matches("Bearer "))),
        ("x-countersign-principal", b(r#"User::"alice""#)),
        (
            "x-forwarded-client-cert",
            b("By=spiffe://x;URI=spiffe://mesh.local/ns/reports/sa/reporter"),
        ),
        ("x-forwarded-user", b("alice")),
    ])
    .await;
    assert_eq!(
        (spoofed.status, spoofed.json()["policies"].clone()),
        (403, json!(["anonymous-denied"])),
        "{spoofed:?}"
    );
    // Alice's call: the upstream sees countersign's principal only, even
    // when the client sent its own copy twice.
    let r = read(vec![
        ("authorization", b(&alice)),
        ("x-countersign-principal", b(r#"User::"admin""#)),
        ("x-countersign-principal", b(r#"User::"root""#)),
    ])
    .await;
    assert_eq!(
        (
            r.status,
            r.headers
                .get("x-upstream-saw-principal")
                .map(String::as_str)
        ),
        (200, Some(r#"User::"alice""#)),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_repeated_approval_token_is_no_token() {
    let s = stack().await;
    let agent = agent();
    let body = r#"{"format":"csv","rows":10}"#;
    let (_, tok) = s
        .open_and_approve("/v1/datasets/sales/export", &agent, body, "q3")
        .await;
    let bearer = format!("Bearer {agent}");
    let hs: Vec<(&str, &[u8])> = vec![
        ("authorization", bearer.as_bytes()),
        ("content-type", b"application/json"),
        ("x-countersign-approval", tok.as_bytes()),
        ("x-countersign-approval", tok.as_bytes()),
    ];
    // Envoy merges the two into `T,T`, which is no token.
    let r = raw(s.envoy.port, "POST", "/v1/datasets/sales/export", &hs, body).await;
    assert_eq!(r.status, 403, "{r:?}");
    // The approval is still there for the call that presents it once.
    let r = s
        .post("/v1/datasets/sales/export", &agent, body, Some(&tok))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn headers_envoy_refuses_and_bytes_that_are_not_utf8_get_a_definite_answer() {
    let s = stack().await;
    let alice = format!("Bearer {}", token("alice", &["analysts"]));
    let get = |mut hs: Vec<(&'static str, &'static [u8])>| {
        let bearer: &'static [u8] = Box::leak(alice.clone().into_bytes().into_boxed_slice());
        hs.push(("authorization", bearer));
        let port = s.envoy.port;
        async move { raw(port, "GET", "/v1/datasets/sales", &hs, "").await }
    };
    // Envoy's own limits (60 KiB of headers, 100 headers) answer 431
    // before any check.
    let huge: &'static [u8] = Box::leak(vec![b'a'; 70_000].into_boxed_slice());
    assert_eq!(get(vec![("x-big", huge)]).await.status, 431);
    let many: Vec<(&'static str, &'static [u8])> = (0..150)
        .map(|i| (&*Box::leak(format!("x-h{i}").into_boxed_str()), &b"v"[..]))
        .collect();
    assert_eq!(get(many).await.status, 431);
    // Invalid UTF-8 in a header countersign reads (user-agent is in the
    // context allow-list) or ignores: decided, not failed.
    for hs in [
        vec![("user-agent", &b"caf\xe9 \xff"[..])],
        vec![("x-thing", &b"\xc3\x28"[..])],
    ] {
        let r = get(hs).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = raw(
        s.envoy.port,
        "GET",
        "/v1/datasets/sales",
        &[("x-thing", b"\xc3\x28")],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(!s.sidecar.log().contains("panicked"), "{}", s.sidecar.log());
}

#[tokio::test]
async fn a_body_is_read_only_as_json_and_its_content_type_is_bound_into_the_approval() {
    let s = stack().await;
    let agent = agent();
    let body = r#"{"format":"csv","rows":10}"#;
    let send = |path: &'static str, bearer: &str, headers: Vec<(&'static str, String)>| {
        let port = s.envoy.port;
        let bearer = format!("Bearer {bearer}");
        async move {
            let mut hs: Vec<(&str, &[u8])> = vec![("authorization", bearer.as_bytes())];
            hs.extend(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
            raw(port, "POST", path, &hs, body).await
        }
    };
    let export = "/v1/datasets/sales/export";
    let deployer = token("dan", &["deployers"]);
    let h = |k: &'static str, v: &str| (k, v.to_owned());
    // A body route, and a guarded route that does not read the body: a
    // body sent as another type, or compressed, is refused with a reason.
    for (path, who) in [(export, &agent), ("/v1/secrets/db/rotate", &deployer)] {
        for (headers, why) in [
            (vec![], "content-type must be `application/json`"),
            (
                vec![h("content-type", "text/plain")],
                "content-type must be",
            ),
            (
                vec![h("content-type", "application/x-www-form-urlencoded")],
                "content-type must be",
            ),
            (
                vec![
                    h("content-type", "application/json"),
                    h("content-encoding", "gzip"),
                ],
                "cannot read a compressed body",
            ),
        ] {
            let r = send(path, who, headers.clone()).await;
            assert_eq!(r.status, 400, "{path} {headers:?}: {r:?}");
            let reason = r.json()["reason"].as_str().unwrap_or_default().to_owned();
            assert!(reason.contains(why), "{path} {headers:?}: {reason}");
        }
    }
    // An approval binds the content type it was given for.
    let r = send(export, &agent, vec![h("content-type", "application/json")]).await;
    assert_eq!(r.json()["decision"], "approval_required", "{r:?}");
    let id = r.json()["approval_id"].as_str().unwrap().to_owned();
    let tok = r.json()["approval_token"].as_str().unwrap().to_owned();
    let (code, out) = s.cli("dora", &["approve", &id, "--reason", "q3"]);
    assert_eq!(code, 0, "{out}");
    let with_token = |ct: &str| vec![h("content-type", ct), h("x-countersign-approval", &tok)];
    let r = send(
        export,
        &agent,
        with_token("application/json; charset=utf-8"),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    let reason = r.json()["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("different request"), "{reason}");
    let r = send(export, &agent, with_token("application/json")).await;
    assert_eq!(r.status, 200, "{r:?}");
}
