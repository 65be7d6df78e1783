//! The simulator's acceptance: deterministic replays, pod conservation, the baseline comparison,
//! and the real handlers doing the work (launches, interruptions, consolidation).

use nodewright_core::Config;
use nodewright_sim::workload::{load_csv, load_deployments};
use nodewright_sim::{CsvOptions, FixedGroupSpec, Report, SimConfig, Workload, simulate};
use proptest::prelude::*;

const POOLS: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, t]}
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1m
"#;

const BURSTS: &str = "duration: 2d
deployments:
  - {name: api, cpu: 1500m, memory: 2560Mi, replicas: [{at: 0s, count: 2}]}
  - name: batch
    cpu: 1500m
    memory: 2560Mi
    every: 24h
    replicas: [{at: 9h, count: 8}, {at: 13h, count: 0}]
";

fn pools() -> Config {
    Config::parse_strict(POOLS, "pools.yaml").expect("test pools parse").0
}

fn run(workload: &Workload, config: &SimConfig, baseline: Option<&str>) -> Report {
    let spec = baseline.map(|b| FixedGroupSpec::parse(b).expect("baseline spec"));
    simulate(config, pools(), workload, spec.as_ref(), &mut |_| {}).expect("simulation runs")
}

fn conserved(r: &nodewright_sim::RunReport, arrived: usize) {
    assert_eq!(r.pods.arrived, arrived, "{}", r.autoscaler);
    assert_eq!(
        r.pods.ran + r.pods.pending_at_end + r.pods.left_before_running,
        r.pods.arrived,
        "every pod that arrived ran, is pending, or left before running ({}: {:?})",
        r.autoscaler,
        r.pods
    );
    // Each pod that never ran left an episode that never ended in a bind.
    assert!(
        r.pending.open_at_end >= r.pods.pending_at_end,
        "{:?} {:?}",
        r.pending,
        r.pods
    );
    assert!(
        r.pending.unbound_episodes >= r.pending.open_at_end + r.pods.left_before_running,
        "{:?} {:?}",
        r.pending,
        r.pods
    );
    assert!(r.pending.max_seconds >= r.pending.p99_seconds);
}

#[test]
fn same_seed_same_report_and_the_baseline_runs() {
    let w = load_deployments(BURSTS, "bursts.yaml").expect("workload");
    let config = SimConfig {
        seed: 7,
        ..SimConfig::default()
    };
    let a = run(&w, &config, Some("fixed:t3.medium:2"));
    let b = run(&w, &config, Some("fixed:t3.medium:2"));
    assert_eq!(
        serde_json::to_string(&a).expect("json"),
        serde_json::to_string(&b).expect("json")
    );
    assert_eq!(a.nodewright.timeline, b.nodewright.timeline);

    // The workload: 2 + 8 per day for 2 days.
    assert_eq!(a.pods, 18);
    conserved(&a.nodewright, 18);
    let base = a.baseline.as_ref().expect("baseline ran");
    conserved(base, 18);
    assert_eq!(base.pods.pending_at_end, 0);
    // The fixed group ran only t3.medium, on-demand, 2 nodes all the time plus the bursts.
    assert_eq!(base.node_hours_by_type.keys().collect::<Vec<_>>(), ["t3.medium"]);
    assert!(base.node_hours >= 2.0 * 48.0, "{}", base.node_hours);
    assert_eq!(base.launches.spot, 0);
    // Nodewright bought capacity through the real handlers and gave the bursts back.
    let nw = &a.nodewright;
    assert!(nw.launches.total > 0);
    assert!(
        nw.consolidation.actions > 0,
        "the bursts end; consolidation must act: {nw:?}"
    );
    let handlers = nw.handlers.as_ref().expect("handler counts");
    assert_eq!(handlers.errors, 0, "{:?}", handlers.first_errors);
    for f in ["pod-pending", "state-change", "consolidation"] {
        assert!(handlers.invocations.get(f).copied().unwrap_or(0) > 0, "{f} never ran");
    }
    // Every pod-pending plan that launched reported its price against a bound it does not beat.
    let plans = handlers.plans.as_ref().expect("pod-pending plans report their gap");
    assert!(plans.plans > 0 && plans.lower_bound_per_hour > 0.0, "{plans:?}");
    assert!(plans.lower_bound_per_hour <= plans.price_per_hour + 1e-6, "{plans:?}");
    assert!((0.0..=plans.worst_gap + 1e-9).contains(&plans.gap), "{plans:?}");
    assert_eq!(nw.pods.pending_at_end, 0);
    assert!(nw.total_cost_usd > 0.0);
    let saving = a.saving_percent.expect("saving computed");
    // The saving's causes add up to it; spot is what on-demand prices would have cost on top.
    let split = a.saving_breakdown.as_ref().expect("breakdown with a baseline");
    let parts = split.spot_usd + split.idle_capacity_usd + split.consolidation_usd + split.instance_choice_usd;
    assert!((parts - split.total_usd).abs() < 0.05, "{split:?}");
    assert!(
        (split.total_usd - (base.total_cost_usd - nw.total_cost_usd)).abs() < 0.01,
        "{split:?}"
    );
    assert!(
        split.spot_usd >= 0.0 && nw.on_demand_equivalent_usd >= nw.total_cost_usd,
        "{split:?}"
    );
    assert!(nw.idle_cost_usd <= nw.total_cost_usd && base.idle_cost_usd <= base.total_cost_usd);
    let month = a.saving_per_month_usd.expect("monthly saving");
    assert!(
        (month - split.total_usd / 48.0 * 720.0).abs() < 0.1,
        "{month} vs {split:?}"
    );
    assert!((nw.cost_per_month_usd - nw.total_cost_usd / 48.0 * 720.0).abs() < 0.1);
    assert!(
        nw.total_cost_usd < base.total_cost_usd,
        "Nodewright ${} vs fixed group ${} ({saving}%)",
        nw.total_cost_usd,
        base.total_cost_usd
    );
}

#[test]
fn a_different_seed_draws_different_interruptions() {
    // Spot interruptions at 300x the advisor's rate: drawn, handled by the spot-interruption
    // handler, and the run stays conserved.
    let text = "duration: 2d\ndeployments:\n  - {name: web, cpu: '2', memory: 4Gi, replicas: [{at: 0s, count: 30}]}\n";
    let w = load_deployments(text, "web.yaml").expect("workload");
    let stress = |seed| SimConfig {
        seed,
        interruption_scale: 300.0,
        ..SimConfig::default()
    };
    let config = stress(3);
    let r = run(&w, &config, None);
    conserved(&r.nodewright, 30);
    assert!(r.nodewright.interruptions_handled > 0, "{:?}", r.nodewright);
    assert_eq!(
        r.nodewright.handlers.as_ref().map(|h| h.errors),
        Some(0),
        "{:?}",
        r.nodewright.handlers
    );
    // After every interruption the pods came back: nothing is pending at the end.
    assert_eq!(r.nodewright.pods.pending_at_end, 0);
    assert!(
        r.nodewright
            .handlers
            .as_ref()
            .and_then(|h| h.invocations.get("spot-interruption").copied())
            > Some(0),
        "the spot-interruption handler ran"
    );
    let other = run(&w, &stress(4), None);
    assert_ne!(
        serde_json::to_string(&r).expect("json"),
        serde_json::to_string(&other).expect("json")
    );
}

#[test]
fn the_real_trace_shape_replays() {
    let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n\
                p0,4000,8192,0,0,,LS,Running,0,7200,0\n\
                p1,8000,16384,1,1000,,LS,Running,60,3600,60\n\
                p2,500,1024,0,0,,BE,Running,120,,120\n";
    let w = load_csv(text, "trace.csv", &CsvOptions::default()).expect("trace");
    let pools = "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: any}\nspec:\n  template:\n    spec:\n      requirements:\n        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}\n";
    let config = Config::parse_strict(pools, "p.yaml").expect("pools").0;
    let r = simulate(&SimConfig::default(), config, &w, None, &mut |_| {}).expect("runs");
    conserved(&r.nodewright, 3);
    assert_eq!(r.nodewright.pods.ran, 3);
    assert!(r.nodewright.utilization.gpu.is_some(), "a GPU instance was bought");
    assert_eq!(r.nodewright.launches.spot, 0, "the pool is on-demand only");
}

#[test]
fn bad_inputs_are_named() {
    let w = load_deployments(BURSTS, "bursts.yaml").expect("workload");
    let e = FixedGroupSpec::parse("fixed:").unwrap_err().to_string();
    assert!(e.contains("missing TYPE"), "{e}");
    let spec = FixedGroupSpec::parse("fixed:x9.nothing:1").expect("parses");
    let e = simulate(&SimConfig::default(), pools(), &w, Some(&spec), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("x9.nothing") && e.contains("catalogue"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]
    /// Conservation holds for any small random workload, for both autoscalers.
    #[test]
    fn pods_are_conserved(pods in proptest::collection::vec((100u64..6000, 128u64..12_000, 0u64..7200, 0u64..7200), 1..25)) {
        let mut text = String::from("name,cpu_milli,memory_mib,num_gpu,creation_time,deletion_time\n");
        for (i, (cpu, mem, start, len)) in pods.iter().enumerate() {
            let end = if *len < 600 { String::new() } else { (start + len).to_string() };
            text.push_str(&format!("p{i},{cpu},{mem},0,{start},{end}\n"));
        }
        let w = load_csv(&text, "random.csv", &CsvOptions::default()).expect("trace");
        let r = run(&w, &SimConfig::default(), Some("fixed:m5.2xlarge:0"));
        conserved(&r.nodewright, pods.len());
        conserved(r.baseline.as_ref().expect("baseline"), pods.len());
        prop_assert!(r.nodewright.total_cost_usd >= 0.0);
    }
}

/// Issue #22: after each day's peak, consolidation deleted the node running `api-0` (moving it
/// onto a node that had just emptied) while 8 empty nodes remained: avoidable evictions. The
/// repository's DataMigrate workload and pools, 2 days: every pod pends exactly once, and
/// consolidation costs no more than Karpenter's search, which does evict.
#[test]
fn datamigrate_consolidation_evicts_no_running_pod() {
    let mut w = load_deployments(
        include_str!("../../../examples/sim/datamigrate.yaml"),
        "datamigrate.yaml",
    )
    .expect("the example workload loads");
    w.truncate(2 * 24 * 3_600_000);
    let (pools, _) = Config::parse_strict(include_str!("../../../examples/sim/nodepools.yaml"), "nodepools.yaml")
        .expect("the example pools parse");
    let quiet = SimConfig {
        // Interruptions evict for their own reason; this is about consolidation.
        interruptions: false,
        ..SimConfig::default()
    };
    let ours = simulate(&quiet, pools.clone(), &w, None, &mut |_| {})
        .expect("runs")
        .nodewright;
    let karpenter = SimConfig {
        disruption: nodewright_core::disruption::Options::karpenter(),
        ..quiet.clone()
    };
    let theirs = simulate(&karpenter, pools, &w, None, &mut |_| {})
        .expect("runs")
        .nodewright;

    conserved(&ours, 2 + 8 * 2);
    assert_eq!(ours.pods.ran, ours.pods.arrived, "{:?}", ours.pods);
    assert_eq!(
        ours.pending.episodes, ours.pods.arrived,
        "a pending episode per pod, none from an eviction: {:?}",
        ours.churn
    );
    assert_eq!(ours.churn.evictions, 0, "{:?}", ours.churn);
    assert!(
        ours.consolidation.actions > 0,
        "the peaks end; emptiness must act: {:?}",
        ours.consolidation
    );
    assert!(
        ours.total_cost_usd <= theirs.total_cost_usd,
        "no higher cost: ours ${} vs Karpenter's search ${}",
        ours.total_cost_usd,
        theirs.total_cost_usd
    );
    eprintln!(
        "ours: ${} {} episodes {:?}; Karpenter's search: ${} {} episodes {:?}",
        ours.total_cost_usd,
        ours.pending.episodes,
        ours.churn,
        theirs.total_cost_usd,
        theirs.pending.episodes,
        theirs.churn
    );
}

/// Issue #22: a run where no pod ever ran reported "p50/p95/p99 0 s / 0 s / 0 s". Pods that never
/// ran are counted, and their time pending so far is in the percentiles.
#[test]
fn pods_that_never_ran_are_in_the_headline() {
    // 1000 vCPU fits no type the pools admit (c, m, t): never schedulable.
    let w = load_deployments(
        "duration: 2h\ndeployments:\n  - {name: huge, cpu: 1000, memory: 1Gi, replicas: [{at: 0s, count: 3}]}\n",
        "huge.yaml",
    )
    .expect("workload");
    let r = run(&w, &SimConfig::default(), Some("fixed:t3.medium:1")).nodewright;
    conserved(&r, 3);
    assert_eq!(r.pods.ran, 0);
    assert_eq!(r.pods.never_ran, 3);
    assert_eq!(r.pending.episodes, 0);
    assert_eq!(r.pending.open_at_end, 3);
    // Pending the whole 2 hours.
    assert_eq!(r.pending.p50_seconds, 7200.0, "{:?}", r.pending);
    assert_eq!(r.pending.p99_seconds, 7200.0, "{:?}", r.pending);
}
