//! Countersign: an Envoy ext_authz sidecar that decides with Cedar and holds
//! privileged calls until a human approves them.
//!
//! Layout: one decision core, many front doors.
//! - [`gate`]: the decision core. [`gate::Gate::decide`] takes an
//!   [`gate::AccessRequest`] and returns an [`gate::Outcome`] (allow, deny,
//!   approval required, unavailable, invalid); knows nothing of Envoy, gRPC
//!   or HTTP status codes. The Check path is here.
//! - [`authz`]: front door for Envoy's ext_authz: `CheckRequest` ->
//!   `AccessRequest`, `Outcome` -> `CheckResponse` (and the lenient wire
//!   decoder).
//! - [`admin`]: front door for approvers: the gRPC admin API; authenticates
//!   and translates protobuf to the lifecycle.
//! - [`approval`]: the approval lifecycle ([`approval::Lifecycle`]: open,
//!   rule with separation of duties and quorum, consume, hold, expire), its
//!   events ([`approval::ApprovalEvent`]), who may rule
//!   ([`approval::approvers`]), and the stores behind one trait
//!   ([`approval::ApprovalStore`]): Redis (one node or a cluster;
//!   `approval/redis/`, Lua scripts in `approval/redis/lua/`) and memory
//!   (tests, fuzzer, benches).
//! - [`audit`]: the audit emission: each approval event's span, metric
//!   and log line ([`audit::EventSink`]); each check's span, log line
//!   and audit entry ([`audit::Trail`]).
//! - [`notifications`]: telling people of approval events: channels
//!   (webhooks; Slack) fed by a durable outbox on the audit stream.
//! - [`slack`]: front door for approvers in Slack: requests posted with
//!   Approve / Deny buttons (a notification channel) and the signed
//!   interactivity endpoint that rules through the lifecycle.
//! - [`idp`]: approvers' identity provider: its metadata and keys, and ID
//!   tokens verified into approvers (used by [`admin`] and `countersign
//!   login`).
//! - [`policy`]: load, validate, evaluate and hot-reload Cedar policies.
//! - [`request`]: an HTTP request -> a Cedar request: principal from JWT /
//!   mTLS / trusted header, action and resource from the route table,
//!   context from allow-listed parts.
//! - [`config`]: the configuration file, environment overrides, validation.
//! - [`server`]: serves the front doors and the probes; [`server::run`]
//!   wires a whole sidecar onto listeners the caller bound.
//! - [`telemetry`]: OpenTelemetry export and trace-context propagation.
//! - [`metrics`]: Prometheus counters and the scrape text.
//! - [`clock`], [`location`]: small shared helpers; [`text`]: values made
//!   safe to show people (terminal escapes, Slack mrkdwn).
//! - [`cli`]: the command-line subcommands.
#![forbid(unsafe_code)]

pub mod admin;
pub mod approval;
pub mod audit;
pub mod authz;
pub mod authzen;
pub mod cli;
pub mod clock;
pub mod config;
pub mod gate;
pub mod idp;
pub mod location;
pub mod mcp;
pub mod metrics;
pub mod notifications;
pub mod policy;
pub mod request;
pub mod server;
pub mod slack;
pub mod telemetry;
pub mod text;
