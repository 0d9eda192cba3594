//! The gate and the lifecycle on the memory store, with the example
//! policies: the whole approval story without a network or a transport.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::*;
use crate::approval::approvers::{Approver, Approvers, KnownAs, Method, SignedIn};
use crate::approval::lifecycle::RuleError;
use crate::approval::store::AuditCursor;
use crate::approval::{ApprovalStore, MemoryStore, Ruling, Status};
use crate::audit::EventSink;
use crate::config::Config;
use crate::request::{HttpRequest, Mapper};

pub(super) struct World {
    pub gate: Gate,
    pub approvals: Lifecycle,
    pub store: Arc<MemoryStore>,
    pub mapper: Mapper,
    pub policies: Arc<PolicyStore>,
}

pub(super) fn world() -> World {
    let config = Config::load(None, &HashMap::new()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    world_in(config, &dir, Arc::new(MemoryStore::new()))
}

/// The gate with `config`, the policies in `dir`, and `store`.
pub(super) fn world_in(config: Config, dir: &Path, store: Arc<MemoryStore>) -> World {
    let policies = Arc::new(PolicyStore::open(dir, config.mapper.probes().unwrap()).unwrap());
    let rules = Approvers::from_config(policies.clone(), &config);
    let approvals = Lifecycle::new(store.clone(), EventSink::default(), rules);
    let gate = Gate::new(
        policies.clone(),
        approvals.clone(),
        GateSettings::from_config(&config),
    );
    World {
        gate,
        approvals,
        store,
        mapper: config.mapper,
        policies,
    }
}

fn status_of(o: &Outcome) -> u16 {
    match o {
        Outcome::Allow { .. } => 200,
        _ => 403,
    }
}

pub(super) const EXPORT: &str = "/v1/datasets/sales/export";
pub(super) const BODY: &[u8] = br#"{"format":"csv","rows":10}"#;

impl World {
    /// Decides `POST path` with [`BODY`] for the JWT `claims`, presenting
    /// `token` if given.
    async fn decide(&self, path: &str, claims: Value, token: Option<&str>) -> Outcome {
        self.decide_as("POST", path, claims, token).await
    }

    pub(super) async fn decide_as(
        &self,
        method: &str,
        path: &str,
        claims: Value,
        token: Option<&str>,
    ) -> Outcome {
        self.decide_body(method, path, claims, token, BODY).await
    }

    /// `body` to the MCP endpoint, bound as the front door binds it.
    async fn decide_mcp(&self, claims: Value, body: &str) -> Outcome {
        self.decide_body("POST", "/mcp", claims, None, body.as_bytes())
            .await
    }

    pub(super) async fn decide_body(
        &self,
        method: &str,
        path: &str,
        claims: Value,
        token: Option<&str>,
        body: &[u8],
    ) -> Outcome {
        let headers = HashMap::from([("content-type".to_owned(), "application/json".to_owned())]);
        let claims: Map<String, Value> = claims.as_object().unwrap().clone();
        let req = HttpRequest {
            method,
            path,
            host: "api",
            scheme: "http",
            headers: &headers,
            body,
            source_address: "10.0.0.7",
            source_principal: "",
            jwt_claims: Some(&claims),
            request_id: "req-1",
            time: None,
        };
        let mapped = self.mapper.map(&req).unwrap();
        let bound = mapped.mcp.as_ref().map_or(body, |m| &m.bound[..]);
        let call = Call {
            method,
            host: "api",
            scheme: "http",
            path,
            body: bound,
            content_type: "application/json",
            content_encoding: "",
            body_state: BodyState::Complete,
            source_address: "10.0.0.7",
            request_id: "req-1",
            token,
            status_of,
        };
        let access = AccessRequest {
            call,
            arrival: Arrival::now(None),
            mapped: &mapped,
            answer_by: None,
            approach: crate::gate::Approach::Open,
        };
        self.gate.decide(access).await
    }

    pub(super) async fn audit_events(&self) -> Vec<String> {
        let entries = self
            .store
            .audit_range(&mut AuditCursor::from("-"), "+", 100)
            .await
            .unwrap();
        entries
            .iter()
            .map(|e| {
                let get = |k: &str| {
                    e.fields
                        .iter()
                        .find(|(f, _)| f == k)
                        .map(|(_, v)| v.clone())
                };
                match get("event").as_deref() {
                    Some("decision") => format!("decision:{}", get("decision").unwrap_or_default()),
                    Some(other) => other.to_owned(),
                    None => String::new(),
                }
            })
            .collect()
    }
}

pub(super) fn agent() -> Value {
    json!({"sub": "agent-7", "groups": ["agents"], "on_behalf_of": "alice"})
}

pub(super) fn approver(name: &str, groups: &[&str]) -> Approver {
    Approver::configured(
        name.into(),
        groups.iter().map(|g| (*g).to_owned()).collect(),
        crate::approval::approvers::Method::Certificate,
    )
}

#[tokio::test]
async fn an_export_is_held_for_a_data_owner_then_allowed_once_with_its_token() {
    let w = world();
    let Outcome::ApprovalRequired {
        approval, token, ..
    } = w.decide(EXPORT, agent(), None).await
    else {
        panic!("an agent's export needs an approval")
    };
    assert_eq!(approval.status, Status::Pending);
    assert_eq!(approval.info.parameters["body.format"], "csv");
    let token = token.expect("the opening answer carries the token");

    // Separation of duties and approver groups, then the reason rule.
    let refused = w
        .approvals
        .rule(
            &approver("alice", &["data-owners"]),
            &approval.id,
            Ruling::Approve,
            "ok",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, RuleError::NotPermitted(ref why) if why.contains("on behalf of")),
        "{refused:?}"
    );
    let refused = w
        .approvals
        .rule(
            &approver("ivan", &["interns"]),
            &approval.id,
            Ruling::Approve,
            "ok",
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, RuleError::NotPermitted(_)), "{refused:?}");
    let dora = approver("dora", &["data-owners"]);
    let missing = w
        .approvals
        .rule(&dora, &approval.id, Ruling::Approve, " ")
        .await;
    assert_eq!(
        missing.unwrap_err(),
        RuleError::ReasonRequired(approval.id.clone())
    );
    let approved = w
        .approvals
        .rule(&dora, &approval.id, Ruling::Approve, "quarterly report")
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);

    let used = w.decide(EXPORT, agent(), Some(&token)).await;
    assert!(matches!(used, Outcome::Allow { .. }), "{used:?}");
    let replay = w.decide(EXPORT, agent(), Some(&token)).await;
    assert!(
        matches!(&replay, Outcome::Deny { reason, .. } if reason.contains("consumed")),
        "{replay:?}"
    );
    assert_eq!(
        w.audit_events().await,
        [
            "requested",
            "decision:approval_required",
            "approved",
            "consumed",
            "decision:allow",
            "decision:deny"
        ]
    );
}

#[tokio::test]
async fn a_body_key_that_folds_to_a_declared_attribute_is_refused_not_ignored() {
    let w = world();
    let dora = || json!({"sub": "dora", "groups": ["data-owners"]});
    let export = |body: &'static str| w.decide_body("POST", EXPORT, dora(), None, body.as_bytes());
    let over = export(r#"{"format":"csv","rows":2000000}"#).await;
    assert!(matches!(over, Outcome::Deny { .. }), "{over:?}");
    // Go's encoding/json reads each as `rows`; Cedar would see no `rows`.
    for body in [
        r#"{"format":"csv","ROWS":2000000}"#,
        "{\"format\":\"csv\",\"Row\u{17f}\":2000000}",
    ] {
        let outcome = export(body).await;
        assert!(
            matches!(&outcome, Outcome::Invalid { reason } if reason.contains("`rows`")),
            "{body}: {outcome:?}"
        );
    }
    let fine = export(r#"{"format":"csv","rows":10,"note":"q3"}"#).await;
    assert!(matches!(fine, Outcome::Allow { .. }), "{fine:?}");
}

#[tokio::test]
async fn a_token_for_another_call_is_refused_and_an_unguarded_call_leaves_no_trail() {
    let w = world();
    let Outcome::ApprovalRequired { token, .. } = w.decide(EXPORT, agent(), None).await else {
        panic!("approval required")
    };
    let other = w
        .decide("/v1/datasets/hr/export", agent(), token.as_deref())
        .await;
    assert!(
        matches!(&other, Outcome::Deny { reason, .. } if reason.contains("different request")),
        "{other:?}"
    );
    let before = w.audit_events().await.len();
    let read = json!({"sub": "alice", "groups": ["analysts"]});
    let outcome = w.decide_as("GET", "/v1/datasets/sales", read, None).await;
    assert!(matches!(outcome, Outcome::Allow { .. }), "{outcome:?}");
    assert_eq!(
        w.audit_events().await.len(),
        before,
        "unguarded: no audit entry"
    );
}

fn tool_call(id: u32, tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
    .to_string()
}

#[tokio::test]
async fn an_approved_mcp_tool_call_runs_once_for_the_same_agent_and_arguments() {
    let w = world();
    let args = json!({"dataset": "sales", "format": "csv", "destination": "s3://reports"});
    let export = |id| tool_call(id, "export_dataset", args.clone());
    let Outcome::ApprovalRequired {
        approval, token, ..
    } = w.decide_mcp(agent(), &export(3)).await
    else {
        panic!("an agent's MCP export needs an approval")
    };
    assert_eq!(token, None, "an MCP client could not present it");
    assert_eq!(approval.info.action, r#"Action::"export_dataset""#);
    assert_eq!(approval.info.parameters["mcp.tool"], "export_dataset");
    assert_eq!(
        approval.info.parameters["arguments.destination"],
        "s3://reports"
    );
    // The identical call before approval finds the same request.
    let Outcome::ApprovalRequired {
        approval: again, ..
    } = w.decide_mcp(agent(), &export(4)).await
    else {
        panic!("still pending")
    };
    assert_eq!(again.id, approval.id);
    let dora = approver("dora", &["data-owners"]);
    w.approvals
        .rule(&dora, &approval.id, Ruling::Approve, "quarterly")
        .await
        .unwrap();

    // Another agent, and other arguments, are other calls.
    let other_agent = json!({"sub": "agent-8", "groups": ["agents"], "on_behalf_of": "alice"});
    let Outcome::ApprovalRequired { approval: a2, .. } =
        w.decide_mcp(other_agent, &export(5)).await
    else {
        panic!("another agent needs its own approval")
    };
    assert_ne!(a2.id, approval.id);
    let changed = tool_call(
        6,
        "export_dataset",
        json!({"dataset": "sales", "format": "csv", "destination": "s3://elsewhere"}),
    );
    let Outcome::ApprovalRequired { approval: a3, .. } = w.decide_mcp(agent(), &changed).await
    else {
        panic!("changed arguments need their own approval")
    };
    assert_ne!(a3.id, approval.id);

    // The identical call, with a new JSON-RPC id, runs once; a replay asks
    // again.
    let used = w.decide_mcp(agent(), &export(7)).await;
    assert!(matches!(used, Outcome::Allow { .. }), "{used:?}");
    let replay = w.decide_mcp(agent(), &export(8)).await;
    assert!(
        matches!(&replay, Outcome::ApprovalRequired { approval: a, .. } if a.id != approval.id && a.status == Status::Pending),
        "{replay:?}"
    );
    // The trail names the server and the tool of each decision.
    let entries = w
        .store
        .audit_range(&mut AuditCursor::from("-"), "+", 100)
        .await
        .unwrap();
    let allowed = entries
        .iter()
        .find(|e| e.fields.contains(&("decision".into(), "allow".into())))
        .expect("the allowed call is audited");
    for pair in [
        ("mcp_server", "datasets"),
        ("mcp_tool", "export_dataset"),
        ("path", "/mcp"),
    ] {
        assert!(
            allowed.fields.contains(&(pair.0.into(), pair.1.into())),
            "{pair:?} in {:?}",
            allowed.fields
        );
    }
}

#[tokio::test]
async fn mcp_tools_are_allowed_forbidden_or_unknown_with_a_reason() {
    let w = world();
    let read = w
        .decide_mcp(
            agent(),
            &tool_call(1, "read_dataset", json!({"dataset": "sales"})),
        )
        .await;
    assert!(matches!(read, Outcome::Allow { .. }), "{read:?}");
    let delete = w
        .decide_mcp(
            agent(),
            &tool_call(2, "delete_dataset", json!({"dataset": "sales"})),
        )
        .await;
    assert!(
        matches!(&delete, Outcome::Deny { policies, .. } if policies == &["mcp-delete-tools-forbidden"]),
        "{delete:?}"
    );
    let unknown = w
        .decide_mcp(agent(), &tool_call(3, "drop_tables", json!({})))
        .await;
    assert!(
        matches!(&unknown, Outcome::Deny { reason, .. } if reason.contains(r#"Action::"drop_tables""#) && reason.contains("does not declare")),
        "{unknown:?}"
    );
    let list = r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#;
    assert!(matches!(
        w.decide_mcp(agent(), list).await,
        Outcome::Allow { .. }
    ));
}

#[tokio::test]
async fn a_tool_call_must_fit_its_declaration_so_no_tool_borrows_another_actions_policies() {
    let w = world();
    let refused = |o: &Outcome, words: &str| {
        assert!(
            matches!(o, Outcome::Deny { reason, .. } if reason.contains(words)),
            "{words}: {o:?}"
        );
    };
    // Tools named like a route's action, the protocol action or an action
    // group: declared, but not for a tool call on the server.
    for tool in ["read", "mcp_protocol", "mcp_read_tools"] {
        let o = w.decide_mcp(agent(), &tool_call(1, tool, json!({}))).await;
        refused(&o, "does not fit");
    }
    // Arguments: an undeclared one, or one of another type than declared.
    for args in [
        json!({"dataset": "sales", "limit": 5}),
        json!({"dataset": "sales", "format": true}),
        json!({"dataset": "sales", "destination": ["s3://a"]}),
    ] {
        let o = w
            .decide_mcp(agent(), &tool_call(2, "export_dataset", args.clone()))
            .await;
        refused(&o, "declare every argument");
    }
    // As declared: it reaches the policies (and asks for an approval).
    let ok = json!({"dataset": "sales", "format": "csv"});
    let o = w
        .decide_mcp(agent(), &tool_call(3, "export_dataset", ok))
        .await;
    assert!(matches!(o, Outcome::ApprovalRequired { .. }), "{o:?}");
    // Once a shape is known to fit, the same names with another type still
    // do not, and the same types with other values still do.
    let retyped = json!({"dataset": "sales", "format": 1});
    let o = w
        .decide_mcp(agent(), &tool_call(4, "export_dataset", retyped))
        .await;
    refused(&o, "declare every argument");
    let other = json!({"dataset": "hr", "format": "xml"});
    let o = w
        .decide_mcp(agent(), &tool_call(5, "export_dataset", other))
        .await;
    assert!(matches!(o, Outcome::ApprovalRequired { .. }), "{o:?}");
}

/// An approver signed in by an identity provider, named `name` there and
/// `known_as` in callers' tokens.
fn idp_approver(name: &str, known_as: KnownAs) -> Approver {
    Approver {
        name: name.into(),
        groups: vec!["data-owners".into()],
        signed_in: SignedIn {
            method: Method::Oidc,
            issuer: "https://idp.example.com".into(),
            subject: format!("sub-{name}"),
        },
        known_as,
    }
}

#[tokio::test]
async fn an_identity_provider_approver_is_compared_with_the_people_callers_tokens_name() {
    let w = world();
    let Outcome::ApprovalRequired { approval, .. } = w.decide(EXPORT, agent(), None).await else {
        panic!("an agent's export needs an approval")
    };
    let refusal = |a: Approver| {
        let approvals = w.approvals.clone();
        let id = approval.id.clone();
        async move {
            match approvals.rule(&a, &id, Ruling::Approve, "ok").await {
                Err(RuleError::NotPermitted(why)) => why,
                other => panic!("{} was not refused: {other:?}", a.name),
            }
        }
    };
    // The agent's own sign-in, and the human it acts for, by the claim
    // their tokens share with callers' (`sub` here).
    let own = refusal(idp_approver(
        "agent@example.com",
        KnownAs::Also("agent-7".into()),
    ))
    .await;
    assert!(own.contains("asked for this call"), "{own}");
    let human = refusal(idp_approver(
        "alice@example.com",
        KnownAs::Also("alice".into()),
    ))
    .await;
    assert!(human.contains("on behalf of `User::\"alice\"`"), "{human}");
    // Without that claim the approver could be alice: refused, not assumed.
    let unknown = refusal(idp_approver(
        "dora@example.com",
        KnownAs::Unknown {
            claim: "employee_id".into(),
        },
    ))
    .await;
    assert!(
        unknown.contains("no `employee_id` claim") && unknown.contains("cannot be checked"),
        "{unknown}"
    );

    let dora = idp_approver("dora@example.com", KnownAs::Also("dora".into()));
    let approved = w
        .approvals
        .rule(&dora, &approval.id, Ruling::Approve, "quarterly report")
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    let vote = &approved.votes[0];
    assert_eq!(
        (vote.method, vote.issuer.as_str(), vote.subject.as_str()),
        (
            Some(Method::Oidc),
            "https://idp.example.com",
            "sub-dora@example.com"
        )
    );
    let entries = w
        .store
        .audit_range(&mut AuditCursor::from("-"), "+", 100)
        .await
        .unwrap();
    let approved_entry = entries
        .iter()
        .find(|e| {
            e.fields
                .iter()
                .any(|(k, v)| k == "event" && v == "approved")
        })
        .expect("an `approved` audit entry");
    for (k, v) in [
        ("approver", "dora@example.com"),
        ("approver_method", "oidc"),
        ("approver_issuer", "https://idp.example.com"),
        ("approver_subject", "sub-dora@example.com"),
    ] {
        assert!(
            approved_entry.fields.iter().any(|(f, x)| f == k && x == v),
            "{k}={v} missing from {:?}",
            approved_entry.fields
        );
    }
}
