//! The memory store's audit trail read by range, as Redis' XRANGE reads a
//! stream: one stream, so the cursor's first place says where a reader is.

use std::collections::VecDeque;

use crate::approval::store::{AuditCursor, AuditEntry, StreamId};

/// The entries after `cursor` up to `end` (a stream id or `+`), at most
/// `count`; moves the cursor past them.
pub(super) fn range(
    audit: &VecDeque<AuditEntry>,
    cursor: &mut AuditCursor,
    end: &str,
    count: usize,
) -> Vec<AuditEntry> {
    let bound = |text: &str| match text.strip_prefix('(') {
        Some(id) => (StreamId::parse(id), true),
        None => (StreamId::parse(text), false),
    };
    let (start, exclusive) = match cursor.after[0].as_str() {
        "-" => (StreamId(0, 0), false),
        text => bound(text),
    };
    let last = match end {
        "+" => StreamId(u64::MAX, u64::MAX),
        text => StreamId::parse(text),
    };
    let page: Vec<AuditEntry> = audit
        .iter()
        .filter(|e| {
            let id = StreamId::parse(&e.id);
            (id > start || (!exclusive && id == start)) && id <= last
        })
        .take(count)
        .cloned()
        .collect();
    if let Some(e) = page.last() {
        cursor.after[0] = format!("({}", e.id);
    }
    page
}
