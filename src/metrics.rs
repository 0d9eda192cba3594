//! Prometheus metrics. Counters the hot path touches are resolved once at
//! start-up, so a check increments atomics and takes no lock; values that
//! live elsewhere (reloads, dropped spans, pending approvals) are read when
//! scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::approval::{ApprovalStore, EventKind};
use crate::policy::PolicyStore;

/// Outcomes a check is counted under (`countersign.decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    Allow,
    Deny,
    ApprovalRequired,
    /// Could not decide (store unavailable, audit not written): denied.
    Error,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Deny => "deny",
            DecisionKind::ApprovalRequired => "approval_required",
            DecisionKind::Error => "error",
        }
    }
}

/// Every decision kind, in index order.
const KINDS: [DecisionKind; 4] = [
    DecisionKind::Allow,
    DecisionKind::Deny,
    DecisionKind::ApprovalRequired,
    DecisionKind::Error,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// By shadow (false, true), then decision.
    checks: [[IntCounter; 4]; 2],
    /// Shadow decisions, by what the policies decided.
    shadow: [IntCounter; 4],
    latency: Histogram,
    approvals: Vec<IntCounter>,
    redis_errors: IntCounter,
    audit_failures: IntCounter,
    audit_longest: IntGauge,
    audit_guard: IntGauge,
    audit_guard_trims: IntCounter,
    pending_cap_refusals: IntCounter,
    notifications: IntCounterVec,
    slack_requests: IntCounterVec,
    spans_dropped: Option<Arc<AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    pub fn new(spans_dropped: Option<Arc<AtomicU64>>) -> Self {
        let registry = Registry::new();
        // INVARIANT: names, labels and buckets below are constant and valid.
        let checks = IntCounterVec::new(
            Opts::new(
                "countersign_checks_total",
                "Checks decided, by the decision the caller got; shadow=\"true\": the policies decided otherwise (shadow mode, @shadow policies).",
            ),
            &["decision", "shadow"],
        )
        .expect("valid metric");
        let shadow = IntCounterVec::new(
            Opts::new(
                "countersign_shadow_decisions_total",
                "Shadow decisions, by what the policies decided while the caller got another answer.",
            ),
            &["decision"],
        )
        .expect("valid metric");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "countersign_check_duration_seconds",
                "Time from receiving a check to answering it (holds included).",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 5.0, 30.0,
            ]),
        )
        .expect("valid metric");
        let approvals = IntCounterVec::new(
            Opts::new(
                "countersign_approval_events_total",
                "Approval events this instance caused, by event.",
            ),
            &["event"],
        )
        .expect("valid metric");
        let redis_errors = IntCounter::new(
            "countersign_redis_errors_total",
            "Approval store or audit stream operations that failed or timed out.",
        )
        .expect("valid metric");
        let audit_failures = IntCounter::new(
            "countersign_audit_write_failures_total",
            "Guarded decisions denied because the audit stream could not be written.",
        )
        .expect("valid metric");
        let audit_longest = IntGauge::new(
            "countersign_audit_stream_entries",
            "Entries in the longest audit stream (one per shard), as of the last sweep; compare with countersign_audit_stream_guard_entries.",
        )
        .expect("valid metric");
        let audit_guard = IntGauge::new(
            "countersign_audit_stream_guard_entries",
            "The memory guard of one audit stream (audit.max_entries / 16): past it the oldest entries are trimmed whatever their age.",
        )
        .expect("valid metric");
        let audit_guard_trims = IntCounter::new(
            "countersign_audit_guard_trims_total",
            "Audit entries trimmed by the memory guard before audit.max_age (alert on any).",
        )
        .expect("valid metric");
        let pending_cap_refusals = IntCounter::new(
            "countersign_approval_requests_refused_total",
            "Approval requests not opened: the principal had approvals.max_pending_per_principal pending.",
        )
        .expect("valid metric");
        let notifications = IntCounterVec::new(
            Opts::new(
                "countersign_notifications_total",
                "Notification deliveries this instance attempted, by channel and result: delivered; failed (tried again later); gave_up (failed past notifications.give_up_after, or rejected for good); lost (trimmed from the audit stream before delivery).",
            ),
            &["channel", "result"],
        )
        .expect("valid metric");
        let slack_requests = IntCounterVec::new(
            Opts::new(
                "countersign_slack_requests_total",
                "Requests to the Slack interactivity endpoint, by result: ruled (a vote recorded); reason_asked (the reason modal opened); refused (the ruling was not recorded: who clicked may not rule, the request is decided, a reason is missing; the clicker was told); unverified (bad or missing signature, timestamp outside 5 minutes); replayed; foreign (another workspace or app); invalid (not an interactivity payload); unavailable (the approval store did not answer); ignored (an interaction countersign does not handle).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(notifications.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(slack_requests.clone()),
            Box::new(checks.clone()),
            Box::new(audit_longest.clone()),
            Box::new(audit_guard.clone()),
            Box::new(audit_guard_trims.clone()),
            Box::new(pending_cap_refusals.clone()),
            Box::new(shadow.clone()),
            Box::new(latency.clone()),
            Box::new(approvals.clone()),
            Box::new(redis_errors.clone()),
            Box::new(audit_failures.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        let by = |shadow: &str| KINDS.map(|d| checks.with_label_values(&[d.as_str(), shadow]));
        Self {
            inner: Arc::new(Inner {
                checks: [by("false"), by("true")],
                shadow: KINDS.map(|d| shadow.with_label_values(&[d.as_str()])),
                latency,
                approvals: EventKind::ALL
                    .iter()
                    .map(|e| approvals.with_label_values(&[e.as_str()]))
                    .collect(),
                redis_errors,
                audit_failures,
                audit_longest,
                audit_guard,
                audit_guard_trims,
                pending_cap_refusals,
                notifications,
                slack_requests,
                spans_dropped,
                registry,
            }),
        }
    }

    /// Counts a check under the `decision` the caller got; `shadow`: what
    /// the policies decided, where that differs.
    pub fn check(&self, decision: DecisionKind, shadow: Option<DecisionKind>, took: Duration) {
        self.inner.checks[usize::from(shadow.is_some())][decision as usize].inc();
        if let Some(would) = shadow {
            self.inner.shadow[would as usize].inc();
        }
        self.inner.latency.observe(took.as_secs_f64());
    }

    pub fn approval_event(&self, event: EventKind) {
        if let Some(i) = EventKind::ALL.iter().position(|e| *e == event) {
            self.inner.approvals[i].inc();
        }
    }

    /// One notification delivery to `channel` came to `result`.
    pub fn notification(&self, channel: &str, result: &str, n: u64) {
        self.inner
            .notifications
            .with_label_values(&[channel, result])
            .inc_by(n);
    }

    /// One request to the Slack interactivity endpoint came to `result`.
    pub fn slack_request(&self, result: &'static str) {
        self.inner.slack_requests.with_label_values(&[result]).inc();
    }

    pub fn redis_error(&self) {
        self.inner.redis_errors.inc();
    }

    pub fn audit_failure(&self) {
        self.inner.audit_failures.inc();
    }

    /// What a sweep found of the audit streams' size and memory guard.
    pub fn audit_guard(&self, swept: &crate::approval::store::Swept) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if swept.audit_guard > 0 {
            self.inner.audit_longest.set(gauge(swept.audit_longest));
            self.inner.audit_guard.set(gauge(swept.audit_guard));
        }
        self.inner.audit_guard_trims.inc_by(swept.audit_trimmed);
    }

    /// An approval request refused: its principal was at its cap.
    pub fn pending_cap_refusal(&self) {
        self.inner.pending_cap_refusals.inc();
    }

    /// The text exposition, with the values read at scrape time.
    pub async fn render(&self, policies: &PolicyStore, approvals: &dyn ApprovalStore) -> String {
        // Only when approvals are in use, so that a sidecar without Redis
        // does not fail every scrape.
        let pending = if policies.current().guards.is_empty() {
            None
        } else {
            match approvals.pending_count().await {
                Ok(n) => Some(n),
                Err(_) => {
                    self.redis_error();
                    None
                }
            }
        };
        let mut out = Vec::new();
        // INVARIANT: the text encoder writes to a Vec, which cannot fail.
        let _ = prometheus::TextEncoder::new().encode(&self.inner.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        let stats = &policies.stats;
        let mut line = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in samples {
                text.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        line(
            "countersign_policy_reloads_total",
            "counter",
            "Policy reloads, by result; a failed reload keeps the last good set.",
            &[
                ("{result=\"ok\"}", stats.reloads.load(Ordering::Relaxed)),
                (
                    "{result=\"failed\"}",
                    stats.failures.load(Ordering::Relaxed),
                ),
            ],
        );
        line(
            "countersign_policy_ready",
            "gauge",
            "1 while a valid policy set is in force; 0 means every check is denied.",
            &[("", u64::from(policies.is_ready()))],
        );
        line(
            "countersign_policies_loaded",
            "gauge",
            "Policies in the set in force.",
            &[("", policies.current().set.policies().count() as u64)],
        );
        if let Some(d) = &self.inner.spans_dropped {
            line(
                "countersign_spans_dropped_total",
                "counter",
                "Spans dropped because the export queue was full or the collector failed.",
                &[("", d.load(Ordering::Relaxed))],
            );
        }
        if let Some(n) = pending {
            line(
                "countersign_approvals_pending",
                "gauge",
                "Approval requests waiting for a decision.",
                &[("", n)],
            );
        }
        text
    }
}
