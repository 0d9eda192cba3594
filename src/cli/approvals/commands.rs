//! Running a subcommand: one call to the admin API, then its answer shown.
//! Approve, deny and revoke are one decision path, told apart by the verb.

use serde_json::{Value, json};

use super::connect::{Client, connect, explain};
use super::render::{print_one, print_table, to_json, watch_line};
use super::{ApprovalsArgs, ApprovalsCommand, Output};
use crate::admin::pb;
use crate::cli::table::Layout;

/// What an approver does to one request.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Approve,
    Deny,
    Revoke,
}

pub(super) async fn execute(args: ApprovalsArgs) -> Result<(), String> {
    let out = args.output;
    // Tables and lines for people; JSON is never cut nor coloured.
    let layout = match out {
        Output::Table => Layout::stdout(),
        Output::Json => Layout::PLAIN,
    };
    let mut client = connect(&args.conn).await?;
    match args.command {
        ApprovalsCommand::List {
            status,
            principal,
            action,
            limit,
        } => {
            let req = pb::ListRequest {
                status,
                principal: principal.unwrap_or_default(),
                action: action.unwrap_or_default(),
                limit,
            };
            let list = client
                .list(req)
                .await
                .map_err(|s| explain(s, None))?
                .into_inner()
                .approvals;
            match out {
                Output::Json => println!("{}", Value::Array(list.iter().map(to_json).collect())),
                Output::Table => print_table(&list, layout),
            }
        }
        ApprovalsCommand::Show { id } => {
            let a = client
                .get(pb::GetRequest { id: id.clone() })
                .await
                .map_err(|s| explain(s, Some(&id)))?
                .into_inner();
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Approve { id, reason } => {
            let a = decide(&mut client, Verb::Approve, id, reason).await?;
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Deny { id, reason } => {
            let a = decide(&mut client, Verb::Deny, id, reason).await?;
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Revoke { id, reason } => {
            let a = decide(&mut client, Verb::Revoke, id, reason).await?;
            print_one(&a, out, layout);
        }
        ApprovalsCommand::Watch => {
            let mut stream = client
                .watch(pb::WatchRequest {})
                .await
                .map_err(|s| explain(s, None))?
                .into_inner();
            while let Some(ev) = stream.message().await.map_err(|s| explain(s, None))? {
                let Some(a) = ev.approval else { continue };
                match out {
                    Output::Json => {
                        println!("{}", json!({"event": ev.kind, "approval": to_json(&a)}))
                    }
                    Output::Table => println!("{}", watch_line(&ev.kind, &a, layout)),
                }
            }
        }
    }
    Ok(())
}

/// Records the approver's decision on request `id` and returns the request
/// as it now stands.
async fn decide(
    client: &mut Client,
    verb: Verb,
    id: String,
    reason: String,
) -> Result<pb::Approval, String> {
    let req = pb::DecideRequest {
        id: id.clone(),
        reason,
    };
    let answer = match verb {
        Verb::Approve => client.approve(req).await,
        Verb::Deny => client.deny(req).await,
        Verb::Revoke => client.revoke(req).await,
    };
    answer
        .map(tonic::Response::into_inner)
        .map_err(|s| explain(s, Some(&id)))
}
