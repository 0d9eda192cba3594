//! `countersign policy test`: test files beside the policies, each a list
//! of `[[case]]` tables: a request and the outcome it must get.
//!
//! ```toml
//! [[case]]
//! name = "an agent's export waits for a data owner"
//! expect = "approval_required"
//! policies = ["agent-exports-need-approval"]
//! approvers = ["data-owners"]
//! quorum = 1
//!
//! [case.request]
//! method = "POST"
//! path = "/v1/datasets/sales/export"
//! body = { format = "csv", rows = 10 }
//! claims = { sub = "ci-agent", groups = ["agents"] }
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::sample::Sample;
use crate::config::Config;
use crate::policy::{PolicyStore, Verdict};

/// The outcome a case expects, or a decision got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Allow,
    Deny,
    ApprovalRequired,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::ApprovalRequired => "approval_required",
        }
    }
}

/// Every file's cases, each with its line.
pub type Suite = Vec<(PathBuf, Vec<(usize, Case)>)>;

/// One case as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    name: String,
    request: Sample,
    /// Decide as if an approval were granted (what the retry gets).
    #[serde(default)]
    approved: bool,
    expect: Expect,
    /// The determining policies, exactly (the permits of an allow, the
    /// forbids of a deny, the guards of an approval).
    policies: Option<Vec<String>>,
    /// The approver groups, exactly (approval_required only).
    approvers: Option<Vec<String>>,
    quorum: Option<u32>,
    /// Text the reason must contain.
    reason: Option<String>,
    /// The decision comes from evaluation errors (a deny); otherwise an
    /// error fails the case.
    #[serde(default)]
    errors: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    case: Vec<toml::Spanned<Case>>,
}

/// What a request came to, in the terms a case states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Got {
    pub decision: Expect,
    pub policies: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    pub reason: String,
    /// Evaluation errors (`policy: message`): the policies named then are
    /// those that failed, not those that decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Got {
    pub fn of(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Allow(d) | Verdict::Deny(d) => Self {
                decision: if matches!(verdict, Verdict::Allow(_)) {
                    Expect::Allow
                } else {
                    Expect::Deny
                },
                policies: d.policies.clone(),
                approvers: Vec::new(),
                quorum: None,
                reason: d.reason(),
                errors: d.errors.clone(),
            },
            Verdict::Approvable { denial, params } => Self {
                decision: Expect::ApprovalRequired,
                policies: denial.policies.clone(),
                approvers: params.approver_groups.clone(),
                quorum: Some(params.quorum),
                reason: denial.reason(),
                errors: Vec::new(),
            },
        }
    }

    /// One line: the decision and what decided it.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} by [{}]",
            self.decision.as_str(),
            self.policies.join(", ")
        );
        if self.decision == Expect::ApprovalRequired {
            s.push_str(&format!(
                ", approvers [{}], quorum {}",
                self.approvers.join(", "),
                self.quorum.unwrap_or(1)
            ));
        }
        s
    }
}

/// One case run.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub file: PathBuf,
    pub line: usize,
    pub name: String,
    pub passed: bool,
    /// What the case expects, in one line.
    pub expected: String,
    /// What the request got; `None` when it could not be decided.
    pub got: Option<Got>,
    /// Each way the result differs from the expectation, or why the request
    /// could not be decided.
    pub failures: Vec<String>,
    #[serde(skip)]
    pub time: Duration,
}

/// A test file that cannot be read, located as `file:line:col`.
#[derive(Debug)]
pub struct Malformed(pub String);

/// Every `*.toml` under `path` (a file or a directory), sorted.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, Malformed> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        Malformed(format!(
            "cannot read test directory `{}`: {e} (policy tests live in `tests/*.toml` beside the policies; give another place with --tests)",
            absolute(path).display()
        ))
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Malformed(format!(
            "no test files (`*.toml`) in `{}`",
            absolute(path).display()
        )));
    }
    Ok(out)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// The cases of one file, each with its line; every problem located.
fn parse(path: &Path) -> Result<Vec<(usize, Case)>, Vec<Malformed>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Malformed(format!("{}: cannot read: {e}", path.display()))])?;
    let file: TestFile = toml::from_str(&text).map_err(|e| {
        let (line, col) = crate::location::line_col(&text, e.span().map_or(0, |s| s.start));
        vec![Malformed(format!(
            "{}:{line}:{col}: {}",
            path.display(),
            e.message().trim_end()
        ))]
    })?;
    if file.case.is_empty() {
        return Err(vec![Malformed(format!(
            "{}: no `[[case]]` in the file",
            path.display()
        ))]);
    }
    let mut problems = Vec::new();
    let mut cases = Vec::new();
    for spanned in file.case {
        let (line, _) = crate::location::line_col(&text, spanned.span().start);
        let case = spanned.into_inner();
        let approval_only = case.approvers.is_some() || case.quorum.is_some();
        if case.approved && case.expect == Expect::ApprovalRequired {
            problems.push(Malformed(format!(
                "{}:{line}: case `{}`: an approved request is allowed or denied, never `approval_required`",
                path.display(),
                case.name
            )));
        }
        if approval_only && case.expect != Expect::ApprovalRequired {
            problems.push(Malformed(format!(
                "{}:{line}: case `{}`: `approvers` and `quorum` belong to `expect = \"approval_required\"`",
                path.display(),
                case.name
            )));
        }
        cases.push((line, case));
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems)
    }
}

/// Reads every file first, so that a malformed one stops the run before
/// any case does.
pub fn load(files: &[PathBuf]) -> Result<Suite, Vec<Malformed>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for f in files {
        match parse(f) {
            Ok(cases) => out.push((f.clone(), cases)),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Runs every case.
pub fn run(suite: Suite, config: &Config, store: &PolicyStore) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for (file, cases) in suite {
        for (line, case) in cases {
            let started = Instant::now();
            let decided = case.request.decide(config, store, case.approved);
            let time = started.elapsed();
            let (got, failures) = match decided {
                Ok(d) => {
                    let got = Got::of(&d.verdict);
                    let failures = differences(&case, &got);
                    (Some(got), failures)
                }
                Err(e) => (None, vec![format!("cannot decide the request: {e}")]),
            };
            results.push(CaseResult {
                file: file.clone(),
                line,
                expected: expected(&case),
                passed: failures.is_empty(),
                name: case.name,
                got,
                failures,
                time,
            });
        }
    }
    results
}

fn expected(case: &Case) -> String {
    let mut s = case.expect.as_str().to_owned();
    if case.approved {
        s.push_str(" once approved");
    }
    if let Some(p) = &case.policies {
        s.push_str(&format!(" by [{}]", sorted(p).join(", ")));
    }
    if let Some(a) = &case.approvers {
        s.push_str(&format!(", approvers [{}]", sorted(a).join(", ")));
    }
    if let Some(q) = case.quorum {
        s.push_str(&format!(", quorum {q}"));
    }
    if let Some(r) = &case.reason {
        s.push_str(&format!(", reason containing `{r}`"));
    }
    if case.errors {
        s.push_str(", with evaluation errors");
    }
    s
}

fn sorted(v: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = v.iter().collect();
    set.into_iter().cloned().collect()
}

fn differences(case: &Case, got: &Got) -> Vec<String> {
    let mut out = Vec::new();
    if case.expect != got.decision {
        out.push(format!(
            "decision: expected {}, got {}",
            case.expect.as_str(),
            got.decision.as_str()
        ));
    }
    let set = |label: &str, want: &Option<Vec<String>>, have: &[String], out: &mut Vec<String>| {
        if let Some(want) = want {
            let (want, have) = (sorted(want), sorted(have));
            if want != have {
                let missing: Vec<_> = want.iter().filter(|w| !have.contains(w)).cloned().collect();
                let extra: Vec<_> = have.iter().filter(|h| !want.contains(h)).cloned().collect();
                let mut line = format!(
                    "{label}: expected [{}], got [{}]",
                    want.join(", "),
                    have.join(", ")
                );
                if !missing.is_empty() {
                    line.push_str(&format!("; missing {}", missing.join(", ")));
                }
                if !extra.is_empty() {
                    line.push_str(&format!("; unexpected {}", extra.join(", ")));
                }
                out.push(line);
            }
        }
    };
    set("policies", &case.policies, &got.policies, &mut out);
    set("approvers", &case.approvers, &got.approvers, &mut out);
    if let Some(q) = case.quorum
        && got.quorum != Some(q)
    {
        out.push(format!(
            "quorum: expected {q}, got {}",
            got.quorum.map_or("none".to_owned(), |g| g.to_string())
        ));
    }
    if !got.errors.is_empty() && !case.errors {
        out.push(format!(
            "evaluation errors: {} (set `errors = true` if the case expects them)",
            got.errors.join("; ")
        ));
    }
    if case.errors && got.errors.is_empty() {
        out.push("errors: expected evaluation errors, got none".into());
    }
    if let Some(r) = &case.reason
        && !got.reason.contains(r.as_str())
    {
        out.push(format!(
            "reason: expected text containing `{r}`, got `{}`",
            got.reason
        ));
    }
    out
}

/// Policies of the set that decided no case.
pub fn uncovered(results: &[CaseResult], store: &PolicyStore) -> Vec<String> {
    // A policy that failed decided nothing.
    let hit: BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r.got.as_ref())
        .filter(|g| g.errors.is_empty())
        .flat_map(|g| g.policies.iter().map(String::as_str))
        .collect();
    let loaded = store.current();
    let mut out: Vec<String> = loaded
        .set
        .policies()
        .map(|p| p.id().to_string())
        .filter(|id| !hit.contains(id.as_str()))
        .collect();
    out.sort();
    out
}
