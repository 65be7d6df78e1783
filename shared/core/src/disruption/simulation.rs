//! The planner's working copy of the cluster: nodes are removed (emptied and cordoned) to ask the
//! scheduler where their pods would go, and the answer is either committed (pods moved, a
//! replacement added as an in-flight node) or rolled back.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};

use super::candidates::{Candidates, classify};
use super::{Action, Input, ManagedNode, Options, Plan, Reason};
use crate::catalogue::{CapacityType, InstanceType};
use crate::model::{Node, Pod};
use crate::scheduler::{self, ClaimPlan, InstanceOption};

pub(super) struct Simulation<'a> {
    pub input: &'a Input<'a>,
    types: BTreeMap<&'a str, &'a InstanceType>,
    pub options: &'a Options,
    pub nodes: Vec<Node>,
    pub removed: Vec<bool>,
    pub price: Vec<f64>,
    /// Karpenter's disruption cost of each node (pods weighted by priority and deletion cost,
    /// scaled by the node's remaining lifetime).
    pub cost: Vec<f64>,
    pub candidates: Candidates,
    pub evaluations: usize,
    replacements: usize,
    /// The types some pool may launch, plus the types of the nodes: all the scheduler needs, and a
    /// fraction of the catalogue (each evaluation prepares over it).
    schedulable_types: &'a [InstanceType],
    /// What every evaluation's preparation shares, with the pools (replacements allowed) and
    /// without (moves onto existing nodes only). Built on first use: most plans on a quiet cluster
    /// evaluate nothing, and building them is a scan of the catalogue per pool.
    with_pools: OnceCell<scheduler::Templates<'a>>,
    without_pools: OnceCell<scheduler::Templates<'a>>,
}

/// No pools: the scheduler may only use existing nodes. One slice, so templates built on it match.
pub(super) const NO_POOLS: &[crate::nodepool::NodePool] = &[];

/// The types some pool may launch plus the types of the nodes (usually the input's list as is:
/// callers pass one already restricted to the pools).
pub(super) fn schedulable_types<'i>(input: &'i Input<'i>) -> std::borrow::Cow<'i, [InstanceType]> {
    let mut node_types: Vec<&str> = input.nodes.iter().map(|n| n.node.instance_type.as_str()).collect();
    node_types.sort_unstable();
    node_types.dedup();
    // Each pool's type requirements picked out once, not once per type (this runs every plan).
    let pools: Vec<Vec<&crate::Requirement>> = input.pools.iter().map(|p| p.type_requirements().collect()).collect();
    let wanted = |t: &InstanceType| {
        pools.iter().any(|reqs| crate::nodepool::admits(reqs, t)) || node_types.binary_search(&t.name.as_str()).is_ok()
    };
    if input.instance_types.iter().all(wanted) {
        std::borrow::Cow::Borrowed(input.instance_types)
    } else {
        std::borrow::Cow::Owned(input.instance_types.iter().filter(|t| wanted(t)).cloned().collect())
    }
}

/// What the scheduler said about a removal.
pub(super) enum Verdict {
    /// Everything fits on the remaining nodes.
    Delete(scheduler::Plan),
    /// Everything fits with exactly one new node, which passed the replacement rules.
    Replace(scheduler::Plan, Box<ClaimPlan>),
    Infeasible,
}

pub(super) fn node_price(node: &Node, types: &BTreeMap<&str, &InstanceType>) -> f64 {
    if let Some(p) = node.price {
        return p;
    }
    let Some(t) = types.get(node.instance_type.as_str()) else {
        return 0.0;
    };
    t.offerings
        .iter()
        .find(|o| o.capacity_type == node.capacity_type && o.zone == node.zone)
        .or_else(|| t.offerings.iter().find(|o| o.capacity_type == node.capacity_type))
        .map(|o| o.price)
        .unwrap_or(0.0)
}

fn pod_cost(p: &Pod) -> f64 {
    (1.0 + f64::from(p.deletion_cost) / f64::from(1u32 << 27) + f64::from(p.priority) / f64::from(1u32 << 25)).max(0.0)
}

impl<'a> Simulation<'a> {
    pub fn new(input: &'a Input<'a>, options: &'a Options, schedulable_types: &'a [InstanceType]) -> Self {
        let types: BTreeMap<&str, &InstanceType> = input.instance_types.iter().map(|t| (t.name.as_str(), t)).collect();
        let pools: BTreeMap<&str, _> = input.pools.iter().map(|p| (p.name.as_str(), p)).collect();
        let nodes: Vec<Node> = input.nodes.iter().map(|m| m.node.clone()).collect();
        let price = nodes.iter().map(|n| node_price(n, &types)).collect();
        let cost = input
            .nodes
            .iter()
            .map(|m| {
                let pods: f64 = m.node.pods.iter().filter(|p| !p.goes_with_node()).map(pod_cost).sum();
                let lifetime = m
                    .node
                    .pool
                    .as_deref()
                    .and_then(|p| pools.get(p))
                    .and_then(|p| p.expire_after_secs)
                    .map_or(1.0, |e| {
                        (1.0 - (input.now - m.created_at) as f64 / e.max(1) as f64).clamp(0.0, 1.0)
                    });
                pods * lifetime
            })
            .collect();
        Simulation {
            input,
            types,
            schedulable_types,
            with_pools: OnceCell::new(),
            without_pools: OnceCell::new(),
            options,
            removed: vec![false; nodes.len()],
            nodes,
            price,
            cost,
            candidates: classify(input),
            evaluations: 0,
            replacements: 0,
        }
    }

    pub fn pool_of(&self, i: usize) -> &str {
        self.nodes[i].pool.as_deref().unwrap_or("")
    }

    pub fn is_empty(&self, i: usize) -> bool {
        self.nodes[i].pods.iter().all(Pod::is_daemonset)
    }

    /// Closes the empty nodes that emptiness will remove (now or once `consolidateAfter` has
    /// passed) to the pods consolidation displaces, in the plan (the drain itself leaves the choice
    /// to the kube-scheduler: docs/disruption.md). Moving a running pod onto a node that is about
    /// to go spends an eviction on a saving that deleting the empty node makes anyway, and makes
    /// that node busy again: after a peak, every empty node would take one displaced pod and
    /// none would go (Karpenter disrupts empty nodes first for the same reason). Nodes that stay
    /// (launching, `do-not-disrupt`, pools that never consolidate) remain destinations.
    pub fn close_emptying(&mut self) {
        let pools: BTreeMap<&str, &crate::nodepool::NodePool> =
            self.input.pools.iter().map(|p| (p.name.as_str(), p)).collect();
        for (i, m) in self.input.nodes.iter().enumerate() {
            let removable = m
                .node
                .pool
                .as_deref()
                .and_then(|p| pools.get(p))
                .is_some_and(|p| p.disruption.consolidate_after_secs.is_some());
            if removable && !m.node.in_flight && !m.do_not_disrupt && !self.removed[i] && self.is_empty(i) {
                self.nodes[i].unschedulable = true;
            }
        }
    }

    /// Utilization of node `i`: the larger of its cpu and memory request fractions.
    pub fn utilization(&self, i: usize) -> f64 {
        let n = &self.nodes[i];
        let alloc = n
            .allocatable
            .as_ref()
            .or_else(|| self.types.get(n.instance_type.as_str()).map(|t| &t.allocatable));
        let Some(alloc) = alloc else {
            return 1.0;
        };
        let used = n.requested();
        let frac = |u: u64, a: u64| if a == 0 { 0.0 } else { u as f64 / a as f64 };
        frac(used.cpu_milli(), alloc.cpu_milli()).max(frac(used.memory(), alloc.memory()))
    }

    /// Empties and cordons the nodes in `set`; returns what was on them.
    fn take(&mut self, set: &[usize]) -> Vec<(usize, Vec<Pod>, bool)> {
        set.iter()
            .map(|&i| {
                let pods = std::mem::take(&mut self.nodes[i].pods);
                let was = std::mem::replace(&mut self.nodes[i].unschedulable, true);
                (i, pods, was)
            })
            .collect()
    }

    fn restore(&mut self, taken: Vec<(usize, Vec<Pod>, bool)>) {
        for (i, pods, was) in taken {
            self.nodes[i].pods = pods;
            self.nodes[i].unschedulable = was;
        }
    }

    /// Asks the scheduler where the pods of `set` would go: onto the remaining nodes only, or with
    /// new nodes allowed. Commits nothing.
    pub fn evaluate(&mut self, set: &[usize], allow_new: bool, reason: Reason) -> Verdict {
        let taken = self.take(set);
        let displaced: Vec<Pod> = taken
            .iter()
            .flat_map(|(_, pods, _)| pods.iter().filter(|p| !p.goes_with_node()).cloned())
            .collect();
        let plan = self.run(&displaced, allow_new);
        self.restore(taken);
        if !plan.unschedulable.is_empty() {
            return Verdict::Infeasible;
        }
        match plan.claims.len() {
            0 => Verdict::Delete(plan),
            1 if allow_new => {
                let claim = plan.claims[0].clone();
                match self.replacement(set, claim, reason) {
                    Some(claim) => Verdict::Replace(plan, Box::new(claim)),
                    None => Verdict::Infeasible,
                }
            }
            _ => Verdict::Infeasible,
        }
    }

    /// Schedules `pods` against the current simulated nodes.
    fn run(&mut self, pods: &[Pod], allow_new: bool) -> scheduler::Plan {
        self.evaluations += 1;
        if pods.is_empty() {
            return scheduler::Plan::default();
        }
        let (pools, cell) = if allow_new {
            (self.input.pools, &self.with_pools)
        } else {
            (NO_POOLS, &self.without_pools)
        };
        let templates = cell.get_or_init(|| {
            scheduler::Templates::with_index(
                self.schedulable_types,
                self.input.type_index,
                pools,
                self.input.daemonsets,
            )
        });
        let input = scheduler::Input {
            pods,
            nodes: &self.nodes,
            pools,
            instance_types: self.schedulable_types,
            daemonsets: self.input.daemonsets,
            pool_usage: &[],
        };
        scheduler::schedule_with(
            &input,
            &scheduler::Options {
                report_bound: false,
                exact: false,
                anchored: false,
                ..scheduler::Options::default()
            },
            Some(templates),
        )
    }

    /// A forceful or drift replacement: the scheduler may add any number of nodes.
    pub fn replace_any(&mut self, i: usize) -> Option<scheduler::Plan> {
        let taken = self.take(&[i]);
        let displaced: Vec<Pod> = taken[0].1.iter().filter(|p| !p.goes_with_node()).cloned().collect();
        let plan = self.run(&displaced, true);
        self.restore(taken);
        plan.unschedulable.is_empty().then_some(plan)
    }

    /// The replacement rules: cheaper by the churn threshold, no instance type already being
    /// removed (for several nodes), spot-to-spot only with enough cheaper types, on-demand to spot
    /// pinned to spot.
    fn replacement(&self, set: &[usize], mut claim: ClaimPlan, reason: Reason) -> Option<ClaimPlan> {
        let removed_price: f64 = set.iter().map(|&i| self.price[i]).sum();
        let cost: f64 = set.iter().map(|&i| self.cost[i]).sum();
        let required = removed_price * self.options.min_saving_fraction + cost * self.options.saving_per_disruption;
        let ceiling = removed_price - required;
        let removed_types: Vec<&str> = set.iter().map(|&i| self.nodes[i].instance_type.as_str()).collect();
        let any_spot = set.iter().any(|&i| self.nodes[i].capacity_type == CapacityType::Spot);
        let mut options: Vec<InstanceOption> = claim
            .instance_types
            .iter()
            .filter(|o| o.price < ceiling - 1e-9)
            .filter(|o| set.len() < 2 || !removed_types.contains(&o.name.as_str()))
            .cloned()
            .collect();
        if reason == Reason::Underutilized || reason == Reason::Empty {
            if any_spot {
                let spot = options.iter().filter(|o| o.capacity_type == CapacityType::Spot).count();
                if spot < self.options.spot_to_spot_min_types {
                    options.retain(|o| o.capacity_type != CapacityType::Spot);
                }
            } else if options.first().is_some_and(|o| o.capacity_type == CapacityType::Spot) {
                options.retain(|o| o.capacity_type == CapacityType::Spot);
            }
        }
        let first = options.first()?;
        claim.price = first.price;
        let mut cts: Vec<CapacityType> = Vec::new();
        for o in &options {
            if !cts.contains(&o.capacity_type) {
                cts.push(o.capacity_type);
            }
        }
        cts.sort();
        claim.capacity_types = cts;
        claim.instance_types = options;
        Some(claim)
    }

    /// Commits a removal: pods move as `plan` says, the nodes leave, replacements join as in-flight
    /// nodes. Returns the action.
    pub fn commit(
        &mut self,
        set: &[usize],
        plan: &scheduler::Plan,
        replacements: Vec<ClaimPlan>,
        reason: Reason,
    ) -> Action {
        let taken = self.take(set);
        let mut pods: HashMap<String, Pod> = taken
            .into_iter()
            .flat_map(|(_, pods, _)| pods.into_iter().filter(|p| !p.goes_with_node()))
            .map(|p| (p.uid.clone(), p))
            .collect();
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut placements = Vec::new();
        let mut moves = Vec::new();
        for b in &plan.bindings {
            if let Some(&target) = index.get(b.node.as_str()) {
                moves.push((b.pod.clone(), target));
                placements.push((b.pod.clone(), b.node.clone()));
            }
        }
        for (uid, target) in moves {
            if let Some(p) = pods.remove(&uid) {
                self.nodes[target].pods.push(p);
            }
        }
        let mut renamed = Vec::new();
        for mut claim in replacements {
            self.replacements += 1;
            claim.id = format!("replacement-{}", self.replacements);
            let Some(option) = claim.instance_types.first().cloned() else {
                continue;
            };
            let mut node = Node::new(&claim.id, &option.name, &option.zone);
            node.pool = Some(claim.pool.clone());
            node.capacity_type = option.capacity_type;
            node.price = Some(option.price);
            node.in_flight = true;
            node.labels = claim.labels.clone();
            for uid in &claim.pods {
                if let Some(p) = pods.remove(uid) {
                    node.pods.push(p);
                }
                placements.push((uid.clone(), claim.id.clone()));
            }
            self.price.push(option.price);
            self.cost.push(0.0);
            self.removed.push(false);
            self.nodes.push(node);
            renamed.push(claim);
        }
        for &i in set {
            self.removed[i] = true;
        }
        let removed_price = set.iter().map(|&i| self.price[i]).sum();
        let replacement_price = renamed.iter().map(|c| c.price).sum();
        Action {
            reason,
            nodes: set.iter().map(|&i| self.nodes[i].name.clone()).collect(),
            replacements: renamed,
            placements,
            removed_price,
            replacement_price,
        }
    }
}

/// Applies a plan to a cluster as if every action completed at `now`, in order: removed nodes
/// leave, replacements join (launched, not in flight), displaced pods land where the plan placed
/// them. The simulator and the planner's property tests use this.
pub fn apply(nodes: &[ManagedNode], plan: &Plan, now: i64) -> Vec<ManagedNode> {
    plan.actions
        .iter()
        .fold(nodes.to_vec(), |state, action| apply_action(state, action, now))
}

fn apply_action(nodes: Vec<ManagedNode>, action: &Action, now: i64) -> Vec<ManagedNode> {
    let (removed, mut out): (Vec<ManagedNode>, Vec<ManagedNode>) =
        nodes.into_iter().partition(|m| action.nodes.contains(&m.node.name));
    let mut pods: HashMap<String, Pod> = removed
        .into_iter()
        .flat_map(|m| m.node.pods.into_iter().filter(|p| !p.goes_with_node()))
        .map(|p| (p.uid.clone(), p))
        .collect();
    for claim in &action.replacements {
        let Some(option) = claim.instance_types.first() else {
            continue;
        };
        let mut node = Node::new(&claim.id, &option.name, &option.zone);
        node.pool = Some(claim.pool.clone());
        node.capacity_type = option.capacity_type;
        node.price = Some(option.price);
        node.labels = claim.labels.clone();
        let mut m = ManagedNode::new(node, now);
        m.last_pod_change_at = Some(now);
        out.push(m);
    }
    let index: HashMap<String, usize> = out.iter().enumerate().map(|(i, m)| (m.node.name.clone(), i)).collect();
    for (uid, target) in &action.placements {
        if let (Some(&i), Some(p)) = (index.get(target), pods.remove(uid)) {
            out[i].node.pods.push(p);
            out[i].last_pod_change_at = Some(now);
        }
    }
    out
}
