//! The scheduling model: pods, nodes, taints, tolerations, selectors and topology constraints, and
//! their conversion from Kubernetes objects and from Nodewright's compact form.

mod claim;
pub mod claim_launch;
pub mod cluster_event;
mod k8s;
mod load;
mod node;
mod pod;

pub use claim::{ClaimState, Transition};
pub use k8s::{
    daemonset_pod_from_k8s, instance_id_from_provider_id, is_daemonset_pod, is_instance_id, is_mirror_pod, is_terminal,
    is_unschedulable, node_from_k8s, node_is_ready, pdb_from_k8s, pod_from_k8s, pods_from_workload_value,
    taint_from_k8s,
};
pub use load::{MAX_INPUT_BYTES, PodFile, documents, load_nodes, load_pods};
pub use node::{Node, NodeLabels};
pub use pod::{
    Effect, HostPort, LabelSelector, NodeInclusionPolicy, OwnerRef, Pod, PodAffinityTerm, PreferredTerm,
    SpreadConstraint, Taint, Toleration, TolerationOperator, WeightedPodAffinityTerm, WhenUnsatisfiable,
    add_host_ports, first_untolerated,
};
