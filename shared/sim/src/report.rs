//! What a simulation reports (docs/simulator.md documents each field; `--json` prints it as is).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::nodewright::Stats;
use crate::world::{PodPhase, Sample, World};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Utilization {
    /// Requested / allocatable, integrated over the time instances were billed.
    pub cpu: f64,
    pub memory: f64,
    /// None when no GPU capacity was bought.
    pub gpu: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingTimes {
    /// Pending episodes that ended in a bind (evicted pods start a new one).
    pub episodes: usize,
    /// Pending episodes that never ended in a bind: the pod was deleted while pending, or was
    /// still pending at the end. Their time pending (so far) is in the percentiles.
    pub unbound_episodes: usize,
    /// Of those, the ones still pending at the end of the run.
    pub open_at_end: usize,
    /// Nearest-rank percentiles over every episode, bound or not.
    pub p50_seconds: f64,
    pub p95_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    pub arrived: usize,
    /// Bound to a node at least once.
    pub ran: usize,
    /// Never bound and still pending at the end.
    pub pending_at_end: usize,
    /// Deleted by their owner before ever being bound.
    pub left_before_running: usize,
    /// Never bound: `arrived - ran` (`pending_at_end + left_before_running`).
    pub never_ran: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Launches {
    pub total: u32,
    pub spot: u32,
    pub on_demand: u32,
    pub on_demand_fallbacks: u32,
    pub terminations: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Consolidation {
    /// Disruption actions (emptiness included) and the nodes they removed.
    pub actions: u32,
    pub nodes: u32,
    /// Dollars consolidation of busy nodes saved over the run: each action's $/h saving until the
    /// last pod on its nodes would have left (then the node would have emptied and gone anyway).
    pub saved_usd: f64,
    /// Node-hours those actions saved, by the same rule.
    pub node_hours_saved: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Churn {
    /// Running pods evicted (drains, interruptions, consolidation); each restarts elsewhere.
    pub evictions: u32,
    /// Of those, evicted by consolidation of busy nodes.
    pub consolidation_evictions: u32,
    /// Consolidation's evictions per node-hour it saved; None when it saved none.
    pub evictions_per_node_hour_saved: Option<f64>,
}

/// Where Nodewright's saving over the baseline comes from, in dollars over the run. The parts sum
/// to `total_usd` (the baseline's cost minus Nodewright's).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavingBreakdown {
    /// Spot prices: Nodewright's instances at their on-demand price minus what it paid.
    pub spot_usd: f64,
    /// Faster scale-down: the baseline's cost of instances with no pod bound (booting, or idle
    /// before removal) minus Nodewright's, at on-demand prices.
    pub idle_capacity_usd: f64,
    /// Consolidation of busy nodes (`consolidation.savedUsd`).
    pub consolidation_usd: f64,
    /// The rest, on instances running pods: cheaper instance types and tighter packing.
    pub instance_choice_usd: f64,
    pub total_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerCounts {
    pub invocations: BTreeMap<String, u32>,
    pub errors: u32,
    pub first_errors: Vec<String>,
    /// How far the pod-pending plans were from their lower bounds; None when none launched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plans: Option<PlanGaps>,
}

/// The pod-pending plans' prices against their lower bounds (each decision's new claims).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanGaps {
    pub plans: usize,
    /// Summed over the plans, USD per hour of new claims.
    pub price_per_hour: f64,
    pub lower_bound_per_hour: f64,
    /// `price / lower bound - 1` over all plans together.
    pub gap: f64,
    /// The largest single plan's gap.
    pub worst_gap: f64,
}

impl PlanGaps {
    pub fn of(plans: &[(f64, f64, f64)]) -> Option<PlanGaps> {
        if plans.is_empty() {
            return None;
        }
        let price: f64 = plans.iter().map(|p| p.0).sum();
        let bound: f64 = plans.iter().map(|p| p.1).sum();
        Some(PlanGaps {
            plans: plans.len(),
            price_per_hour: round(price, 4),
            lower_bound_per_hour: round(bound, 4),
            gap: round(
                if bound > 0.0 {
                    (price / bound - 1.0).max(0.0)
                } else {
                    0.0
                },
                4,
            ),
            worst_gap: round(plans.iter().map(|p| p.2).fold(0.0, f64::max), 4),
        })
    }
}

/// One autoscaler's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub autoscaler: String,
    pub total_cost_usd: f64,
    /// The run's cost rate over a 30-day month.
    pub cost_per_month_usd: f64,
    /// `total_cost_usd` at on-demand prices.
    pub on_demand_equivalent_usd: f64,
    /// Cost of instances while no pod was bound to them, and the same at on-demand prices.
    pub idle_cost_usd: f64,
    pub idle_on_demand_cost_usd: f64,
    pub node_hours: f64,
    /// Cost over the hours pods were bound; None when no pod ran.
    pub cost_per_pod_hour: Option<f64>,
    pub utilization: Utilization,
    pub pending: PendingTimes,
    pub pods: PodCounts,
    pub launches: Launches,
    pub interruptions_handled: u32,
    pub consolidation: Consolidation,
    pub churn: Churn,
    pub node_hours_by_type: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handlers: Option<HandlerCounts>,
    /// Sampled every 5 simulated minutes (for the plot; left out of `--json`).
    #[serde(skip)]
    pub timeline: Vec<Sample>,
}

/// The whole simulation: Nodewright and, when asked, the baseline on the same workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub workload: String,
    pub pods: usize,
    pub simulated_hours: f64,
    pub seed: u64,
    pub launch_delay_seconds: f64,
    pub registration_delay_seconds: f64,
    pub nodewright: RunReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<RunReport>,
    /// (baseline - nodewright) / baseline cost, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saving_percent: Option<f64>,
    /// The saving per 30-day month, and where it comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saving_per_month_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saving_breakdown: Option<SavingBreakdown>,
    pub notes: Vec<String>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn ratio(used: f64, capacity: f64) -> f64 {
    if capacity > 0.0 { used / capacity } else { 0.0 }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Dollars over the run to dollars per 30-day month.
pub fn per_month(usd: f64, hours: f64) -> f64 {
    if hours > 0.0 { usd / hours * 720.0 } else { 0.0 }
}

/// Splits `baseline - nodewright` by cause (see [`SavingBreakdown`]).
pub fn saving_breakdown(nodewright: &RunReport, baseline: &RunReport) -> SavingBreakdown {
    let total = baseline.total_cost_usd - nodewright.total_cost_usd;
    let spot = nodewright.on_demand_equivalent_usd - nodewright.total_cost_usd;
    // The baseline's idle time at its own prices: it buys on demand (a spot baseline's idle
    // discount would otherwise count twice).
    let idle = baseline.idle_cost_usd - nodewright.idle_on_demand_cost_usd;
    let consolidation = nodewright.consolidation.saved_usd;
    SavingBreakdown {
        spot_usd: round(spot, 2),
        idle_capacity_usd: round(idle, 2),
        consolidation_usd: round(consolidation, 2),
        instance_choice_usd: round(total - spot - idle - consolidation, 2),
        total_usd: round(total, 2),
    }
}

pub fn run_report(name: &str, world: &World, stats: Option<&Stats>) -> RunReport {
    let m = &world.meters;
    let mut pending = m.pending_ms.clone();
    pending.extend_from_slice(&m.unbound_pending_ms);
    pending.sort_unstable();
    let hours = world.duration_ms as f64 / 3_600_000.0;
    let arrived = world.pods.iter().filter(|p| p.incarnations > 0).count();
    let ran = world.pods.iter().filter(|p| p.ever_ran).count();
    let pending_at_end = world
        .pods
        .iter()
        .filter(|p| !p.ever_ran && matches!(p.phase, PodPhase::Pending { .. }))
        .count();
    let left_before_running = world
        .pods
        .iter()
        .filter(|p| !p.ever_ran && p.phase == PodPhase::Gone)
        .count();
    let pod_hours = m.pod_ms / 3_600_000.0;
    RunReport {
        autoscaler: name.into(),
        total_cost_usd: round(m.cost_usd, 2),
        cost_per_month_usd: round(per_month(m.cost_usd, hours), 2),
        on_demand_equivalent_usd: round(m.on_demand_cost_usd, 2),
        idle_cost_usd: round(m.idle_cost_usd, 2),
        idle_on_demand_cost_usd: round(m.idle_on_demand_cost_usd, 2),
        node_hours: round(m.node_ms / 3_600_000.0, 1),
        cost_per_pod_hour: (pod_hours > 0.0).then(|| round(m.cost_usd / pod_hours, 4)),
        utilization: Utilization {
            cpu: round(ratio(m.used[0], m.capacity[0]), 3),
            memory: round(ratio(m.used[1], m.capacity[1]), 3),
            gpu: (m.capacity[2] > 0.0).then(|| round(ratio(m.used[2], m.capacity[2]), 3)),
        },
        pending: PendingTimes {
            episodes: m.pending_ms.len(),
            unbound_episodes: m.unbound_pending_ms.len(),
            open_at_end: m.pending_at_end,
            p50_seconds: percentile(&pending, 50.0),
            p95_seconds: percentile(&pending, 95.0),
            p99_seconds: percentile(&pending, 99.0),
            max_seconds: pending.last().map_or(0.0, |v| *v as f64 / 1000.0),
        },
        pods: PodCounts {
            arrived,
            ran,
            pending_at_end,
            left_before_running,
            never_ran: arrived - ran,
        },
        launches: Launches {
            total: m.launches,
            spot: m.spot_launches,
            on_demand: m.launches - m.spot_launches,
            on_demand_fallbacks: stats.map_or(0, |s| s.on_demand_fallbacks),
            terminations: m.terminations,
        },
        interruptions_handled: stats.map_or(0, |s| s.interruptions),
        consolidation: Consolidation {
            actions: stats.map_or(0, |s| s.disruption_actions),
            nodes: stats.map_or(0, |s| s.disrupted_nodes),
            saved_usd: round(stats.map_or(0.0, |s| s.consolidation_saved_usd), 2),
            node_hours_saved: round(stats.map_or(0.0, |s| s.consolidation_node_hours_saved), 1),
        },
        churn: Churn {
            evictions: m.evictions,
            consolidation_evictions: stats.map_or(0, |s| s.consolidation_evictions),
            evictions_per_node_hour_saved: stats.filter(|s| s.consolidation_node_hours_saved > 0.0).map(|s| {
                round(
                    f64::from(s.consolidation_evictions) / s.consolidation_node_hours_saved,
                    3,
                )
            }),
        },
        node_hours_by_type: m
            .node_ms_by_type
            .iter()
            .map(|(t, ms)| (t.clone(), round(ms / 3_600_000.0, 1)))
            .collect(),
        handlers: stats.map(|s| HandlerCounts {
            invocations: s.invocations.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
            errors: s.handler_errors,
            first_errors: s.first_errors.clone(),
            plans: PlanGaps::of(&s.plans),
        }),
        timeline: world.timeline.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=100).map(|s| s * 1000).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7000], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
