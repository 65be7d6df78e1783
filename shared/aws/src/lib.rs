//! Nodewright's AWS adapters: the memory (DynamoDB state: node claims, pod reservations, event
//! idempotency, unavailable offerings, pool usage) and the hands (EC2 fleet launches, guarded
//! termination, launch templates, Auto Scaling pools, price refresh).
//!
//! Every call goes through the real aws-sdk crates; the decisions those calls carry out are made in
//! `nodewright-core`. Tests run these adapters against moto server and, for faults moto cannot
//! produce, against aws-smithy-mocks.

pub mod capacity;
mod clients;
mod error;
pub mod state;

pub use clients::{AwsClients, ClientOptions};
pub use error::{Error, Result};

/// Milliseconds since the Unix epoch. Every time in the adapters is passed in explicitly (never read
/// from the clock inside) so that TTLs and lifecycle ordering are testable.
pub type EpochMillis = i64;

/// The current time, for callers at the edge (Lambda handlers, the CLI).
pub fn now_millis() -> EpochMillis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
