//! What people and scripts see: the list as a table, one request in
//! full, a line per `watch` event, and JSON.

use std::io::Write;

use serde_json::{Value, json};

use super::Output;
use crate::admin::pb;
use crate::approval::Status;
use crate::cli::table::{Cell, Colour, Column, Layout, Table, ellipsize, paint};
use crate::clock::rfc3339;
use crate::text::printable;

/// The colour of a status on a terminal.
fn status_colour(status: &str) -> Option<Colour> {
    Some(match Status::parse(status)? {
        Status::Pending => Colour::Yellow,
        Status::Approved => Colour::Green,
        Status::Denied | Status::Revoked => Colour::Red,
        Status::Consumed | Status::Expired => Colour::Dim,
    })
}

/// A status as listed: a shadow request says so.
fn status_label(a: &pb::Approval) -> std::borrow::Cow<'_, str> {
    if a.shadow {
        format!("{} (shadow)", a.status).into()
    } else {
        a.status.as_str().into()
    }
}

/// One event of `watch`: event, id and status whole; the rest (principal,
/// action, resource) cut to the width, if one applies.
pub(super) fn watch_line(kind: &str, a: &pb::Approval, layout: Layout) -> String {
    let head = format!("{kind:<10} {}  ", printable(&a.id));
    let tail = printable(&format!("  {} {} on {}", a.principal, a.action, a.resource)).into_owned();
    let fixed = head.chars().count() + a.status.chars().count();
    match layout.width {
        // Not even the id fits: the whole line, cut, without colour.
        Some(w) if fixed + 2 > w => ellipsize(&format!("{head}{}{tail}", a.status), w),
        Some(w) => format!(
            "{head}{}{}",
            paint(&a.status, status_colour(&a.status), layout),
            ellipsize(&tail, w - fixed)
        ),
        None => format!(
            "{head}{}{tail}",
            paint(&a.status, status_colour(&a.status), layout)
        ),
    }
}

/// One request, every value in full: an approver decides on these details.
pub(super) fn print_one(a: &pb::Approval, out: Output, layout: Layout) {
    if out == Output::Json {
        println!("{}", to_json(a));
        return;
    }
    let row = |k: &str, v: &str| println!("{k:<15} {}", printable(v));
    row("id", &a.id);
    println!(
        "{:<15} {}",
        "status",
        paint(&printable(&a.status), status_colour(&a.status), layout)
    );
    if a.shadow {
        row(
            "shadow",
            "yes: opened in shadow mode, for practice; the call went through without it and approving it allows nothing",
        );
    }
    row("principal", &a.principal);
    if !a.on_behalf_of.is_empty() {
        row("on behalf of", &a.on_behalf_of);
    }
    row("action", &a.action);
    row("resource", &a.resource);
    row(
        "request",
        &format!(
            "{} {} (host {}, from {})",
            a.method, a.path, a.host, a.source_address
        ),
    );
    for (k, v) in &a.parameters {
        row("parameter", &format!("{k} = {v}"));
    }
    row("policies", &a.policies.join(", "));
    let groups = if a.approver_groups.is_empty() {
        "any permitted approver".to_owned()
    } else {
        a.approver_groups.join(", ")
    };
    row(
        "approvers",
        &format!(
            "{} of {groups}{}",
            a.quorum,
            if a.reason_required {
                " (reason required)"
            } else {
                ""
            }
        ),
    );
    row("mode", &a.mode);
    row("created", &rfc3339(a.created_at));
    row("expires", &rfc3339(a.expires_at));
    if a.use_until > 0 {
        row(
            "usable until",
            &format!("{} ({} use(s) left)", rfc3339(a.use_until), a.uses_left),
        );
    }
    for v in &a.votes {
        let why = if v.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", v.reason)
        };
        // Who the identity provider (or Slack) says this is, beside the name.
        let via = match v.method.as_str() {
            "oidc" => format!(" (signed in at {} as {})", v.issuer, v.subject),
            "slack" => format!(" (in Slack, workspace {} user {})", v.issuer, v.subject),
            _ => String::new(),
        };
        row(
            "decision",
            &format!(
                "{} by {} at {}{via}{why}",
                v.verdict,
                v.approver,
                rfc3339(v.at)
            ),
        );
    }
}

pub(super) fn print_table(list: &[pb::Approval], layout: Layout) {
    if list.is_empty() {
        println!("no approval requests");
        return;
    }
    let column = |title, free_text| Column { title, free_text };
    // Ids and statuses stay whole (an id is what the next command needs);
    // the entities give way when the width is short.
    let mut table = Table::new(vec![
        column("ID", false),
        column("STATUS", false),
        column("PRINCIPAL", true),
        column("ACTION", true),
        column("RESOURCE", true),
        column("APPROVALS", false),
    ]);
    for a in list {
        let votes = a.votes.iter().filter(|v| v.verdict == "approve").count();
        table.push(vec![
            printable(&a.id).into_owned().into(),
            Cell {
                text: printable(&status_label(a)).into_owned(),
                colour: status_colour(&a.status),
            },
            printable(&a.principal).into_owned().into(),
            printable(&a.action).into_owned().into(),
            printable(&a.resource).into_owned().into(),
            format!("{votes}/{}", a.quorum).into(),
        ]);
    }
    let mut out = std::io::stdout().lock();
    for line in table.render(layout) {
        if writeln!(out, "{line}").is_err() {
            return; // stdout closed (| head): done.
        }
    }
}

pub(super) fn to_json(a: &pb::Approval) -> Value {
    json!({
        "id": a.id, "status": a.status, "principal": a.principal,
        "on_behalf_of": (!a.on_behalf_of.is_empty()).then_some(&a.on_behalf_of),
        "action": a.action, "resource": a.resource, "method": a.method, "path": a.path,
        "host": a.host, "source_address": a.source_address, "policies": a.policies,
        "parameters": a.parameters, "created_at": rfc3339(a.created_at), "expires_at": rfc3339(a.expires_at),
        "use_until": (a.use_until > 0).then(|| rfc3339(a.use_until)), "uses_left": a.uses_left,
        "quorum": a.quorum, "approver_groups": a.approver_groups, "reason_required": a.reason_required,
        "mode": a.mode, "shadow": a.shadow,
        "votes": a.votes.iter().map(|v| json!({
            "approver": v.approver, "verdict": v.verdict, "reason": v.reason, "at": rfc3339(v.at),
            "method": (!v.method.is_empty()).then_some(&v.method),
            "issuer": (!v.issuer.is_empty()).then_some(&v.issuer),
            "subject": (!v.subject.is_empty()).then_some(&v.subject),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval() -> pb::Approval {
        pb::Approval {
            id: "ap-5f1c2e9a0b7d4c31".into(),
            status: "pending".into(),
            principal: r#"User::"agent-7""#.into(),
            action: r#"Action::"export""#.into(),
            resource: r#"Dataset::"quarterly-sales""#.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_line_is_unchanged_without_a_width_and_fits_one() {
        let a = approval();
        assert_eq!(
            watch_line("opened", &a, Layout::PLAIN),
            format!(
                "{:<10} {}  {}  {} {} on {}",
                "opened", a.id, a.status, a.principal, a.action, a.resource
            )
        );
        for width in [10, 30, 45, 60] {
            let layout = Layout {
                width: Some(width),
                colour: false,
            };
            let line = watch_line("opened", &a, layout);
            assert!(line.chars().count() <= width, "{width}: {line}");
            assert!(line.ends_with('…'), "{width}: {line}");
            if width >= 45 {
                assert!(line.contains("ap-5f1c2e9a0b7d4c31  pending"), "{line}");
            }
        }
        let coloured = Layout {
            width: Some(60),
            colour: true,
        };
        assert!(watch_line("opened", &a, coloured).contains("\x1b[33mpending\x1b[0m"));
    }

    #[test]
    fn what_an_agent_chose_cannot_drive_the_approvers_terminal() {
        assert_eq!(printable("s3://reports"), "s3://reports");
        assert_eq!(
            printable("s3://evil\u{1b}[2K\rs3://reports\nparameter x = y"),
            "s3://evil\\u{1b}[2K\\u{d}s3://reports\\u{a}parameter x = y"
        );
        assert_eq!(
            printable("a\u{202e}gpj.exe\u{9b}"),
            "a\\u{202e}gpj.exe\\u{9b}"
        );
        // Line and paragraph separators break a line on some terminals;
        // the Arabic letter mark and zero-width characters reorder or
        // hide text like the overrides do.
        assert_eq!(
            printable("ok\u{2028}parameter x = y\u{2029}"),
            "ok\\u{2028}parameter x = y\\u{2029}"
        );
        assert_eq!(
            printable("a\u{61c}b\u{200b}c\u{feff}d\u{2060}e"),
            "a\\u{61c}b\\u{200b}c\\u{feff}d\\u{2060}e"
        );
        assert_eq!(printable("straße ✓"), "straße ✓", "printable text stays");
    }
}
