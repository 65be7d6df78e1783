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

/// How a fleet launch goes, for both capacity adapters (EC2's `CreateFleet` in nodewright-aws, and
/// the memory adapter that must fail as it fails): per capacity type, spot first, up to
/// [`MAX_ATTEMPTS_PER_CAPACITY_TYPE`] requests, each with the [`MAX_OVERRIDES`] cheapest offerings
/// left; offerings a request reports without capacity are dropped before the next; a quota error
/// drops the whole request's offerings.
pub mod fleet {
    /// CreateFleet accepts at most this many overrides per request worth sending (Karpenter's cap).
    pub const MAX_OVERRIDES: usize = 60;
    /// Launch requests per capacity type before giving up on it.
    pub const MAX_ATTEMPTS_PER_CAPACITY_TYPE: usize = 4;

    /// EC2's capacity error codes: the offering is (for now) unavailable, try another.
    pub fn is_capacity_error(code: &str) -> bool {
        matches!(
            code,
            "InsufficientInstanceCapacity"
                | "MaxSpotInstanceCountExceeded"
                | "VcpuLimitExceeded"
                | "UnfulfillableCapacity"
                | "Unsupported"
                | "InsufficientFreeAddressesInSubnet"
                | "InsufficientCapacity"
                | "SpotMaxPriceTooLow"
        )
    }

    /// Errors that exhaust a whole capacity type (account quotas), not one offering: the launch
    /// gives up on the capacity type and reports it unavailable as a whole ([`ANY`] type and zone),
    /// as Karpenter marks a capacity type unavailable on a spot quota error.
    pub fn exhausts_capacity_type(code: &str) -> bool {
        matches!(code, "MaxSpotInstanceCountExceeded" | "VcpuLimitExceeded")
    }

    /// The instance type and zone of an unavailable offering that stands for every offering of
    /// its capacity type.
    pub const ANY: &str = "*";

    /// Whether an unavailable (capacity type, type, zone) entry covers the offering.
    pub fn covers(entry: (crate::CapacityType, &str, &str), offering: (crate::CapacityType, &str, &str)) -> bool {
        entry.0 == offering.0
            && ((entry.1 == ANY && entry.2 == ANY) || (entry.1 == offering.1 && entry.2 == offering.2))
    }
}
