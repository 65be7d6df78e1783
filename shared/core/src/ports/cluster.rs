//! What the cluster port (the Kubernetes API) deals in: nodes as the functions see them, lists with
//! the objects the core model could not take, and how a drain is asked for and what it did.

use std::time::Duration;

use k8s_openapi::api::core::v1 as k8s;

use crate::model;
use crate::registration::UNREGISTERED_TAINT;

/// The taint on a node Nodewright is disrupting (consolidation, expiry, drift).
pub const DISRUPTED_TAINT: &str = "nodewright.io/disrupted";
/// The taint on a node whose instance is being interrupted (spot, rebalance, scheduled change).
pub const INTERRUPTED_TAINT: &str = "nodewright.io/interrupted";

/// A list converted into the core model, with the objects that could not be converted kept aside
/// (one bad pod must not stop provisioning for the others).
#[derive(Debug, Clone, Default)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub rejected: Vec<Rejected>,
}

/// An object the core model could not take, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub name: String,
    pub reason: String,
}

/// A node as the functions need it: the core model plus what links it to EC2 and to a claim.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub node: model::Node,
    /// From `spec.providerID` (`aws:///zone/i-...`): what links a Node to its claim.
    pub instance_id: Option<String>,
    pub ready: bool,
    /// Still carries the unregistered taint (its claim has not labelled it yet).
    pub unregistered: bool,
}

/// A Kubernetes Node as the functions see it: the core model, its instance (from providerID),
/// readiness and registration.
pub fn cluster_node(n: &k8s::Node, path: &str) -> crate::Result<ClusterNode> {
    Ok(ClusterNode {
        node: model::node_from_k8s(n, path)?,
        instance_id: n
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(model::instance_id_from_provider_id)
            .map(str::to_string),
        ready: model::node_is_ready(n),
        unregistered: n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == UNREGISTERED_TAINT)),
    })
}

/// Why the node is being drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// Nodewright chose to disrupt (consolidation, drift, expiry): do-not-disrupt pods veto it.
    Voluntary,
    /// The instance is going away (spot interruption, scheduled maintenance): evict what can be
    /// evicted, leave do-not-disrupt pods alone.
    Forced,
}

/// How long and how patiently to drain.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    pub mode: DrainMode,
    /// Give up retrying PDB-blocked evictions after this long.
    pub deadline: Duration,
    /// First wait after a 429; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The pool's terminationGracePeriod has run out for this node: delete instead of evict.
    pub grace_expired: bool,
}

impl DrainOptions {
    pub fn new(mode: DrainMode, deadline: Duration) -> Self {
        DrainOptions {
            mode,
            deadline,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            grace_expired: false,
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// `namespace/name` of pods evicted (or already gone).
    pub evicted: Vec<String>,
    /// Pods deleted directly because the termination grace period ran out.
    pub deleted: Vec<String>,
    /// Pods not touched: DaemonSet, mirror, finished, already terminating, or do-not-disrupt in a
    /// forced drain.
    pub skipped: Vec<String>,
    /// Eviction attempts refused by a PDB (429) before the drain finished.
    pub pdb_retries: u32,
    /// Pods whose eviction (or deletion) failed for another reason, with the last error: logged
    /// and left for the next drain, never fatal to the rest.
    pub failed: Vec<(String, String)>,
}
