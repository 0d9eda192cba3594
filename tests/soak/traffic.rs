//! The steady traffic: allowed reads, denials, malformed bodies and
//! exports, round and round; and agents' exports approved through the CLI,
//! used once and replayed.

use std::sync::Arc;
use std::time::Duration;

use crate::common::token;
use crate::kinds::Kind;
use crate::run::{Soak, export, get};
use crate::{agent, agent_named};

/// Pause between two requests of one traffic task.
const PACE: Duration = Duration::from_millis(10);

/// Allowed reads, denials, malformed bodies and exports, round and round.
pub async fn mixed(soak: Arc<Soak>, worker: usize) {
    let alice = token("alice", &["analysts"]);
    let carol = token("carol", &["marketing"]);
    let dora = token("dora", &["data-owners"]);
    // Its own agent: eight requests pending, under the per-principal cap.
    let agent = agent_named(&format!("agent-m{worker}"));
    let pending = format!("/v1/datasets/pending-{worker}/export");
    let export_path = "/v1/datasets/sales/export";
    let csv = r#"{"format":"csv","rows":10}"#;
    let mut i = 0u64;
    while soak.running() {
        i += 1;
        // A few distinct agent calls, so that open requests stay bounded.
        let agent_body = format!(r#"{{"format":"csv","rows":{}}}"#, i % 8);
        let malformed = if i.is_multiple_of(2) {
            "{oops"
        } else {
            "[1,2]"
        };
        let calls = [
            (Kind::Read, get("/v1/datasets/sales", Some(&alice))),
            (Kind::Health, get("/healthz", None)),
            (Kind::Anonymous, get("/v1/datasets/sales", None)),
            (Kind::WrongGroup, get("/v1/datasets/sales", Some(&carol))),
            (Kind::Malformed, export(export_path, &dora, malformed, None)),
            (Kind::DeniedExport, export(export_path, &alice, csv, None)),
            (Kind::OwnerExport, export(export_path, &dora, csv, None)),
            (
                Kind::AgentExport,
                export(&pending, &agent, &agent_body, None),
            ),
        ];
        for (kind, c) in calls {
            soak.call(c, |_| kind).await;
            tokio::time::sleep(PACE).await;
        }
    }
}

/// An agent's export, approved by dora through the CLI, used once, replayed.
pub async fn approval_flow(soak: Arc<Soak>, worker: usize) {
    let agent = agent();
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        let path = format!("/v1/datasets/flow-{worker}-{n}/export");
        let body = format!(r#"{{"format":"csv","rows":{n}}}"#);
        let open = soak
            .call(export(&path, &agent, &body, None), |_| Kind::Open)
            .await;
        let (Some(id), Some(tok)) = (
            open.body["approval_id"].as_str(),
            open.body["approval_token"].as_str(),
        ) else {
            // Redis is down: try again shortly.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let opened_in = open.generation;
        soak.call(
            export(&path, &agent, &body, Some(tok)),
            Kind::token_use(opened_in, false, false),
        )
        .await;
        let approved = soak.approve(id, opened_in).await.status == 0;
        // The retry, then the replay (or a second try if the first got a 503).
        let mut used = false;
        for _ in 0..2 {
            let a = soak
                .call(
                    export(&path, &agent, &body, Some(tok)),
                    Kind::token_use(opened_in, approved, used),
                )
                .await;
            used |= a.status == 200;
        }
        tokio::time::sleep(PACE).await;
    }
}
