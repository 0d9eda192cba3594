//! Approval parameters, written as annotations on a guarded `forbid`:
//!
//! ```cedar
//! @id("exports-need-approval")
//! @approval("deny")                  // or "hold": the marker, and the mode
//! @approvers("data-owners")          // groups an approver must belong to (any of them)
//! @quorum("1")                       // distinct approvers needed
//! @pending_ttl("1h")                 // how long the request may wait for a decision
//! @approval_ttl("15m")               // how long an approval may be used
//! @approval_uses("1")                // how many times
//! @reason_required("true")           // approvers must give a reason
//! @show("format, rows")              // body fields shown to approvers
//! forbid (principal, action == Action::"export", resource)
//!   unless { context.approval.granted };
//! ```

use std::time::Duration;

/// Hold the call until decided, or refuse it at once with an approval id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Deny,
    Hold,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Deny => "deny",
            Mode::Hold => "hold",
        }
    }
}

/// What a guarded policy asks of an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalParams {
    pub mode: Mode,
    pub approver_groups: Vec<String>,
    pub quorum: u32,
    pub pending_ttl: Duration,
    pub approval_ttl: Duration,
    pub uses: u32,
    pub reason_required: bool,
    pub show: Vec<String>,
}

impl Default for ApprovalParams {
    fn default() -> Self {
        Self {
            mode: Mode::Deny,
            approver_groups: vec![],
            quorum: 1,
            pending_ttl: Duration::from_secs(3600),
            approval_ttl: Duration::from_secs(15 * 60),
            uses: 1,
            reason_required: false,
            show: vec![],
        }
    }
}

/// An annotation that cannot be used; names the annotation and the value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("annotation `@{key}(\"{value}\")`: {expected}")]
pub struct AnnotationError {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

/// Annotations this module reads, besides `approval`.
pub const KEYS: &[&str] = &[
    "approvers",
    "quorum",
    "pending_ttl",
    "approval_ttl",
    "approval_uses",
    "reason_required",
    "show",
];

impl ApprovalParams {
    /// Reads the parameters of a policy annotated `@approval(...)`; `None`
    /// when the policy is not guarded.
    pub fn from_annotations<'a>(
        mut get: impl FnMut(&str) -> Option<&'a str>,
    ) -> Option<Result<Self, AnnotationError>> {
        let mode = get("approval")?;
        Some(Self::parse(mode, get))
    }

    fn parse<'a>(
        mode: &str,
        mut get: impl FnMut(&str) -> Option<&'a str>,
    ) -> Result<Self, AnnotationError> {
        let err = |key: &str, value: &str, expected| AnnotationError {
            key: key.into(),
            value: value.into(),
            expected,
        };
        let mut p = ApprovalParams {
            mode: match mode {
                "deny" | "" => Mode::Deny,
                "hold" => Mode::Hold,
                v => return Err(err("approval", v, "expected \"deny\" or \"hold\"")),
            },
            ..Default::default()
        };
        let list = |v: &str| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(v) = get("approvers") {
            p.approver_groups = list(v);
        }
        if let Some(v) = get("show") {
            p.show = list(v);
        }
        if let Some(v) = get("quorum") {
            p.quorum = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or_else(|| err("quorum", v, "expected a whole number from 1 to 16"))?;
        }
        if let Some(v) = get("approval_uses") {
            p.uses =
                v.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    err("approval_uses", v, "expected a whole number of at least 1")
                })?;
        }
        let duration = |key: &str, v: &str| {
            humantime::parse_duration(v.trim())
                .ok()
                .filter(|d| d.as_secs() >= 1)
                .ok_or_else(|| {
                    err(
                        key,
                        v,
                        "expected a duration of at least 1s, such as \"90s\", \"15m\" or \"1h\"",
                    )
                })
        };
        if let Some(v) = get("pending_ttl") {
            p.pending_ttl = duration("pending_ttl", v)?;
        }
        if let Some(v) = get("approval_ttl") {
            p.approval_ttl = duration("approval_ttl", v)?;
        }
        if let Some(v) = get("reason_required") {
            p.reason_required = match v.trim() {
                "true" => true,
                "false" => false,
                _ => return Err(err("reason_required", v, "expected \"true\" or \"false\"")),
            };
        }
        Ok(p)
    }

    /// The rules an approval is given under, in one canonical line: bound
    /// into its fingerprint and kept with it, so that an approval is never
    /// used once the policies that required it, or their parameters, changed.
    pub fn rules(&self, policies: &[String]) -> String {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.join(",")
        };
        format!(
            "policies={} mode={} approvers={} quorum={} pending_ttl={}s approval_ttl={}s uses={} reason_required={} show={}",
            sorted(policies),
            self.mode.as_str(),
            sorted(&self.approver_groups),
            self.quorum,
            self.pending_ttl.as_secs(),
            self.approval_ttl.as_secs(),
            self.uses,
            self.reason_required,
            sorted(&self.show),
        )
    }

    /// Several guarded policies applying to one call: the strictest of each
    /// parameter wins, and an approver must satisfy every policy's groups.
    pub fn merge(all: &[&ApprovalParams]) -> ApprovalParams {
        let mut out = all.first().map(|p| (*p).clone()).unwrap_or_default();
        for p in all.iter().skip(1) {
            if p.mode == Mode::Hold {
                out.mode = Mode::Hold;
            }
            out.quorum = out.quorum.max(p.quorum);
            out.pending_ttl = out.pending_ttl.min(p.pending_ttl);
            out.approval_ttl = out.approval_ttl.min(p.approval_ttl);
            out.uses = out.uses.min(p.uses);
            out.reason_required |= p.reason_required;
            if out.approver_groups.is_empty() {
                out.approver_groups = p.approver_groups.clone();
            } else if !p.approver_groups.is_empty() {
                out.approver_groups
                    .retain(|g| p.approver_groups.contains(g));
                if out.approver_groups.is_empty() {
                    // Disjoint groups: nobody could approve; keep that visible.
                    out.approver_groups
                        .push("(none: the guarding policies name disjoint groups)".into());
                }
            }
            for f in &p.show {
                if !out.show.contains(f) {
                    out.show.push(f.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Option<Result<ApprovalParams, AnnotationError>> {
        let m: HashMap<&str, &str> = pairs.iter().copied().collect();
        ApprovalParams::from_annotations(|k| m.get(k).copied())
    }

    #[test]
    fn defaults_are_one_approver_one_use_within_15_minutes() {
        let p = parse(&[("approval", "")]).unwrap().unwrap();
        assert_eq!(p, ApprovalParams::default());
        assert_eq!((p.quorum, p.uses, p.approval_ttl.as_secs()), (1, 1, 900));
        assert!(parse(&[("id", "x")]).is_none());
    }

    #[test]
    fn every_parameter_is_read() {
        let p = parse(&[
            ("approval", "hold"),
            ("approvers", "security, sre"),
            ("quorum", "2"),
            ("pending_ttl", "10m"),
            ("approval_ttl", "1h"),
            ("approval_uses", "3"),
            ("reason_required", "true"),
            ("show", "format,rows"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.mode, Mode::Hold);
        assert_eq!(p.approver_groups, ["security", "sre"]);
        assert_eq!((p.quorum, p.uses, p.reason_required), (2, 3, true));
        assert_eq!(
            (p.pending_ttl.as_secs(), p.approval_ttl.as_secs()),
            (600, 3600)
        );
        assert_eq!(p.show, ["format", "rows"]);
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let e = parse(&[("approval", "maybe")]).unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"annotation `@approval("maybe")`: expected "deny" or "hold""#
        );
        assert_eq!(
            parse(&[("approval", ""), ("quorum", "0")])
                .unwrap()
                .unwrap_err()
                .key,
            "quorum"
        );
        assert_eq!(
            parse(&[("approval", ""), ("approval_ttl", "soon")])
                .unwrap()
                .unwrap_err()
                .key,
            "approval_ttl"
        );
        assert_eq!(
            parse(&[("approval", ""), ("reason_required", "yes")])
                .unwrap()
                .unwrap_err()
                .key,
            "reason_required"
        );
    }

    #[test]
    fn merging_takes_the_strictest() {
        let a = ApprovalParams {
            quorum: 2,
            approver_groups: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let b = ApprovalParams {
            mode: Mode::Hold,
            uses: 1,
            reason_required: true,
            approver_groups: vec!["b".into()],
            approval_ttl: Duration::from_secs(60),
            ..Default::default()
        };
        let m = ApprovalParams::merge(&[&a, &b]);
        assert_eq!((m.mode, m.quorum, m.reason_required), (Mode::Hold, 2, true));
        assert_eq!(m.approver_groups, ["b"]);
        assert_eq!(m.approval_ttl.as_secs(), 60);
    }
}
