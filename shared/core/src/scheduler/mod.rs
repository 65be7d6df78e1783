//! The provisioning scheduler: decides where pending pods go — onto existing or in-flight capacity,
//! or onto new node claims — and which instance types each new claim may launch as.
//!
//! The default strategy ([`Strategy::CostAware`]) is Nodewright's own packing (see
//! `docs/scheduler.md`): pods with identical constraints and requests are grouped into buckets;
//! pods that must be alone on a node seed claims first; each new claim picks the instance type with
//! the lowest price per pod of the demand it can absorb, and is then filled largest bucket first.
//! [`Strategy::FirstFitDecreasing`] reimplements Karpenter's documented algorithm as a baseline
//! for the benchmarks. Both share constraint handling and produce the same [`Plan`] shape, and both
//! are deterministic: the same input gives the same plan.

mod anchored;
mod claim;
mod exact;
mod exchange;
mod ffd;
mod finish;
pub mod lower_bound;
mod pack;
mod patterns;
mod pools;
mod preferred;
mod prepare;
mod signature;
mod topology;
mod tuning;
mod typeset;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalogue::{CapacityType, InstanceType};
use crate::model::{Node, Pod};
use crate::nodepool::NodePool;
use crate::resources::Resources;

pub use prepare::{Templates, TypeIndex};
pub use typeset::TypeSet;

/// At most this many instance types are sent with a claim (EC2 CreateFleet overrides).
pub const MAX_INSTANCE_TYPES: usize = 60;

/// Everything the scheduler decides from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Pods waiting for capacity.
    pub pods: &'a [Pod],
    /// Existing nodes and in-flight claims with a known instance type.
    pub nodes: &'a [Node],
    pub pools: &'a [NodePool],
    /// The region's instance types, with unavailable offerings already marked.
    pub instance_types: &'a [InstanceType],
    /// DaemonSet pod templates: their requests are reserved on every node they would land on.
    pub daemonsets: &'a [Pod],
    /// What pools have already launched, as their usage counters hold it (running and in-flight
    /// nodes alike). A pool listed here has its limits checked against the larger of this and its
    /// nodes in `nodes` (which the provisioning path only fills with in-flight claims), so a pool
    /// at its limit is not planned onto and its pods go to another pool or stay unschedulable.
    pub pool_usage: &'a [PoolUsed],
}

impl<'a> Input<'a> {
    /// Pods planned onto new nodes only: no existing nodes, daemonsets or pool usage (the
    /// benchmarks' and the quality tests' batches).
    pub fn new_nodes_only(pods: &'a [Pod], pools: &'a [NodePool], instance_types: &'a [InstanceType]) -> Input<'a> {
        Input {
            pods,
            nodes: &[],
            pools,
            instance_types,
            daemonsets: &[],
            pool_usage: &[],
        }
    }
}

/// One pool's launched capacity and node count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolUsed {
    pub pool: String,
    pub resources: crate::Resources,
    pub nodes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    CostAware,
    /// Karpenter's first-fit-decreasing, as documented (benchmark baseline).
    FirstFitDecreasing,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub strategy: Strategy,
    pub max_instance_types: usize,
    /// From this many pods without per-node limits, the cost-aware packer starts from the cost
    /// relaxation's optimum rounded to whole nodes (smaller batches: greedy choices only).
    pub relaxed_min_pods: u64,
    /// Whether the cost-aware packer ends with pod exchanges between claims that let one shrink
    /// (see `exchange`); off only to measure what they save.
    pub exchange: bool,
    /// Whether the plan reports its cost against a lower bound ([`Plan::cost`]); off where plans
    /// are only simulated many times (consolidation), since the bound solves a linear program.
    pub report_bound: bool,
    /// Whether the cost-aware packer tries the exact search on small batches (see `exact`) and
    /// keeps its plan when cheaper; off where plans are only simulated many times.
    pub exact: bool,
    /// Whether the cost-aware packer plans the nodes of a large hostname anti-affinity group as
    /// one linear programme over node patterns (see `anchored`); off only to measure it.
    pub anchored: bool,
}

/// Measured with `nodewright bench`: a few milliseconds of LP at this size, and a plan within 1% of
/// the bound on 20k generic pods where the greedy alone was 8% above it.
pub const RELAXED_MIN_PODS: u64 = 500;

impl Default for Options {
    fn default() -> Self {
        Options {
            strategy: Strategy::CostAware,
            max_instance_types: MAX_INSTANCE_TYPES,
            relaxed_min_pods: RELAXED_MIN_PODS,
            exchange: true,
            report_bound: true,
            exact: true,
            anchored: true,
        }
    }
}

/// A pod placed on capacity that already exists or is already being launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    pub pod: String,
    pub node: String,
    pub in_flight: bool,
}

/// One instance type a claim may launch as, with its cheapest allowed offering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceOption {
    pub name: String,
    pub capacity_type: CapacityType,
    pub zone: String,
    /// USD per hour.
    pub price: f64,
}

/// A new node to launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimPlan {
    /// Deterministic within the plan ("claim-1", "claim-2", ...); adapters derive durable ids.
    pub id: String,
    pub pool: String,
    /// Cheapest first; the first is what the plan's price assumes.
    pub instance_types: Vec<InstanceOption>,
    /// Allowed capacity types, in launch preference order (reserved, spot, on-demand).
    pub capacity_types: Vec<CapacityType>,
    pub zones: Vec<String>,
    /// Pod uids placed on the claim.
    pub pods: Vec<String>,
    /// Sum of the pods' requests.
    pub requests: Resources,
    /// Daemonset requests reserved on the cheapest instance type.
    pub daemonset_overhead: Resources,
    /// USD per hour of the cheapest option.
    pub price: f64,
    /// Labels the node will carry beyond its instance type's (pool labels, nodepool name).
    pub labels: BTreeMap<String, String>,
}

/// A pod that cannot be placed, with the reason per pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unschedulable {
    pub pod: String,
    pub name: String,
    pub reason: String,
}

/// A pod placed on a new claim only by relaxing its preferences, in Karpenter's order: preferred
/// node affinity terms dropped heaviest first, then a `PreferNoSchedule` taint tolerated. No pool
/// could take the pod as it asked; `relaxations` says what was given up, in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relaxed {
    pub pod: String,
    pub name: String,
    /// The plan's claim id (`claim-N`), or the existing node the pod is bound to.
    pub claim: String,
    pub relaxations: Vec<String>,
}

/// The scheduler's decision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub bindings: Vec<Binding>,
    pub claims: Vec<ClaimPlan>,
    pub unschedulable: Vec<Unschedulable>,
    /// Pods on new claims whose preferences were relaxed, with what was given up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relaxed: Vec<Relaxed>,
    /// What the new claims cost against the least any packing of their pods could cost, so each
    /// decision says how far from optimal it may be. None when not asked for or not solvable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<PlanCost>,
}

/// A plan's price, a lower bound on it, and the gap between them.
///
/// The bound is the linear relaxation of placing the claims' pods on new nodes of any pool they
/// may use (see [`lower_bound`]): topology, limits and minValues are left out, so it is never
/// above the true optimum, and the gap overstates how far the plan is from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanCost {
    /// USD per hour of the new claims (their cheapest options).
    pub price: f64,
    /// USD per hour no packing of the same pods on new nodes can go below.
    pub lower_bound: f64,
    /// `price / lower_bound - 1`: 0.012 means at most 1.2 % above the optimum.
    pub gap: f64,
    /// Whether the bound is the exact search's whole-node optimum (small batches; topology and
    /// limits aside) rather than the linear relaxation.
    #[serde(default)]
    pub exact: bool,
}

impl PlanCost {
    pub fn new(price: f64, lower_bound: f64, exact: bool) -> PlanCost {
        let gap = if lower_bound > 1e-12 {
            (price / lower_bound - 1.0).max(0.0)
        } else {
            0.0
        };
        PlanCost {
            price,
            lower_bound,
            gap,
            exact,
        }
    }
}

impl Plan {
    /// USD per hour of the new claims.
    pub fn total_price(&self) -> f64 {
        self.claims.iter().map(|c| c.price).sum()
    }

    pub fn placed_pods(&self) -> usize {
        self.bindings.len() + self.claims.iter().map(|c| c.pods.len()).sum::<usize>()
    }
}

/// Plans capacity for `input.pods`.
pub fn schedule(input: &Input<'_>, options: &Options) -> Plan {
    schedule_with(input, options, None)
}

/// [`schedule`], reusing what `templates` precomputed for the same pools, types and daemonsets.
pub fn schedule_with<'a>(input: &'a Input<'a>, options: &Options, templates: Option<&prepare::Templates<'a>>) -> Plan {
    if preferred::any(input.pods) {
        // Planned more than once, on pods rewritten each round (the templates' cache is keyed
        // by the input's own pods, so it is not used: the plans are the same without it).
        return preferred::plan(input, |round| {
            let prepared = prepare::Prepared::new_with(round, None);
            match options.strategy {
                Strategy::CostAware => pack::run(prepared, options),
                Strategy::FirstFitDecreasing => ffd::run(prepared, options),
            }
        });
    }
    let prepared = prepare::Prepared::new_with(input, templates);
    match options.strategy {
        Strategy::CostAware => pack::run(prepared, options),
        Strategy::FirstFitDecreasing => ffd::run(prepared, options),
    }
}

#[cfg(test)]
mod tests;
