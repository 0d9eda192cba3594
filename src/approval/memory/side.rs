//! The memory store's delivery progress per channel, channel notes and
//! replay marks: one process, so "durable" lasts as long as it does.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::approval::store::{AuditEntry, OutboxEntry, StreamId};

#[derive(Debug, Default)]
pub(super) struct Side {
    /// Channel -> (last entry handed out, taken and not acknowledged).
    groups: HashMap<String, Group>,
    /// (request id, channel) -> note, until when.
    notes: HashMap<(String, String), (String, Instant)>,
    /// Key -> until when it counts as seen.
    seen: HashMap<String, Instant>,
}

#[derive(Debug)]
struct Group {
    last: StreamId,
    held: Vec<(OutboxEntry, Instant)>,
}

impl Side {
    /// A group first read starts at the end of the stream.
    pub(super) fn take(
        &mut self,
        group: &str,
        audit: &VecDeque<AuditEntry>,
        count: usize,
    ) -> Vec<OutboxEntry> {
        let end = audit
            .back()
            .map_or(StreamId(0, 0), |e| StreamId::parse(&e.id));
        let g = self.groups.entry(group.to_owned()).or_insert(Group {
            last: end,
            held: Vec::new(),
        });
        let taken: Vec<OutboxEntry> = audit
            .iter()
            .filter(|e| StreamId::parse(&e.id) > g.last)
            .take(count)
            .map(|e| OutboxEntry {
                shard: 0,
                entry: e.clone(),
            })
            .collect();
        if let Some(e) = taken.last() {
            g.last = StreamId::parse(&e.entry.id);
        }
        let now = Instant::now();
        g.held.extend(taken.iter().map(|e| (e.clone(), now)));
        taken
    }

    pub(super) fn reclaim(
        &mut self,
        group: &str,
        stalled: Duration,
        count: usize,
    ) -> Vec<OutboxEntry> {
        let Some(g) = self.groups.get_mut(group) else {
            return Vec::new();
        };
        let now = Instant::now();
        g.held
            .iter_mut()
            .filter(|(_, at)| now.duration_since(*at) >= stalled)
            .take(count)
            .map(|(e, at)| {
                *at = now;
                e.clone()
            })
            .collect()
    }

    pub(super) fn ack(&mut self, group: &str, entries: &[OutboxEntry]) {
        if let Some(g) = self.groups.get_mut(group) {
            g.held.retain(|(e, _)| !entries.contains(e));
        }
    }

    pub(super) fn set_note(&mut self, id: &str, channel: &str, note: &str, ttl: Duration) {
        let now = Instant::now();
        self.notes.retain(|_, (_, until)| *until > now);
        self.notes.insert(
            (id.to_owned(), channel.to_owned()),
            (note.to_owned(), now + ttl),
        );
    }

    pub(super) fn note(&self, id: &str, channel: &str) -> Option<String> {
        self.notes
            .get(&(id.to_owned(), channel.to_owned()))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(note, _)| note.clone())
    }

    pub(super) fn first_sight(&mut self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        self.seen.retain(|_, until| *until > now);
        self.seen.insert(key.to_owned(), now + ttl).is_none()
    }
}
