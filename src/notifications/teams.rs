//! Microsoft Teams: a message with one Adaptive Card, as a Teams Workflows
//! webhook ("When a Teams webhook request is received", then "Post card in
//! a chat or channel") posts it.
//!
//! A `TextBlock`, and in Teams a `FactSet`'s titles and values, render
//! Markdown: a value could make a link (`[ok](https://evil)`), bold a
//! forged verdict or start a list. So nothing here is a `TextBlock` or a
//! `FactSet`: each line is a `RichTextBlock` of `TextRun`s, whose text is
//! never read as Markdown (Adaptive Cards schema, TextRun: "Markdown is
//! not supported"), with line breaks and the other hidden characters
//! escaped as on a terminal, so no value starts a line of its own. No
//! `msteams.entities` are sent, so `<at>…</at>` mentions nothing.

use serde_json::{Value, json};

use super::payload::{SHADOW_NOTE, title};
use crate::approval::{Approval, EventKind};
use crate::text::printable;

/// `RichTextBlock` needs 1.2; Teams renders up to 1.5.
const VERSION: &str = "1.4";

/// The Workflows message for `event` on `a`; `approve` is the command that
/// approves it.
pub fn card(event: EventKind, a: &Approval, approve: &str) -> Value {
    let who = match &a.info.on_behalf_of {
        Some(h) => format!("{} (on behalf of {h})", a.info.principal),
        None => a.info.principal.clone(),
    };
    let mut body = vec![
        heading(&title(event, a)),
        line("Approval", &a.id),
        line("Who", &who),
        line("What", &format!("{} on {}", a.info.action, a.info.resource)),
        line(
            "Request",
            &format!("{} {} (host {})", a.info.method, a.info.path, a.info.host),
        ),
    ];
    if a.info.shadow {
        body.push(line("Shadow mode", SHADOW_NOTE));
    }
    for (k, v) in &a.info.parameters {
        body.push(line(k, v));
    }
    body.push(line("Policies", &a.info.policies.join(", ")));
    body.push(line(
        "Quorum",
        &format!("{} of {} approvals", a.approvals(), a.info.quorum),
    ));
    if let Some(v) = a.votes.last() {
        body.push(line(
            "Vote",
            &format!("{} by {}: {}", v.verdict, v.approver, v.reason),
        ));
    }
    if event == EventKind::Requested {
        body.push(line("Expires", &crate::clock::rfc3339(a.expires_at)));
        body.push(line("Approvers", &a.info.approver_groups.join(", ")));
        body.push(json!({"type": "RichTextBlock", "inlines": [
            run("Approve: ", &[BOLD]),
            run(approve, &[MONOSPACE]),
        ]}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": VERSION,
                "msteams": {"width": "Full"},
                "body": body,
            },
        }],
    })
}

/// The card's first line.
fn heading(text: &str) -> Value {
    json!({"type": "RichTextBlock", "inlines": [run(text, &[BOLD, ("size", "Medium")])]})
}

/// One line: `label: value`, the label in bold.
fn line(label: &str, value: &str) -> Value {
    json!({"type": "RichTextBlock", "inlines": [
        run(&format!("{label}: "), &[BOLD]),
        run(value, &[]),
    ]})
}

const BOLD: (&str, &str) = ("weight", "Bolder");
const MONOSPACE: (&str, &str) = ("fontType", "Monospace");

/// A `TextRun` of `text` as a terminal would show it, styled.
fn run(text: &str, style: &[(&str, &str)]) -> Value {
    let mut run = json!({"type": "TextRun", "text": printable(text)});
    for (k, v) in style {
        run[*k] = (*v).into();
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifications::payload::tests::{hostile, shadow_request};

    /// What each line of the card shows: its runs' texts, joined.
    fn lines(message: &Value) -> Vec<String> {
        content(message)["body"]
            .as_array()
            .unwrap()
            .iter()
            .map(|block| {
                assert_eq!(block["type"], "RichTextBlock", "{block}");
                block["inlines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["text"].as_str().unwrap())
                    .collect()
            })
            .collect()
    }

    fn content(message: &Value) -> &Value {
        &message["attachments"][0]["content"]
    }

    /// Every object in `v` that has a `text`, by its `type`.
    fn texts<'a>(v: &'a Value, out: &mut Vec<(&'a str, &'a str)>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(t)) = o.get("text") {
                    out.push((o["type"].as_str().unwrap_or(""), t));
                }
                o.values().for_each(|v| texts(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| texts(v, out)),
            _ => {}
        }
    }

    #[test]
    fn a_request_is_an_adaptive_card_in_a_workflows_message_with_its_context() {
        let a = shadow_request();
        let message = card(
            EventKind::Requested,
            &a,
            "countersign approvals approve ap-1",
        );
        assert_eq!(message["type"], "message");
        let attachment = &message["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(content(&message)["type"], "AdaptiveCard");
        assert_eq!(content(&message)["version"], "1.4");
        assert_eq!(
            lines(&message),
            [
                "[shadow] Approval requested",
                "Approval: ap-1",
                r#"Who: User::"agent-7""#,
                r#"What: Action::"export" on Dataset::"sales""#,
                "Request: POST /v1/datasets/sales/export (host api)",
                &format!("Shadow mode: {SHADOW_NOTE}"),
                "Policies: agent-exports-need-approval",
                "Quorum: 0 of 1 approvals",
                "Expires: 1970-01-01T00:01:00Z",
                "Approvers: data-owners",
                "Approve: countersign approvals approve ap-1",
            ]
        );
        let mut decided = a;
        decided.info.shadow = false;
        decided.info.on_behalf_of = Some(r#"User::"alice""#.into());
        decided.votes.push(crate::approval::Vote::cast(
            "dora".into(),
            crate::approval::Ruling::Approve,
            "quarterly report",
            1,
        ));
        let shown = lines(&card(EventKind::Approved, &decided, "unused"));
        assert_eq!(shown[0], "Approved");
        assert_eq!(
            shown[2],
            r#"Who: User::"agent-7" (on behalf of User::"alice")"#
        );
        assert_eq!(
            shown.last().unwrap(),
            "Vote: approve by dora: quarterly report"
        );
        assert!(
            !shown.iter().any(|l| l.starts_with("Approve:")),
            "{shown:?}"
        );
    }

    #[test]
    fn what_an_agent_chose_cannot_forge_teams_lines_links_or_mentions() {
        let a = hostile(
            r#"Dataset::"sales [here](https://evil.example)""#,
            &[
                ("body.destination", "[s3://reports](http://evil.example)"),
                ("body.note", "fine\n\n**Approved** by security\r\n- ok"),
                ("body.who", "<at>security</at> \u{1b}[2K\u{202e}x\u{2028}y"),
            ],
            "no\n_Approved_ by [security](https://evil.example)",
        );
        let message = card(EventKind::Requested, &a, "approve");
        // Nothing is read as Markdown: every text is a TextRun's.
        let mut all = Vec::new();
        texts(&message, &mut all);
        for (kind, text) in &all {
            assert_eq!(*kind, "TextRun", "`{text}` in a {kind}");
            assert_eq!(printable(text), *text, "a hidden character in `{text}`");
        }
        assert!(content(&message)["msteams"].get("entities").is_none());
        // One line per field: title, id, who, what, request, three
        // parameters, policies, quorum, the vote, expiry, approvers, command.
        let shown = lines(&message);
        assert_eq!(shown.len(), 14, "{shown:#?}");
        for line in [
            r#"What: Action::"export" on Dataset::"sales [here](https://evil.example)""#,
            "body.destination: [s3://reports](http://evil.example)",
            r"body.note: fine\u{a}\u{a}**Approved** by security\u{d}\u{a}- ok",
            r"body.who: <at>security</at> \u{1b}[2K\u{202e}x\u{2028}y",
            r"Vote: deny by dora: no\u{a}_Approved_ by [security](https://evil.example)",
        ] {
            assert!(
                shown.iter().any(|l| l == line),
                "`{line}` not in {shown:#?}"
            );
        }
    }
}
