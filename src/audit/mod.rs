//! The audit emission, in one place:
//! - [`sink`]: every approval event becomes its span, metric, webhook and
//!   log line (its audit-stream entry is written by the store in the same
//!   atomic step as the change it records).
//! - [`trail`]: every check becomes its span, log line and, on guarded
//!   actions, its audit-stream entry.
//! - [`record`]: capture mode, a sample of checks as redacted request
//!   descriptions for `policy diff`.
//!
//! Only the essentials are recorded: identities, action, resource, policy
//! ids, approval id and status, shown parameters. Never headers, tokens or
//! bodies.

pub mod record;
pub mod sink;
pub mod trail;

pub use sink::EventSink;
pub use trail::Trail;
