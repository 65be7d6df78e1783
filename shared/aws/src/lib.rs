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
mod ports;
pub mod state;

pub use clients::{AwsClients, ClientOptions};
pub use error::{Error, Result};
pub use ports::AwsCapacity;

pub use nodewright_core::ports::{EpochMillis, now_millis};
