//! Signed webhooks checked by a Standard Webhooks library written by others
//! (`standardwebhooks` from PyPI, in `tests/webhooks/receiver.py`): while
//! two secrets are configured, a receiver that knows only the old one and
//! a receiver that knows only the new one both verify every delivery of a
//! request and of its decision; a wrong secret, a tampered body and another
//! `webhook-id` do not verify.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::check::{check, seen};
use common::services::{Notifying, redis_store, store_config};
use common::{Redis, repo};
use countersign::config::Config;
use countersign::notifications::Channel;
use countersign::notifications::signing::SigningKey;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// `tests/webhooks/receiver.py`: verifies each POST with every secret it
/// knows, reports it as a JSON line, and answers 204 when the secret it
/// trusts verified (else 401). Killed on drop.
struct Receiver {
    child: Child,
    url: String,
    reports: mpsc::UnboundedReceiver<Value>,
}

impl Receiver {
    async fn start(secrets: &[(&str, &str)], trusts: &str) -> Receiver {
        let python = repo().join(".venv/bin/python");
        assert!(
            python.exists(),
            "run scripts/test.sh, which installs standardwebhooks into .venv"
        );
        let secrets: HashMap<&str, &str> = secrets.iter().copied().collect();
        let mut child = Command::new(python)
            .arg(repo().join("tests/webhooks/receiver.py"))
            .env("WEBHOOK_SECRETS", json!(secrets).to_string())
            .env("WEBHOOK_ACCEPT", trusts)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, mut reports) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let report = serde_json::from_str(&line).unwrap_or_else(|_| json!({"raw": line}));
                if tx.send(report).is_err() {
                    return;
                }
            }
        });
        let ready = next(&mut reports).await;
        let url = format!("http://127.0.0.1:{}", ready["port"]);
        Receiver {
            child,
            url,
            reports,
        }
    }

    async fn report(&mut self) -> Value {
        next(&mut self.reports).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("nothing from the receiver")
        .expect("the receiver exited")
}

/// Two signed webhooks with the same two secrets: one reads them from a
/// file (one a line), the other from an environment variable.
fn rotating_config(to_old: &str, to_new: &str, old: &str, new: &str) -> Config {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("hook.secret"), format!("{old}\n{new}\n")).unwrap();
    let p = d.path().join("countersign.toml");
    std::fs::write(
        &p,
        format!(
            r#"[[approvals.webhooks]]
name = "to-old"
url = "{to_old}/hook"
secret_file = "hook.secret"

[[approvals.webhooks]]
name = "to-new"
url = "{to_new}/hook"
secret_env = "HOOK_SECRETS"
"#
        ),
    )
    .unwrap();
    let env = HashMap::from([("HOOK_SECRETS".to_owned(), format!("{old} {new}"))]);
    Config::load(Some(&p), &env).unwrap()
}

#[tokio::test]
async fn every_delivery_verifies_with_the_old_or_the_new_secret_while_both_are_configured() {
    let (old, new, wrong) = (
        SigningKey::generate(),
        SigningKey::generate(),
        SigningKey::generate(),
    );
    let mut knows_old = Receiver::start(&[("old", &old), ("wrong", &wrong)], "old").await;
    let mut knows_new = Receiver::start(&[("new", &new), ("wrong", &wrong)], "new").await;
    let hooks = rotating_config(&knows_old.url, &knows_new.url, &old, &new).webhooks;

    let redis = Redis::start().await;
    let store = Arc::new(redis_store(store_config(&redis.url(), "signed:")));
    let channels = hooks
        .into_iter()
        .map(|w| Arc::new(w) as Arc<dyn Channel>)
        .collect();
    let services = Notifying::start(store, channels).await;

    // A request opens, then is approved: two events, each delivered to
    // both receivers.
    let req = check("POST", "/v1/datasets/sales/export")
        .claims(json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"}))
        .body(r#"{"format":"csv","rows":10}"#)
        .build();
    let answer = seen(&services.authz.decide(&req).await).body;
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let id = answer["approval_id"].as_str().unwrap().to_owned();
    let mut reports = vec![
        ("old", knows_old.report().await),
        ("new", knows_new.report().await),
    ];
    services.approve(&id, "quarterly report").await;
    reports.push(("old", knows_old.report().await));
    reports.push(("new", knows_new.report().await));

    let mut ids = HashMap::new();
    for (known, r) in &reports {
        assert_eq!(r["path"], "/hook", "{r}");
        assert_eq!(r["verified"][known], true, "with the {known} secret: {r}");
        assert_eq!(r["verified"]["wrong"], false, "with a wrong secret: {r}");
        assert_eq!(r["tampered_verified"], false, "{r}");
        let signatures = r["headers"]["webhook-signature"].as_str().unwrap();
        assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
        assert!(signatures.split(' ').all(|s| s.starts_with("v1,")));
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["approval"]["id"], id.as_str());
        let event = body["event"].as_str().unwrap().to_owned();
        let webhook_id = r["headers"]["webhook-id"].as_str().unwrap().to_owned();
        // One id per event, the same to every receiver.
        assert_eq!(ids.entry(event).or_insert(webhook_id.clone()), &webhook_id);
    }
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids["requested"], ids["approved"]);

    // Copies sent by hand: as received it verifies again (dropping a
    // repeat is the receiver's, by `webhook-id`); with its body changed
    // or under another id it does not.
    let (_, first) = &reports[0];
    let headers = &first["headers"];
    let body = first["body"].as_str().unwrap();
    let changed = body.replace("\"csv\"", "\"parquet\"");
    assert_ne!(changed, body);
    let mut other_id = headers.clone();
    other_id["webhook-id"] = json!(format!("{}-1", headers["webhook-id"].as_str().unwrap()));
    for (headers, body, status, verified) in [
        (headers, body, 204, true),
        (headers, &*changed, 401, false),
        (&other_id, body, 401, false),
    ] {
        let mut post = reqwest::Client::new().post(format!("{}/copy", knows_old.url));
        for (k, v) in headers.as_object().unwrap() {
            post = post.header(k, v.as_str().unwrap());
        }
        let answer = post.body(body.to_owned()).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{headers} {body}");
        let r = knows_old.report().await;
        assert_eq!(r["path"], "/copy");
        assert_eq!(r["verified"]["old"], verified, "{r}");
    }
}
