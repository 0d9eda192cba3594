//! Countersign: an Envoy ext_authz sidecar that decides with Cedar.
//!
//! Layout:
//! - [`config`]: the configuration file, environment overrides, validation.
//! - [`request`]: an HTTP request (as Envoy describes it) -> a Cedar request:
//!   principal from JWT / mTLS / trusted header, action and resource from the
//!   route table, context from allow-listed parts.
//! - [`policy`]: load, validate, evaluate and hot-reload Cedar policies.
//! - [`approval`]: approval requests in Redis and their lifecycle.
//! - [`authz`]: the Envoy `Authorization` gRPC service; translates
//!   `CheckRequest` into the domain and decisions back into `CheckResponse`.
//! - [`admin`]: the approvers' gRPC API and its authentication.
//! - [`server`]: serves ext_authz and gRPC health, drains on shutdown;
//!   serves `/metrics`, `/healthz` and `/readyz`.
//! - [`telemetry`]: OpenTelemetry spans for decisions and approval events.
//! - [`metrics`]: Prometheus counters and the scrape text.
//! - [`cli`]: the command-line subcommands.
#![forbid(unsafe_code)]

pub mod admin;
pub mod approval;
pub mod authz;
pub mod cli;
pub mod config;
pub mod location;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod server;
pub mod telemetry;
