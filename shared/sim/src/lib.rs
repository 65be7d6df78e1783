//! The cost simulator behind `nodewright simulate` (docs/simulator.md).
//!
//! It replays a [`workload::Workload`] against NodePool configuration on a virtual clock:
//! - [`nodewright`]: the four functions' real handlers, with the scheduler and disruption planner
//!   they call, acting through in-process stand-ins for DynamoDB, EC2 and the cluster;
//! - [`fixed_group`]: a Cluster Autoscaler-style single node group, the baseline;
//! - [`world`]: the simulated cluster both act on (kube-scheduler stand-in, meters);
//! - [`engine`]: the event queue and loop; [`report`] and [`plot`]: what comes out;
//! - [`chaos`]: seeded stories with faults at the ports and in delivery, invariants checked at
//!   every step (`nodewright chaos`).
//!
//! Same inputs and seed, same report: nothing reads the wall clock or an unseeded random source.

pub mod chaos;
pub mod engine;
pub mod fixed_group;
pub mod nodewright;
pub mod plot;
pub mod report;
pub mod rng;
pub mod workload;
pub mod world;

use nodewright_core::catalogue::OverheadConfig;
use nodewright_core::nodepool::PoolBacking;
use nodewright_core::ports::state::StateView;
use nodewright_core::{Catalogue, Config, InstanceType};
use nodewright_handlers::Settings;

pub use fixed_group::FixedGroupSpec;
pub use report::{Report, RunReport};
pub use rng::Rng;
pub use workload::{CsvOptions, Workload, WorkloadPod};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: names the file, field or flag and the problem.
    #[error("{what}: {reason}")]
    Input { what: String, reason: String },
    /// The simulation itself went wrong (a bug, reported rather than hidden).
    #[error("simulation failed: {0}")]
    Sim(String),
}

impl Error {
    pub fn input(what: &str, reason: impl Into<String>) -> Error {
        Error::Input {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub cluster: String,
    pub region: String,
    /// RunInstances to `running`.
    pub launch_delay_ms: i64,
    /// `running` to the node Ready.
    pub registration_delay_ms: i64,
    pub seed: u64,
    /// Draw spot interruptions from each type's interruption band.
    pub interruptions: bool,
    /// Multiplies every band's interruption rate (stress runs; 1.0 is the advisor's rate).
    pub interruption_scale: f64,
    /// The virtual clock's zero, as Unix ms (what the handlers see as "now").
    pub start_epoch_ms: i64,
    /// The consolidation planner's options (`Options::karpenter()` replays Karpenter's search).
    pub disruption: nodewright_core::disruption::Options,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            cluster: "sim".into(),
            region: "us-east-1".into(),
            launch_delay_ms: 45_000,
            registration_delay_ms: 35_000,
            seed: 1,
            interruptions: true,
            interruption_scale: 1.0,
            // 2026-11-02T00:00:00Z, a Monday.
            start_epoch_ms: nodewright_core::time::days_from_civil(2026, 11, 2) * 86_400_000,
            disruption: nodewright_core::disruption::Options::default(),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::Sim(format!("cannot start the async runtime: {e}")))
}

/// Runs Nodewright (and the baseline, when given) on `workload`. `progress` hears the share done.
pub fn simulate(
    config: &SimConfig,
    pools: Config,
    workload: &Workload,
    baseline: Option<&FixedGroupSpec>,
    progress: &mut dyn FnMut(f64),
) -> Result<Report> {
    simulate_with_state(config, pools, workload, baseline, progress).map(|(report, _)| report)
}

/// [`simulate`], also returning Nodewright's state at the end of the run (for `avail --state`).
pub fn simulate_with_state(
    config: &SimConfig,
    pools: Config,
    workload: &Workload,
    baseline: Option<&FixedGroupSpec>,
    progress: &mut dyn FnMut(f64),
) -> Result<(Report, StateView)> {
    if config.launch_delay_ms < 0 || config.registration_delay_ms < 0 {
        return Err(Error::input("delays", "must not be negative"));
    }
    if !(config.interruption_scale.is_finite() && config.interruption_scale > 0.0) {
        return Err(Error::input("interruption scale", "must be a positive number"));
    }
    let mut notes = Vec::new();
    let mut pools = pools;
    pools.node_pools.retain(|p| match &p.backing {
        PoolBacking::Fleet => true,
        PoolBacking::AutoScalingGroup { group_name, .. } => {
            notes.push(format!(
                "AutoScalingPool {} (group {group_name}) is not simulated; only groupless NodePools are",
                p.name
            ));
            false
        }
    });
    if pools.node_pools.is_empty() {
        return Err(Error::input("nodepools", "no groupless NodePool to simulate"));
    }
    let mut settings =
        Settings::new(&config.cluster, &config.region, pools).map_err(|e| Error::input("nodepools", e.to_string()))?;
    settings.disruption = config.disruption;
    // The whole regional catalogue: the baseline's type need not be one the pools admit.
    let types: Vec<InstanceType> = Catalogue::embedded().instance_types(&config.region, &OverheadConfig::default());
    // Checked before the long Nodewright run.
    let fixed = baseline
        .map(|spec| fixed_group::FixedGroup::new(spec.clone(), &types, config))
        .transpose()?;
    let rt = runtime()?;
    let share = if baseline.is_some() { 0.5 } else { 1.0 };

    let mut nw = nodewright::NodewrightSim::new(config, settings);
    let mut world = world::World::new(workload, &types);
    rt.block_on(engine::run(&mut nw, &mut world, workload, &mut |f| progress(f * share)))?;
    let nodewright = report::run_report("nodewright", &world, Some(&nw.stats));
    let state = nw.state_view(workload.duration_ms);

    let baseline = match (baseline, fixed) {
        (Some(spec), Some(mut fixed)) => {
            let mut world = world::World::new(workload, &types);
            rt.block_on(engine::run(&mut fixed, &mut world, workload, &mut |f| {
                progress(share + f * share)
            }))?;
            Some(report::run_report(&spec.name(), &world, None))
        }
        _ => None,
    };
    let saving_percent = baseline
        .as_ref()
        .filter(|b| b.total_cost_usd > 0.0)
        .map(|b| ((b.total_cost_usd - nodewright.total_cost_usd) / b.total_cost_usd * 1000.0).round() / 10.0);
    if let Some(b) = &baseline
        && b.pods.pending_at_end > 0
    {
        notes.push(format!(
            "the baseline left {} pods pending (they do not fit {} or hit its maximum)",
            b.pods.pending_at_end, b.autoscaler
        ));
    }
    let saving_per_month_usd = baseline.as_ref().map(|b| {
        let hours = workload.duration_ms as f64 / 3_600_000.0;
        (report::per_month(b.total_cost_usd - nodewright.total_cost_usd, hours) * 100.0).round() / 100.0
    });
    let saving_breakdown = baseline.as_ref().map(|b| report::saving_breakdown(&nodewright, b));
    if nodewright.pods.never_ran > 0 {
        notes.push(format!(
            "{} of {} pods never ran under Nodewright ({} still pending at the end); their time pending is in the percentiles",
            nodewright.pods.never_ran, nodewright.pods.arrived, nodewright.pods.pending_at_end
        ));
    }
    let report = Report {
        workload: workload.source.clone(),
        pods: workload.pods.len(),
        simulated_hours: workload.duration_ms as f64 / 3_600_000.0,
        seed: config.seed,
        launch_delay_seconds: config.launch_delay_ms as f64 / 1000.0,
        registration_delay_seconds: config.registration_delay_ms as f64 / 1000.0,
        nodewright,
        baseline,
        saving_percent,
        saving_per_month_usd,
        saving_breakdown,
        notes,
    };
    Ok((report, state))
}
