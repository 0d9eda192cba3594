//! Text that an agent (or an approver) chose, made safe to show people: on
//! a terminal (`approvals show/list/watch`) and in Slack messages.

use std::borrow::Cow;

/// Characters that move the cursor, recolour, hide, break or reorder what
/// is shown: control characters (C0, DEL, C1), line and paragraph
/// separators, bidirectional marks, embeddings, overrides and isolates,
/// and the invisible format characters (zero-width, word joiner, BOM,
/// interlinear annotations).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// `s` as a terminal shows it: every [`hidden`] character escaped as
/// `\u{..}`, so that a value an agent chose (an argument, a path, a
/// reason) cannot rewrite, hide or reorder what an approver reads.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A name a caller chose, fit to quote in a message: at most `keep`
/// characters, control characters and quotes escaped.
pub fn shortened(s: &str, keep: usize) -> String {
    let mut out: String = s.chars().take(keep).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.escape_debug().to_string()
}

/// `s` as Slack mrkdwn text that shows it literally: `&`, `<` and `>`
/// escaped (so no `<!channel>`, `<@user>` or `<url|label>` forms) and, as
/// on a terminal, line breaks and [`hidden`] characters escaped (so no
/// forged line).
pub fn mrkdwn(s: &str) -> String {
    let s = printable(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// An error with its sources, which say what actually failed (`connection
/// refused`, a certificate problem).
pub fn causes(e: &dyn std::error::Error) -> String {
    with_causes(e.to_string(), e.source())
}

/// `text`, then each of `cause` and its sources that it does not already
/// say.
pub fn with_causes(mut text: String, mut cause: Option<&dyn std::error::Error>) -> String {
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(&format!(": {c_text}"));
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_cannot_mention_link_or_break_a_line() {
        assert_eq!(mrkdwn("s3://reports"), "s3://reports");
        assert_eq!(
            mrkdwn("<!channel> <http://evil|ok> a & b\nnext\u{1b}[1m"),
            "&lt;!channel&gt; &lt;http://evil|ok&gt; a &amp; b\\u{a}next\\u{1b}[1m"
        );
    }
}
