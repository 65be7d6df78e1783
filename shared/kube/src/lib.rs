//! Nodewright's Kubernetes adapter: how the Lambda functions reach an EKS cluster (a SigV4 token
//! from the function's IAM role, endpoint and CA from configuration or `DescribeCluster`), and the
//! exact reads and writes they make: unschedulable pods, nodes, pods per node, daemonsets and PDBs;
//! cordon, taint, label, PDB-respecting drain and node deletion.
//!
//! Conversion of Kubernetes objects into the core model lives in the core crate
//! (`nodewright_core::model::*_from_k8s`); this crate only moves them over the wire. Every list call
//! paginates, every call has a timeout, and errors are typed so callers can decide.

mod cluster;
mod connect;
mod drain;
mod error;
pub mod objects;
mod port;
pub mod token;

pub use cluster::{Cluster, DEFAULT_PAGE_SIZE};
pub use connect::{Access, Connection, ca_from_base64_pem};
pub use error::{Error, Result};
pub use nodewright_core::ports::cluster::{
    ClusterNode, DISRUPTED_TAINT, DrainMode, DrainOptions, DrainReport, INTERRUPTED_TAINT, Listed, Rejected,
    cluster_node,
};
pub use port::KubeCluster;
