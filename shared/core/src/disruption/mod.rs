//! The disruption planner: which nodes to remove or replace, and why — expiry, drift, emptiness and
//! consolidation — within each NodePool's disruption budgets. Pure: nodes, pools and PDBs in, a plan
//! of actions out; the consolidation function executes it (launch replacements first, then drain).
//!
//! Every feasibility question ("can these pods run elsewhere?", "on what one new node?") is answered
//! by the provisioning scheduler itself, so disruption honours exactly the constraints provisioning
//! does (affinity, anti-affinity, spread, taints, limits). The search that decides which nodes to
//! try is documented in `docs/disruption.md`.

mod baseline;
mod candidates;
mod consolidate;
mod resume;
mod schedule;
mod simulation;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::catalogue::InstanceType;
use crate::model::{LabelSelector, Node, Pod};
use crate::nodepool::NodePool;
use crate::scheduler::ClaimPlan;

pub use resume::{MAX_RESUME_BYTES, PendingAction, RESUME_WITHIN_MS, ResumePoint, still_valid};
pub use schedule::{validate_schedule, window_active};
pub use simulation::apply;

/// A node as the disruption planner sees it: the scheduler's node plus its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNode {
    #[serde(flatten)]
    pub node: Node,
    /// When the node was launched (epoch seconds).
    #[serde(default)]
    pub created_at: i64,
    /// When a pod last arrived on or left the node (epoch seconds); consolidateAfter counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pod_change_at: Option<i64>,
    /// `karpenter.sh/do-not-disrupt` on the node itself.
    #[serde(default)]
    pub do_not_disrupt: bool,
    /// Hash of the EC2NodeClass the node was launched from; differs from the current one on drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_class_hash: Option<String>,
    /// Already being disrupted (counts against budgets, is not a candidate).
    #[serde(default)]
    pub disrupting: bool,
}

impl ManagedNode {
    pub fn new(node: Node, created_at: i64) -> Self {
        ManagedNode {
            node,
            created_at,
            last_pod_change_at: None,
            do_not_disrupt: false,
            node_class_hash: None,
            disrupting: false,
        }
    }
}

/// A PodDisruptionBudget, reduced to what blocks eviction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pdb {
    pub name: String,
    pub namespace: String,
    pub selector: LabelSelector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: u32,
}

/// Everything the planner decides from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub nodes: &'a [ManagedNode],
    pub pools: &'a [NodePool],
    pub instance_types: &'a [InstanceType],
    /// [`crate::scheduler::TypeIndex`] of `instance_types`, when the caller keeps one across plans
    /// (ignored if built from another slice).
    pub type_index: Option<&'a crate::scheduler::TypeIndex>,
    pub daemonsets: &'a [Pod],
    pub pdbs: &'a [Pdb],
    /// Current EC2NodeClass hashes by class name (drift detection).
    pub node_class_hashes: &'a BTreeMap<String, String>,
    /// Epoch seconds.
    pub now: i64,
}

/// Which search decides consolidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Nodewright's search (docs/disruption.md).
    #[default]
    Nodewright,
    /// Karpenter's documented behaviour: one multi-node command from a binary search over the first
    /// 100 candidates by disruption cost, else one single-node command (benchmark baseline).
    Karpenter,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub strategy: Strategy,
    /// A replacement must cost at most `(1 - this)` of what it replaces (churn control).
    pub min_saving_fraction: f64,
    /// Spot-to-spot replacement needs at least this many cheaper instance types (Karpenter: 15).
    pub spot_to_spot_min_types: usize,
    /// Most nodes replaced by one new node.
    pub max_multi_node: usize,
    /// $/h a consolidation must save per unit of disruption cost (pods moved, weighted by priority
    /// and deletion cost) on top of the fraction: moving many important pods must pay for itself.
    pub saving_per_disruption: f64,
    /// Bound on feasibility evaluations (scheduler runs) per plan.
    pub max_evaluations: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strategy: Strategy::Nodewright,
            min_saving_fraction: 0.05,
            spot_to_spot_min_types: 15,
            max_multi_node: 100,
            saving_per_disruption: 0.0005,
            max_evaluations: 64,
        }
    }
}

impl Options {
    pub fn karpenter() -> Self {
        Options {
            strategy: Strategy::Karpenter,
            min_saving_fraction: 0.0,
            saving_per_disruption: 0.0,
            ..Options::default()
        }
    }
}

/// Why nodes are disrupted. Budgets name the last three; expiry is forceful and ignores budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    Expired,
    Drifted,
    Empty,
    Underutilized,
}

/// One disruption: remove `nodes`, launching `replacements` first; displaced pods go where
/// `placements` says (an existing node's name or a replacement's claim id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub reason: Reason,
    pub nodes: Vec<String>,
    pub replacements: Vec<ClaimPlan>,
    /// (pod uid, node name or replacement claim id)
    pub placements: Vec<(String, String)>,
    /// $/h of the removed nodes.
    pub removed_price: f64,
    /// $/h of the replacements.
    pub replacement_price: f64,
}

impl Action {
    /// $/h saved (negative for forceful replacements that cost more).
    pub fn saving(&self) -> f64 {
        self.removed_price - self.replacement_price
    }

    pub fn is_delete(&self) -> bool {
        self.replacements.is_empty()
    }
}

/// A node that is not a candidate, and why (for operators: "why wasn't this consolidated?").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blocked {
    pub node: String,
    pub reason: String,
}

/// The planner's decision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub actions: Vec<Action>,
    pub blocked: Vec<Blocked>,
    /// Busy nodes of Auto Scaling pools, to protect from the group's own scale-in (so the group
    /// never picks a node with pods when its desired capacity drops).
    pub protect: Vec<String>,
    /// Scheduler runs the plan took.
    pub evaluations: usize,
}

impl Plan {
    /// $/h saved by the whole plan.
    pub fn saving(&self) -> f64 {
        self.actions.iter().map(Action::saving).sum()
    }

    pub fn disrupted_nodes(&self) -> usize {
        self.actions.iter().map(|a| a.nodes.len()).sum()
    }
}

/// Plans disruption for the cluster in `input`.
pub fn plan(input: &Input<'_>, options: &Options) -> Plan {
    let types = simulation::schedulable_types(input);
    let mut state = simulation::Simulation::new(input, options, &types);
    let mut out = Plan {
        blocked: state.candidates.blocked.clone(),
        ..Plan::default()
    };
    // Forceful first (not budgeted), then drift, emptiness and consolidation (budgeted).
    consolidate::replace_each(&mut state, Reason::Expired, &mut out.actions);
    consolidate::replace_each(&mut state, Reason::Drifted, &mut out.actions);
    consolidate::delete_empty(&mut state, &mut out.actions);
    match options.strategy {
        Strategy::Nodewright => consolidate::underutilized(&mut state, &mut out.actions),
        Strategy::Karpenter => baseline::underutilized(&mut state, &mut out.actions),
    }
    out.evaluations = state.evaluations;
    out.protect = busy_asg_nodes(input);
    out
}

/// What a plan depends on: the nodes with their pods and history, the DaemonSets, the PDBs, the
/// pools and class hashes, and what `now` makes of them (which nodes are candidates for which
/// reason, which budgets are active and what they allow). Under the same catalogue and options (not
/// hashed: the caller's fixed settings, and the catalogue is large), two inputs with one
/// fingerprint plan alike, but for the slow drift of a node's remaining lifetime in its disruption
/// cost. `None` when the input cannot be hashed (then
/// nothing may be skipped).
pub fn fingerprint(input: &Input<'_>) -> Option<u64> {
    let mut w = HashWriter(DefaultHasher::new());
    serde_json::to_writer(
        &mut w,
        &(
            input.nodes,
            input.daemonsets,
            input.pdbs,
            input.pools,
            input.node_class_hashes,
        ),
    )
    .ok()?;
    let c = candidates::classify(input);
    (&c.expired, &c.drifted, &c.consolidatable, &c.budget).hash(&mut w.0);
    Some(w.0.finish())
}

/// Feeds serialized bytes to a hasher (no buffer of the whole input).
struct HashWriter(DefaultHasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Nodes of Auto Scaling pools that run pods (daemonset pods aside).
pub fn busy_asg_nodes(input: &Input<'_>) -> Vec<String> {
    input
        .nodes
        .iter()
        .filter(|m| {
            input.pools.iter().any(|p| {
                Some(p.name.as_str()) == m.node.pool.as_deref()
                    && matches!(p.backing, crate::nodepool::PoolBacking::AutoScalingGroup { .. })
            })
        })
        .filter(|m| m.node.pods.iter().any(|p| !p.goes_with_node()))
        .map(|m| m.node.name.clone())
        .collect()
}
