//! Webhooks: a generic JSON payload or a Slack incoming-webhook one, one
//! POST per notice. Retries and queueing are the outbox's.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Channel, ChannelError, Notice};
use crate::approval::{Approval, EventKind};

/// Payload shape of one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Slack,
}

/// One webhook. `Debug` (in `approval/redact.rs`) shows only the URL's
/// scheme and host: a Slack incoming-webhook URL is itself a secret.
#[derive(Clone)]
pub struct Webhook {
    /// Logs and metrics name the webhook by this, never by its URL.
    pub name: String,
    pub url: String,
    pub format: Format,
    client: reqwest::Client,
}

impl PartialEq for Webhook {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.url, self.format) == (&other.name, &other.url, other.format)
    }
}

impl Eq for Webhook {}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Webhook {
    /// `name` "" is named from the URL's hash: stable across restarts and
    /// reordered settings, and no secret.
    pub fn new(name: &str, url: &str, format: Format) -> Self {
        use sha2::Digest;
        let name = if name.is_empty() {
            let digest = sha2::Sha256::digest(url.as_bytes());
            format!("webhook-{}", &hex::encode(digest)[..8])
        } else {
            name.to_owned()
        };
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            name,
            url: url.to_owned(),
            format,
            client,
        }
    }
}

#[async_trait::async_trait]
impl Channel for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::Requested | EventKind::Approved | EventKind::Denied | EventKind::Revoked
        )
    }

    async fn deliver(&self, notice: &Notice) -> Result<(), ChannelError> {
        let body = payload(self.format, notice.kind, &notice.approval);
        match self.client.post(&self.url).json(&body).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(ChannelError::Refused(r.status().as_u16())),
            // Without the URL: it may be a secret.
            Err(e) => Err(ChannelError::Unreachable(e.without_url().to_string())),
        }
    }
}

/// What people are told. Built from the stored record, which never holds
/// credentials, tokens or raw bodies.
pub fn payload(format: Format, event: EventKind, a: &Approval) -> Value {
    let approve = format!("countersign approvals approve {} --reason '...'", a.id);
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
        Format::Slack => {
            // Every value the agent or an approver chose is escaped: it
            // cannot mention, link, or start a line of its own.
            let m = crate::text::mrkdwn;
            let who = match &a.info.on_behalf_of {
                Some(h) => format!("{} (on behalf of {})", m(&a.info.principal), m(h)),
                None => m(&a.info.principal),
            };
            let title = match event {
                EventKind::Requested => "Approval requested",
                EventKind::Approved => "Approved",
                EventKind::Denied => "Denied",
                EventKind::Revoked => "Revoked",
                other => other.as_str(),
            };
            // A shadow request is practice: said first, so nobody hurries.
            let title = if a.info.shadow {
                format!("[shadow] {title}")
            } else {
                title.to_owned()
            };
            let what = format!("{} on {}", m(&a.info.action), m(&a.info.resource));
            let mut lines = vec![
                format!("*{title}* `{}`", m(&a.id)),
                format!("*Who:* {who}"),
                format!("*What:* {what}"),
                format!("*Request:* {} {}", m(&a.info.method), m(&a.info.path)),
            ];
            if a.info.shadow {
                lines.push(
                    "*Shadow mode:* the call went through without an approval; approving is practice and allows nothing".into(),
                );
            }
            for (k, v) in &a.info.parameters {
                lines.push(format!("*{}:* {}", m(k), m(v)));
            }
            if let Some(v) = a.votes.last() {
                lines.push(format!(
                    "*{}* by {}: {}",
                    v.verdict,
                    m(&v.approver),
                    m(&v.reason)
                ));
            }
            let mut blocks = vec![
                json!({"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}),
            ];
            if event == EventKind::Requested {
                let groups: Vec<String> = a.info.approver_groups.iter().map(|g| m(g)).collect();
                blocks.push(json!({"type": "context", "elements": [
                    {"type": "mrkdwn", "text": format!("Approvers: {} · `{}`", groups.join(", "), m(&approve))}
                ]}));
            }
            json!({"text": format!("{title}: {who} {what}"), "blocks": blocks})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Mode, RequestInfo, Status};

    fn shadow_request() -> Approval {
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
    fn what_an_agent_chose_cannot_forge_slack_lines_links_or_mentions() {
        let mut a = shadow_request();
        a.info.shadow = false;
        a.info.resource = r#"Dataset::"sales <!channel>""#.into();
        a.info.parameters = [
            ("body.destination", "<http://evil.example|s3://reports>"),
            ("body.note", "fine\n*Approved* by security: ok & done"),
            (
                "body.who",
                "<@U024BE7LH> <!here> \u{1b}[2K\u{202e}x\u{2028}y",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        a.votes.push(crate::approval::Vote::cast(
            "dora".into(),
            crate::approval::Ruling::Deny,
            "no\n*Approved* by <!subteam^S1|security>",
            1,
        ));
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
