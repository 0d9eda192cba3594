//! End to end: the real `countersign` binary behind the real Envoy running
//! `envoy/envoy.yaml`, HTTP sent through Envoy.

mod common;

use std::time::Duration;

use common::{Envoy, Sidecar, eventually, forged_token, policy_copy, token};
use serde_json::{Value, json};

struct Stack {
    envoy: Envoy,
    sidecar: Sidecar,
    http: reqwest::Client,
    policies: tempfile::TempDir,
}

async fn stack() -> Stack {
    let policies = policy_copy();
    let sidecar = Sidecar::start(policies.path(), &[]);
    let envoy = Envoy::start(sidecar.port()).await;
    Stack {
        envoy,
        sidecar,
        http: reqwest::Client::new(),
        policies,
    }
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
}

impl Stack {
    async fn send(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.envoy.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        self.send("GET", path, bearer, &[], None).await
    }
}

#[tokio::test]
async fn a_jwt_user_is_allowed_on_one_route_and_denied_on_another() {
    let s = stack().await;
    let alice = token("alice", &["analysts"]);

    let r = s.get("/v1/datasets/sales", Some(&alice)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "hello from the upstream\n");
    assert_eq!(r.headers["x-upstream-saw-principal"], r#"User::"alice""#);

    let r = s
        .send(
            "POST",
            "/v1/datasets/sales/export",
            Some(&alice),
            &[],
            Some(r#"{"format":"csv"}"#),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.headers["content-type"], "application/json");
    let body = r.json();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["reason"], "no policy permits this request");
    assert!(!body["request_id"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn anonymous_is_denied_except_where_a_policy_allows_it() {
    let s = stack().await;
    let r = s.get("/v1/datasets/sales", None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["policies"], json!(["anonymous-denied"]));

    let r = s.get("/healthz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["x-upstream-saw-principal"],
        r#"Anonymous::"anonymous""#
    );
}

#[tokio::test]
async fn spoofed_identity_headers_and_forged_tokens_do_not_set_the_principal() {
    let s = stack().await;
    let spoof = [
        ("x-countersign-principal", r#"User::"alice""#),
        ("x-authenticated-user", "alice"),
        (
            "x-forwarded-client-cert",
            "By=spiffe://x;URI=spiffe://mesh.local/ns/reports/sa/reporter",
        ),
    ];
    let r = s
        .send("GET", "/v1/datasets/sales", None, &spoof, None)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["policies"], json!(["anonymous-denied"]));

    // The client's copy of the principal header never reaches the upstream.
    let bob = token("bob", &["analysts"]);
    let r = s
        .send("GET", "/v1/datasets/sales", Some(&bob), &spoof, None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-upstream-saw-principal"], r#"User::"bob""#);

    // A token with the wrong signature is refused by Envoy before any policy.
    let r = s
        .get(
            "/v1/datasets/sales",
            Some(&forged_token("alice", &["analysts"])),
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn the_json_body_reaches_policies_and_oversized_bodies_are_refused() {
    let s = stack().await;
    let dora = token("dora", &["data-owners"]);
    let export = |b: String| {
        let s = &s;
        let dora = dora.clone();
        async move {
            s.send(
                "POST",
                "/v1/datasets/sales/export",
                Some(&dora),
                &[],
                Some(&b),
            )
            .await
        }
    };
    assert_eq!(
        export(r#"{"format":"csv","rows":10}"#.into()).await.status,
        200
    );
    let r = export(r#"{"format":"xml","rows":10}"#.into()).await;
    assert_eq!(
        (r.status, r.json()["policies"].clone()),
        (403, json!(["export-formats"]))
    );
    let r = export(r#"{"rows":5000000}"#.into()).await;
    assert_eq!(r.json()["policies"], json!(["export-row-limit"]));
    let r = export("{oops".into()).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .starts_with("bad request: request body is not valid JSON")
    );
    let r = export(format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000))).await;
    assert_eq!(r.status, 413, "Envoy refuses bodies over max_request_bytes");
}

#[tokio::test]
async fn paths_are_decided_as_envoy_normalised_them() {
    let s = stack().await;
    let alice = token("alice", &["analysts"]);
    for path in [
        "//v1/datasets/sales",
        "/v1/x/../datasets/sales",
        "/v1/./datasets//sales",
    ] {
        let r = s.get(path, Some(&alice)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // Encoded slashes would let the upstream and the policy disagree.
    assert_eq!(s.get("/v1/datasets/a%2Fb", Some(&alice)).await.status, 400);
    // Dot segments resolve to the delete route: an admin may, alice may not.
    let admin = token("ada", &["admins"]);
    for (who, expected) in [(&admin, 200), (&alice, 403)] {
        let r = s
            .send("DELETE", "/v1/x/../datasets/sales", Some(who), &[], None)
            .await;
        assert_eq!(r.status, expected, "{}", r.body);
    }
    // A matrix parameter would make the policy and the upstream disagree.
    let r = s.get("/v1/datasets/sales;x=1", Some(&alice)).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("contains `;`"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_policy_edit_changes_the_outcome_without_a_restart() {
    let s = stack().await;
    let alice = token("alice", &["analysts"]);
    let export = || {
        s.send(
            "POST",
            "/v1/datasets/sales/export",
            Some(&alice),
            &[],
            Some("{}"),
        )
    };
    assert_eq!(export().await.status, 403);

    std::fs::write(
        s.policies.path().join("alice.cedar"),
        r#"@id("alice-exports") permit (principal == User::"alice", action == Action::"export", resource is Dataset);"#,
    )
    .unwrap();
    let changed = eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { export().await.status == 200 },
    )
    .await;
    assert!(
        changed,
        "the new policy never applied:\n{}",
        s.sidecar.log()
    );
}

#[tokio::test]
async fn a_broken_policy_file_leaves_the_previous_outcome_in_place() {
    let s = stack().await;
    let alice = token("alice", &["analysts"]);
    assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await.status, 200);

    // Break the file that allows alice: a syntax error, then a type error.
    let datasets = s.policies.path().join("datasets.cedar");
    let broken = [
        (
            "permit (principal, action, resource) when {",
            "datasets.cedar:1:",
        ),
        (
            "@id(\"typo\")\npermit (principal, action == Action::\"raed\", resource);\n",
            "unrecognized action",
        ),
    ];
    for (text, logged) in broken {
        std::fs::write(&datasets, text).unwrap();
        let failed = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
            let hit = s.sidecar.log().contains(logged);
            async move { hit }
        })
        .await;
        assert!(
            failed,
            "no failed reload logging `{logged}`:\n{}",
            s.sidecar.log()
        );
        assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await.status, 200);
        assert_eq!(s.get("/v1/datasets/sales", None).await.status, 403);
    }
    assert!(
        s.sidecar.log().contains("reload_failures_total="),
        "{}",
        s.sidecar.log()
    );
    // Operators see it in the metrics, and that the set in force is valid.
    let scrape = reqwest::get(format!("http://{}/metrics", s.sidecar.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line: &str| {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert!(
        value(r#"countersign_policy_reloads_total{result="failed"}"#) >= Some(2.0),
        "{scrape}"
    );
    assert_eq!(value("countersign_policy_ready"), Some(1.0), "{scrape}");
}

#[tokio::test]
async fn countersign_down_means_503_never_allow_and_a_restart_restores_answers() {
    let s = stack().await;
    let alice = token("alice", &["analysts"]);
    assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await.status, 200);
    let Stack {
        envoy,
        sidecar,
        policies,
        ..
    } = s;
    let port = sidecar.port();
    drop(sidecar);
    let get = |bearer: Option<&str>| {
        let mut req = reqwest::Client::new().get(envoy.url("/v1/datasets/sales"));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..20 {
        assert_eq!(get(Some(&alice)).await, 503);
        assert_eq!(get(None).await, 503);
    }
    assert_eq!(
        envoy
            .stat("http.ingress.ext_authz.failure_mode_allowed")
            .await,
        0
    );
    assert!(envoy.stat("http.ingress.ext_authz.error").await >= 40);

    // Back on the same port, answers are normal again; Envoy reconnects.
    let _back = Sidecar::start_on(&format!("127.0.0.1:{port}"), policies.path(), &[]);
    let normal = eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { get(Some(&alice)).await == 200 },
    )
    .await;
    assert!(normal);
    assert_eq!(get(None).await, 403);
}

#[tokio::test]
async fn sigterm_drains_envoys_connection_and_exits_zero() {
    let s = stack().await;
    let alice = token("alice", &["analysts"]);
    assert_eq!(s.get("/v1/datasets/sales", Some(&alice)).await.status, 200);
    let Stack { envoy, sidecar, .. } = s;
    let log = sidecar.log.clone();
    let status = sidecar.terminate();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("shutting down: NOT_SERVING"), "{log}");
    // Envoy's open HTTP/2 connection was drained, not cut at the deadline.
    assert!(
        log.contains("stopped") && !log.contains("grace period over"),
        "{log}"
    );
    let r = reqwest::Client::new()
        .get(envoy.url("/v1/datasets/sales"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
}
