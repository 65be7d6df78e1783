//! Nodewright's pure core: the resource and pod model, the EC2 instance catalogue, Karpenter-compatible
//! NodePool configuration, and the provisioning scheduler.
//!
//! Nothing in this crate performs I/O or talks to AWS or Kubernetes: every function maps data to a
//! decision, so the same code runs inside the Lambda functions, the simulator and the CLI, and is
//! tested with plain data. Adapters live in sibling crates.

pub mod catalogue;
pub mod digest;
pub mod disruption;
pub mod labels;
pub mod model;
pub mod nodepool;
pub mod ports;
pub mod quantity;
pub mod registration;
pub mod requirements;
pub mod resources;
pub mod scheduler;
pub mod time;

pub use catalogue::{CapacityType, Catalogue, InstanceType, Offering};
pub use model::{Node, Pod};
pub use nodepool::{Config, NodePool};
pub use requirements::{Operator, Requirement};
pub use resources::{Resource, Resources};

/// Everything that can go wrong in the core. Each variant names the offending field or value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid quantity {value:?}: {reason}")]
    Quantity { value: String, reason: String },

    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error("unknown instance type {0:?} (not in the catalogue)")]
    UnknownInstanceType(String),

    #[error("{source_name}: {reason}")]
    Parse { source_name: String, reason: String },

    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Config(Vec<String>),
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
