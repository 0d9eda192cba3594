//! What a notice says, in each webhook format: the generic JSON, Slack's
//! incoming-webhook blocks and (in `teams.rs`) a Teams Adaptive Card.
//! Built from the stored record, which never holds credentials, tokens or
//! raw bodies.

use serde_json::{Value, json};

use super::webhook::Format;
use crate::approval::{Approval, EventKind};

/// What people are told.
pub fn payload(format: Format, event: EventKind, a: &Approval) -> Value {
    let approve = approve_command(a);
    match format {
        Format::Json => json!({
            "event": event.as_str(),
            "approval": {
                "id": a.id, "status": a.status.as_str(),
                "principal": a.info.principal, "on_behalf_of": a.info.on_behalf_of,
                "action": a.info.action, "resource": a.info.resource,
                "method": a.info.method, "path": a.info.path, "host": a.info.host,
                "source_address": a.info.source_address, "policies": a.info.policies,
                "parameters": a.info.parameters, "approver_groups": a.info.approver_groups,
                "quorum": a.info.quorum, "reason_required": a.info.reason_required,
                "shadow": a.info.shadow,
                "created_at": a.created_at, "expires_at": a.expires_at,
                "votes": a.votes,
            },
            "approve_command": approve,
        }),
        Format::Teams => super::teams::card(event, a, &approve),
        Format::Slack => slack(event, a, &approve),
    }
}

/// Slack incoming-webhook blocks. Every value the agent or an approver
/// chose is escaped (and cut to fit Slack's limits): it cannot mention,
/// link, or start a line of its own. Described as the interactive Slack
/// message describes it (`slack::message`).
fn slack(event: EventKind, a: &Approval, approve: &str) -> Value {
    use crate::slack::message::{m, not_all_shown, sections};
    let title = title(event, a);
    let described = crate::slack::message::describe(a);
    let (who, what) = (&described.who, &described.what);
    let mut lines = [vec![format!("*{title}* `{}`", m(&a.id))], described.lines].concat();
    if let Some(v) = a.votes.last() {
        lines.push(format!(
            "*{}* by {}: {}",
            v.verdict,
            m(&v.approver),
            m(&v.reason)
        ));
    }
    // Within Slack's limits (a section past them refuses the whole
    // payload), saying what did not fit.
    let section =
        |text: String| json!({"type": "section", "text": {"type": "mrkdwn", "text": text}});
    let (texts, lost) = sections(&lines, &a.id);
    let mut blocks: Vec<Value> = texts.into_iter().map(section).collect();
    if let Some(warning) = not_all_shown(&a.id, described.cut + lost.cut, lost.left_out) {
        blocks.push(section(warning));
    }
    if event == EventKind::Requested {
        let groups: Vec<String> = a.info.approver_groups.iter().map(|g| m(g)).collect();
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("Approvers: {} · `{}`", groups.join(", "), m(approve))}
        ]}));
    }
    json!({"text": format!("{title}: {who} {what}"), "blocks": blocks})
}

/// The command an approver runs to approve `a`.
fn approve_command(a: &Approval) -> String {
    format!("countersign approvals approve {} --reason '...'", a.id)
}

/// What happened, in a few words.
pub(super) fn title(event: EventKind, a: &Approval) -> String {
    let title = match event {
        EventKind::Requested => "Approval requested",
        EventKind::Approved => "Approved",
        EventKind::Denied => "Denied",
        EventKind::Revoked => "Revoked",
        other => other.as_str(),
    };
    // A shadow request is practice: said first, so nobody hurries.
    if a.info.shadow {
        format!("[shadow] {title}")
    } else {
        title.to_owned()
    }
}

/// What a shadow request's message says of it.
pub(crate) const SHADOW_NOTE: &str =
    "the call went through without an approval; approving is practice and allows nothing";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::approval::{Mode, RequestInfo, Status};

    pub(crate) fn shadow_request() -> Approval {
        Approval {
            id: "ap-1".into(),
            status: Status::Pending,
            info: RequestInfo {
                principal: r#"User::"agent-7""#.into(),
                on_behalf_of: None,
                action: r#"Action::"export""#.into(),
                resource: r#"Dataset::"sales""#.into(),
                method: "POST".into(),
                path: "/v1/datasets/sales/export".into(),
                host: "api".into(),
                source_address: "10.0.0.7".into(),
                policies: vec!["agent-exports-need-approval".into()],
                parameters: Default::default(),
                approver_groups: vec!["data-owners".into()],
                quorum: 1,
                uses: 1,
                reason_required: true,
                mode: Mode::Deny,
                shadow: true,
                rules: String::new(),
            },
            created_at: 0,
            expires_at: 60,
            use_until: 0,
            uses_left: 1,
            votes: vec![],
            opened_by: String::new(),
        }
    }

    /// An enforced request whose `resource` and `parameters` an agent
    /// chose, denied by `dora` for `reason`.
    pub(in crate::notifications) fn hostile(
        resource: &str,
        parameters: &[(&str, &str)],
        reason: &str,
    ) -> Approval {
        let mut a = shadow_request();
        a.info.shadow = false;
        a.info.resource = resource.into();
        a.info.parameters = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        a.votes.push(crate::approval::Vote::cast(
            "dora".into(),
            crate::approval::Ruling::Deny,
            reason,
            1,
        ));
        a
    }

    #[test]
    fn a_shadow_request_says_so_in_every_format() {
        let a = shadow_request();
        let json = payload(Format::Json, EventKind::Requested, &a);
        assert_eq!(json["approval"]["shadow"], true);
        let slack = payload(Format::Slack, EventKind::Requested, &a);
        let text = slack["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(text.starts_with("*[shadow] Approval requested*"), "{text}");
        assert!(
            text.contains("*Shadow mode:* the call went through"),
            "{text}"
        );
        let mut enforced = a;
        enforced.info.shadow = false;
        let slack = payload(Format::Slack, EventKind::Requested, &enforced);
        assert!(!slack.to_string().contains("shadow"), "{slack}");
    }

    #[test]
    fn a_slack_payload_fits_slacks_limits_and_says_what_it_cut() {
        let mut a = shadow_request();
        a.info.parameters = (0..60)
            .map(|i| (format!("body.p{i:02}"), "x".repeat(2000)))
            .collect();
        let slack = payload(Format::Slack, EventKind::Requested, &a);
        let blocks = slack["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50, "{}", blocks.len());
        let mut all = String::new();
        for b in blocks {
            let t = b["text"]["text"]
                .as_str()
                .or(b["elements"][0]["text"].as_str())
                .unwrap();
            // Slack refuses a section text past 3000 characters (and the
            // whole payload with it).
            assert!(t.chars().count() <= 3000, "{}", t.len());
            all.push_str(t);
            all.push('\n');
        }
        assert!(all.contains("*body.p00:* xxx"), "{all}");
        assert!(
            all.contains(
                "*Not all of this request fits in Slack:* values cut short end in *[cut]*. Before deciding, read it whole: `countersign approvals show ap-1`"
            ),
            "{all}"
        );
    }

    #[test]
    fn what_an_agent_chose_cannot_forge_slack_lines_links_or_mentions() {
        let a = hostile(
            r#"Dataset::"sales <!channel>""#,
            &[
                ("body.destination", "<http://evil.example|s3://reports>"),
                ("body.note", "fine\n*Approved* by security: ok & done"),
                (
                    "body.who",
                    "<@U024BE7LH> <!here> \u{1b}[2K\u{202e}x\u{2028}y",
                ),
            ],
            "no\n*Approved* by <!subteam^S1|security>",
        );
        let slack = payload(Format::Slack, EventKind::Requested, &a);
        let text = slack["blocks"][0]["text"]["text"].as_str().unwrap();
        // One line per field: seven (title, who, what, request, three
        // parameters) and the vote.
        assert_eq!(text.lines().count(), 8, "{text}");
        for raw in ["<!", "<@", "<http", "\u{1b}", "\u{202e}", "\u{2028}", " & "] {
            assert!(!text.contains(raw), "`{raw}` in {text}");
        }
        for shown in [
            "*body.destination:* &lt;http://evil.example|s3://reports&gt;",
            r"*body.note:* fine\u{a}*Approved* by security: ok &amp; done",
            r"*body.who:* &lt;@U024BE7LH&gt; &lt;!here&gt; \u{1b}[2K\u{202e}x\u{2028}y",
            r"*deny* by dora: no\u{a}*Approved* by &lt;!subteam^S1|security&gt;",
            r#"*What:* Action::"export" on Dataset::"sales &lt;!channel&gt;""#,
        ] {
            assert!(text.contains(shown), "`{shown}` not in {text}");
        }
        // The notification's plain text is mrkdwn too.
        let fallback = slack["text"].as_str().unwrap();
        assert!(
            fallback.ends_with(r#"on Dataset::"sales &lt;!channel&gt;""#),
            "{fallback}"
        );
    }
}
