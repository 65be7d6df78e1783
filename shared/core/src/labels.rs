//! Well-known node label keys (Kubernetes, Karpenter and Karpenter's AWS provider), and the
//! Nodewright-specific ones.

pub const NODEPOOL: &str = "karpenter.sh/nodepool";
pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const REGION: &str = "topology.kubernetes.io/region";
pub const ZONE_ID: &str = "topology.k8s.aws/zone-id";
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const ARCH: &str = "kubernetes.io/arch";
pub const OS: &str = "kubernetes.io/os";
pub const HOSTNAME: &str = "kubernetes.io/hostname";

pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
pub const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
pub const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
pub const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
pub const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
pub const INSTANCE_CPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-cpu-manufacturer";
pub const INSTANCE_MEMORY: &str = "karpenter.k8s.aws/instance-memory";
pub const INSTANCE_NETWORK_BANDWIDTH: &str = "karpenter.k8s.aws/instance-network-bandwidth";
pub const INSTANCE_LOCAL_NVME: &str = "karpenter.k8s.aws/instance-local-nvme";
pub const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
pub const INSTANCE_GPU_NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
pub const INSTANCE_GPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
pub const INSTANCE_GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
pub const INSTANCE_GPU_MEMORY: &str = "karpenter.k8s.aws/instance-gpu-memory";
pub const INSTANCE_ACCELERATOR_NAME: &str = "karpenter.k8s.aws/instance-accelerator-name";
pub const INSTANCE_ACCELERATOR_MANUFACTURER: &str = "karpenter.k8s.aws/instance-accelerator-manufacturer";
pub const INSTANCE_ACCELERATOR_COUNT: &str = "karpenter.k8s.aws/instance-accelerator-count";
pub const INSTANCE_EBS_BANDWIDTH: &str = "karpenter.k8s.aws/instance-ebs-bandwidth";
pub const INSTANCE_ENCRYPTION_IN_TRANSIT: &str = "karpenter.k8s.aws/instance-encryption-in-transit-supported";
pub const INSTANCE_CPU_SUSTAINED_CLOCK_SPEED: &str = "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz";
pub const INSTANCE_CAPABILITY_FLEX: &str = "karpenter.k8s.aws/instance-capability-flex";
/// EC2 tenancy of the instance: `default` (shared hardware) or `dedicated`. Chosen per claim, not a
/// property of the type: a pool that does not restrict it launches `default` unless a pod
/// requires `dedicated` (Karpenter's `getTenancyType`).
pub const INSTANCE_TENANCY: &str = "karpenter.k8s.aws/instance-tenancy";
/// The tenancies EC2 launches into, the default first.
pub const TENANCIES: &[&str] = &["default", "dedicated"];

/// Pod or node annotation that blocks voluntary disruption.
/// Taints a node carries only until it is ready: the kubelet's not-ready and unreachable, the
/// cloud provider's uninitialized, and Karpenter's unregistered (Karpenter ignores them on a node
/// that is not yet initialized).
pub const EPHEMERAL_TAINTS: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.cloudprovider.kubernetes.io/uninitialized",
    "karpenter.sh/unregistered",
];

pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// Pod annotation that lowers or raises the cost of evicting a pod.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Keys whose value is a property of the instance type (and so known before launch).
pub const INSTANCE_TYPE_KEYS: &[&str] = &[
    INSTANCE_TYPE,
    ARCH,
    OS,
    INSTANCE_CATEGORY,
    INSTANCE_FAMILY,
    INSTANCE_GENERATION,
    INSTANCE_SIZE,
    INSTANCE_CPU,
    INSTANCE_CPU_MANUFACTURER,
    INSTANCE_MEMORY,
    INSTANCE_NETWORK_BANDWIDTH,
    INSTANCE_LOCAL_NVME,
    INSTANCE_HYPERVISOR,
    INSTANCE_GPU_NAME,
    INSTANCE_GPU_MANUFACTURER,
    INSTANCE_GPU_COUNT,
    INSTANCE_GPU_MEMORY,
    INSTANCE_ACCELERATOR_NAME,
    INSTANCE_ACCELERATOR_MANUFACTURER,
    INSTANCE_ACCELERATOR_COUNT,
    INSTANCE_EBS_BANDWIDTH,
    INSTANCE_ENCRYPTION_IN_TRANSIT,
    INSTANCE_CPU_SUSTAINED_CLOCK_SPEED,
    INSTANCE_CAPABILITY_FLEX,
];

/// Every well-known key a NodePool requirement may use without a warning.
pub fn is_well_known(key: &str) -> bool {
    INSTANCE_TYPE_KEYS.contains(&key)
        || [
            NODEPOOL,
            CAPACITY_TYPE,
            ZONE,
            REGION,
            ZONE_ID,
            HOSTNAME,
            INSTANCE_TENANCY,
        ]
        .contains(&key)
}

/// Deprecated node label keys Kubernetes still sets and users still write, and the stable key each
/// stands for: Karpenter normalizes them in requirements (`NormalizedLabels`), and so do we, in
/// NodePool requirements and in pods' node selectors, node affinity and topology keys.
pub const NORMALIZED: &[(&str, &str)] = &[
    ("failure-domain.beta.kubernetes.io/zone", ZONE),
    ("failure-domain.beta.kubernetes.io/region", REGION),
    ("beta.kubernetes.io/arch", ARCH),
    ("beta.kubernetes.io/os", OS),
    ("beta.kubernetes.io/instance-type", INSTANCE_TYPE),
    // The EBS CSI driver's topology key (Karpenter's AWS provider normalizes it to the zone).
    ("topology.ebs.csi.aws.com/zone", ZONE),
];

/// The stable key for `key` ([`NORMALIZED`]), or `key` itself.
pub fn normalized(key: &str) -> &str {
    NORMALIZED
        .iter()
        .find(|(old, _)| *old == key)
        .map_or(key, |(_, stable)| stable)
}

/// Keys Karpenter refuses in NodePool requirements/labels because the system owns them.
pub fn is_restricted(key: &str) -> bool {
    key == HOSTNAME || key == NODEPOOL || key.starts_with("nodewright.io/")
}
