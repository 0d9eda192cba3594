//! `countersign policy diff`: decide a sample of requests with two policy
//! sets and say what changes, for whom, and how many approval requests the
//! new set would open per approver group.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::sample::Sample;
use super::suite::{Expect, Got};
use crate::config::Config;
use crate::policy::PolicyStore;

/// A request of the sample and how each set decides it.
#[derive(Debug, Serialize)]
pub struct Compared {
    pub line: usize,
    /// `METHOD path` or the Cedar action, for people.
    pub request: String,
    pub principal: String,
    pub old: Got,
    pub new: Got,
}

impl Compared {
    /// `allow -> deny`, or `None` when nothing that matters changed.
    pub fn change(&self) -> Option<String> {
        let (o, n) = (&self.old, &self.new);
        let tighter = o.decision == n.decision
            && n.decision == Expect::ApprovalRequired
            && (o.approvers != n.approvers || o.quorum != n.quorum);
        if o.decision != n.decision {
            Some(format!(
                "{} -> {}",
                o.decision.as_str(),
                n.decision.as_str()
            ))
        } else if tighter {
            Some("approval_required -> approval_required (other approvers or quorum)".into())
        } else {
            None
        }
    }
}

/// A line of the requests file that cannot be used, as `file:line: why`.
#[derive(Debug)]
pub struct BadLine(pub String);

/// The requests of a JSONL file: one sample per line (the `request` of a
/// test case, or a line `serve --record` wrote); blank lines and lines
/// starting with `#` are skipped.
pub fn read_requests(path: &Path) -> Result<Vec<(usize, Sample)>, Vec<BadLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![BadLine(format!(
            "cannot read requests file `{}`: {e}",
            std::path::absolute(path)
                .unwrap_or_else(|_| path.to_owned())
                .display()
        ))]
    })?;
    let mut bad = Vec::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match serde_json::from_str::<Sample>(line) {
            Ok(s) => out.push((i + 1, s)),
            Err(e) => bad.push(BadLine(format!(
                "{}:{}: {e} (each line is one JSON request: `method` and `path`, or `principal`, `action` and `resource`)",
                path.display(),
                i + 1
            ))),
        }
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    if out.is_empty() {
        return Err(vec![BadLine(format!(
            "{}: no requests in the file",
            path.display()
        ))]);
    }
    Ok(out)
}

/// How `policy diff` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Text,
    /// One JSON document.
    Json,
}

/// Decides every request with both sets; the requests that one set cannot
/// decide come back apart, each naming its line (a sample that no longer
/// fits the new schema is itself a change to look at).
pub fn compare(
    requests: &[(usize, Sample)],
    config: &Config,
    old: &PolicyStore,
    new: &PolicyStore,
    file: &Path,
) -> (Vec<Compared>, Vec<BadLine>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (line, sample) in requests {
        let decided = sample
            .decide(config, old, false)
            .map_err(|e| format!("the old set: {e}"))
            .and_then(|o| {
                sample
                    .decide(config, new, false)
                    .map(|n| (o, n))
                    .map_err(|e| format!("the new set: {e}"))
            });
        match decided {
            Ok((o, n)) => out.push(Compared {
                line: *line,
                request: match (&sample.method, &sample.path) {
                    (Some(m), Some(p)) => format!("{m} {p}"),
                    _ => format!("{} on {}", o.action, o.resource),
                },
                principal: o.principal.to_string(),
                old: Got::of(&o.verdict),
                new: Got::of(&n.verdict),
            }),
            Err(e) => bad.push(BadLine(format!(
                "{}:{line}: cannot decide with {e}",
                file.display()
            ))),
        }
    }
    (out, bad)
}

/// The table for people.
pub fn text(compared: &[Compared], old: &Path, new: &Path) -> String {
    let mut out = format!(
        "{} requests decided with `{}` (old) and `{}` (new)\n\n",
        compared.len(),
        old.display(),
        new.display()
    );
    let mut changes: BTreeMap<String, Vec<&Compared>> = BTreeMap::new();
    for c in compared {
        if let Some(change) = c.change() {
            changes.entry(change).or_default().push(c);
        }
    }
    if changes.is_empty() {
        out.push_str("no decision changes\n");
    } else {
        out.push_str(&format!(
            "{:<46} {:>8}  {}\n",
            "change", "requests", "principals"
        ));
        for (change, cs) in &changes {
            let mut who: BTreeMap<&str, usize> = BTreeMap::new();
            for c in cs {
                *who.entry(&c.principal).or_default() += 1;
            }
            let who: Vec<String> = who.iter().map(|(p, n)| format!("{p} ({n})")).collect();
            out.push_str(&format!(
                "{change:<46} {:>8}  {}\n",
                cs.len(),
                who.join(", ")
            ));
        }
        out.push_str("\nchanged requests:\n");
        for c in compared.iter().filter(|c| c.change().is_some()) {
            out.push_str(&format!(
                "  line {}: {} by {}: {} -> {}\n",
                c.line,
                c.request,
                c.principal,
                c.old.summary(),
                c.new.summary()
            ));
        }
    }
    out.push_str("\napproval requests per approver group (old -> new):\n");
    let opened = |side: fn(&Compared) -> &Got| {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for g in compared.iter().map(side) {
            if g.decision == Expect::ApprovalRequired {
                let groups = if g.approvers.is_empty() {
                    "(any approver Cedar permits)".to_owned()
                } else {
                    g.approvers.join(" or ")
                };
                *by.entry(groups).or_default() += 1;
            }
        }
        by
    };
    let (before, after) = (opened(|c| &c.old), opened(|c| &c.new));
    let mut groups: Vec<&String> = before.keys().chain(after.keys()).collect();
    groups.sort();
    groups.dedup();
    if groups.is_empty() {
        out.push_str("  none\n");
    }
    for g in groups {
        let (b, a) = (
            before.get(g).copied().unwrap_or(0),
            after.get(g).copied().unwrap_or(0),
        );
        out.push_str(&format!("  {g:<32} {b} -> {a}\n"));
    }
    out
}

/// The whole comparison as JSON.
pub fn json(compared: &[Compared], old: &Path, new: &Path) -> String {
    let changed: Vec<serde_json::Value> = compared
        .iter()
        .filter_map(|c| {
            c.change().map(|change| {
                serde_json::json!({
                    "line": c.line, "request": c.request, "principal": c.principal,
                    "change": change, "old": c.old, "new": c.new,
                })
            })
        })
        .collect();
    let doc = serde_json::json!({
        "old": old, "new": new, "requests": compared.len(), "changed": changed,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
