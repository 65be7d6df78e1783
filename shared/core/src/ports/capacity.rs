//! What the capacity port (EC2 and Auto Scaling in AWS) deals in: the tags every Nodewright instance
//! carries, instances as reconciliation sees them, launch results, and the cluster endpoint nodes
//! join.

use std::collections::BTreeMap;

use crate::CapacityType;

/// The cluster an instance belongs to (IAM conditions on this tag too).
pub const TAG_CLUSTER: &str = "nodewright.io/cluster";
/// The NodePool it was launched for.
pub const TAG_POOL: &str = "karpenter.sh/nodepool";
/// The node claim it was launched for (adoption after a crash between launch and record).
pub const TAG_CLAIM: &str = "nodewright.io/claim";
pub const TAG_MANAGED_BY: &str = "nodewright.io/managed-by";
/// The labels its claim chose (a split pool's value, the tenancy), `key=value,...`: what an
/// adopted instance's claim gets back when its record was lost.
pub const TAG_LABELS: &str = "nodewright.io/labels";
/// EC2's longest tag value.
const TAG_VALUE_MAX: usize = 256;

/// `labels` as the [`TAG_LABELS`] value (label keys and values hold no `,` or `=`); None when
/// there are none or they do not fit a tag.
pub fn labels_tag(labels: &BTreeMap<String, String>) -> Option<String> {
    let v = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    (!v.is_empty() && v.len() <= TAG_VALUE_MAX).then_some(v)
}

/// The labels a [`TAG_LABELS`] value holds; entries that are not `key=value` are skipped.
pub fn labels_of_tag(tag: &str) -> BTreeMap<String, String> {
    tag.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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
    /// From [`TAG_LABELS`].
    pub labels: BTreeMap<String, String>,
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

    /// Errors of an account quota, not of one offering. EC2's vCPU quotas are per capacity type
    /// and per class of instance families ([`quota_class`]): the launch gives up on the offerings
    /// of that class and capacity type, and reports them unavailable with one entry
    /// ([`quota_entry`]) that covers them all, so a GPU pool's spent G quota never blocks the
    /// standard types of other pools.
    pub fn exhausts_capacity_type(code: &str) -> bool {
        matches!(code, "MaxSpotInstanceCountExceeded" | "VcpuLimitExceeded")
    }

    /// The zone of an entry that stands for many offerings.
    pub const ANY: &str = "*";
    const QUOTA_PREFIX: &str = "quota:";

    /// EC2's quota class of an instance type (Service Quotas: "Running On-Demand Standard (A, C,
    /// D, H, I, M, R, T, Z) instances", "... G and VT ...", and the same for spot requests).
    pub fn quota_class(instance_type: &str) -> &'static str {
        let family = instance_type.split('.').next().unwrap_or(instance_type);
        let category: String = family.chars().take_while(char::is_ascii_alphabetic).collect();
        match category.as_str() {
            "g" | "vt" => "g-vt",
            "p" => "p",
            "f" => "f",
            "inf" => "inf",
            "trn" => "trn",
            "dl" => "dl",
            "x" => "x",
            "u" => "high-memory",
            "hpc" => "hpc",
            "mac" => "mac",
            _ => "standard",
        }
    }

    /// The unavailable-offering instance type that stands for every type of a quota class.
    pub fn quota_entry(instance_type: &str) -> String {
        format!("{QUOTA_PREFIX}{}", quota_class(instance_type))
    }

    /// Whether an unavailable (capacity type, type, zone) entry covers the offering: the same
    /// offering, or a quota entry of the offering's class.
    pub fn covers(entry: (crate::CapacityType, &str, &str), offering: (crate::CapacityType, &str, &str)) -> bool {
        if entry.0 != offering.0 {
            return false;
        }
        match entry.1.strip_prefix(QUOTA_PREFIX) {
            Some(class) => quota_class(offering.1) == class,
            None => entry.1 == offering.1 && entry.2 == offering.2,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::CapacityType::{OnDemand, Spot};

        #[test]
        fn quota_entries_cover_their_class_and_capacity_type_only() {
            let g = quota_entry("g5.xlarge");
            assert_eq!(g, "quota:g-vt");
            assert!(covers((Spot, &g, ANY), (Spot, "g6.2xlarge", "us-east-1a")));
            assert!(
                !covers((Spot, &g, ANY), (Spot, "m5.large", "us-east-1a")),
                "standard types stay"
            );
            assert!(!covers((Spot, &g, ANY), (OnDemand, "g5.xlarge", "us-east-1a")));
            assert_eq!(quota_class("c7gn.large"), "standard");
            assert_eq!(quota_class("inf2.xlarge"), "inf");
            assert_eq!(quota_class("u-6tb1.metal"), "high-memory");
            assert!(covers(
                (Spot, "m5.large", "us-east-1a"),
                (Spot, "m5.large", "us-east-1a")
            ));
            assert!(!covers(
                (Spot, "m5.large", "us-east-1a"),
                (Spot, "m5.large", "us-east-1b")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_labels_round_trip_through_a_bounded_tag() {
        let labels: BTreeMap<String, String> = [
            ("team".to_string(), "b".to_string()),
            (
                "karpenter.k8s.aws/instance-tenancy".to_string(),
                "dedicated".to_string(),
            ),
        ]
        .into();
        let tag = labels_tag(&labels).unwrap();
        assert_eq!(labels_of_tag(&tag), labels);
        assert_eq!(labels_tag(&BTreeMap::new()), None);
        let long: BTreeMap<String, String> = [("k".to_string(), "v".repeat(300))].into();
        assert_eq!(labels_tag(&long), None, "longer than a tag value");
        assert!(labels_of_tag("garbage,,=x").is_empty());
    }
}
