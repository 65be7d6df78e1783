//! What the capacity port (EC2 and Auto Scaling in AWS) deals in: the tags every Nodewright instance
//! carries, instances as reconciliation sees them, launch results, and the cluster endpoint nodes
//! join.

use crate::CapacityType;

/// The cluster an instance belongs to (IAM conditions on this tag too).
pub const TAG_CLUSTER: &str = "nodewright.io/cluster";
/// The NodePool it was launched for.
pub const TAG_POOL: &str = "karpenter.sh/nodepool";
/// The node claim it was launched for (adoption after a crash between launch and record).
pub const TAG_CLAIM: &str = "nodewright.io/claim";
pub const TAG_MANAGED_BY: &str = "nodewright.io/managed-by";

/// What reconciliation needs to know about an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSummary {
    pub instance_id: String,
    pub instance_type: String,
    pub zone: String,
    pub state: String,
    pub spot: bool,
    pub claim_id: Option<String>,
    pub pool: Option<String>,
    pub cluster: Option<String>,
    pub launch_time_millis: Option<i64>,
}

/// What a launch did.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOutcome {
    pub instance_id: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub price: Option<f64>,
    /// The instance already existed (a retried launch); nothing new was created.
    pub adopted: bool,
    /// Spot was wanted but exhausted, and on-demand was used.
    pub fell_back_to_on_demand: bool,
    /// Offerings that failed with a capacity error on the way (capacity type, type, zone, code).
    pub unavailable: Vec<(CapacityType, String, String, String)>,
}

/// What nodes need to join the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEndpoint {
    pub name: String,
    pub endpoint: String,
    /// Base64 PEM of the cluster CA, as EKS DescribeCluster returns it.
    pub certificate_authority: String,
    pub service_cidr: Option<String>,
}
