//! `nodewright bench`: scheduler throughput and plan cost, Nodewright's packing side by side with a
//! Karpenter-style first-fit-decreasing baseline and the LP lower bound, in one process and run.
//! Timings are the best of several repetitions on one thread; compare the ratios, not the absolute
//! figures, since machines are noisy.

use std::path::PathBuf;

use comfy_table::Table;

use nodewright_core::catalogue::{InstanceType, OverheadConfig, fake};
use nodewright_core::model::{Pod, load_pods};
use nodewright_core::scheduler::lower_bound::lower_bound;
use nodewright_core::scheduler::{Input, Options, Plan, Strategy, schedule};
use nodewright_core::{Catalogue, NodePool, Operator, Requirement, labels};
use serde::Serialize;

use crate::report::{self, best_of, money, rows_or_transposed};
use crate::{exit, read_file, workloads};

/// The Alibaba GPU trace, in the repository.
const DEFAULT_TRACE: &str = "data/workloads/openb_pod_list_default.csv";

#[derive(clap::Args)]
pub struct Args {
    /// Pod counts for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    sizes: Vec<usize>,
    /// The Alibaba GPU trace (CSV).
    #[arg(long, default_value = DEFAULT_TRACE)]
    trace: PathBuf,
    /// Repetitions per timing (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the FFD baseline in throughput runs above this many pods (it is slow by design).
    #[arg(long, default_value_t = 20000)]
    ffd_max: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Only the throughput runs (for profiling).
    #[arg(long)]
    no_cost: bool,
    /// Seeded batches per size in the small-batch table (10, 40 and 60 pods); 0 skips it.
    #[arg(long, default_value_t = 20)]
    small_seeds: u64,
    /// Seeds of the diverse mix (at the largest size, 400 fake types) in the seed table, each
    /// against the LP bound, with FFD beside it; 0 skips it.
    #[arg(long, default_value_t = 10)]
    diverse_seeds: u64,
    /// The independent exact solver of the small batches: `auto` (scripts/exact-optimum.py in
    /// ./.venv when OR-Tools is installed there), `none`, or a program reading the problem on
    /// stdin.
    #[arg(long, default_value = "auto")]
    exact_solver: String,
    /// The independent solver's time limit per batch (a batch past it reports its best plan,
    /// not a proven optimum).
    #[arg(long, default_value_t = 10.0)]
    exact_seconds: f64,
}

/// One seed of the diverse mix: plan cost against the bound, Nodewright and FFD.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiverseSeed {
    seed: u64,
    pods: usize,
    nodewright_vs_bound: f64,
    ffd_vs_bound: f64,
    nodewright_pods_per_s: f64,
}

#[derive(Serialize)]
struct Throughput {
    workload: String,
    pods: usize,
    nodewright_ms: f64,
    nodewright_pods_per_s: f64,
    /// The same plans without their lower bound (`Options::report_bound` off): what the gap
    /// every plan reports costs.
    nodewright_without_bound_ms: f64,
    ffd_ms: Option<f64>,
    ffd_pods_per_s: Option<f64>,
    speedup: Option<f64>,
}

#[derive(Serialize)]
struct Cost {
    workload: String,
    pods: usize,
    nodewright_nodes: usize,
    nodewright_cost: f64,
    nodewright_unschedulable: usize,
    ffd_nodes: usize,
    ffd_cost: f64,
    ffd_unschedulable: usize,
    lower_bound: f64,
    nodewright_vs_bound: f64,
    ffd_vs_bound: f64,
    nodewright_vs_ffd: f64,
}

/// One cost comparison: label, pods, instance types, pools.
type CostRun<'a> = (String, Vec<Pod>, &'a Vec<InstanceType>, &'a Vec<NodePool>);

fn real_pool() -> NodePool {
    NodePool::new("default")
        .with_requirement(Requirement::new(
            labels::CAPACITY_TYPE,
            Operator::In,
            &["spot", "on-demand"],
        ))
        .with_requirement(Requirement::new(
            labels::INSTANCE_CATEGORY,
            Operator::In,
            &["c", "m", "r", "g", "p"],
        ))
        .with_requirement(Requirement::new(labels::INSTANCE_GENERATION, Operator::Gt, &["4"]))
        .with_requirement(Requirement::new(labels::ARCH, Operator::In, &["amd64"]))
}

/// The best time of `repeat` plans. Nodewright's plans carry their lower bound (as the product's
/// do); the FFD baseline's do not (Karpenter computes none).
fn timed(pods: &[Pod], pools: &[NodePool], types: &[InstanceType], strategy: Strategy, repeat: usize) -> (Plan, f64) {
    timed_with(pods, pools, types, strategy, strategy == Strategy::CostAware, repeat)
}

fn timed_with(
    pods: &[Pod],
    pools: &[NodePool],
    types: &[InstanceType],
    strategy: Strategy,
    report_bound: bool,
    repeat: usize,
) -> (Plan, f64) {
    let input = Input::new_nodes_only(pods, pools, types);
    let opts = Options {
        strategy,
        report_bound,
        ..Options::default()
    };
    best_of(repeat, || schedule(&input, &opts))
}

pub fn run(args: &Args) -> u8 {
    let trace_path = match crate::paths::default_file(&args.trace, DEFAULT_TRACE, "--trace") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let fake_types = fake::benchmark_types(400);
    let real_types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let fake_pools = vec![NodePool::new("default")];
    let real_pools = vec![real_pool()];

    let mut throughput = Vec::new();
    for &n in &args.sizes {
        for (label, types, pools) in [
            ("diverse, 400 fake types", &fake_types, &fake_pools),
            ("diverse, real catalogue", &real_types, &real_pools),
        ] {
            let pods = workloads::diverse(n, 42);
            let repeat = if n >= 20_000 { args.repeat.min(2) } else { args.repeat };
            let (_, nw) = timed(&pods, pools, types, Strategy::CostAware, repeat);
            let (_, nw_nb) = timed_with(&pods, pools, types, Strategy::CostAware, false, repeat);
            let ffd = (n <= args.ffd_max).then(|| timed(&pods, pools, types, Strategy::FirstFitDecreasing, 1).1);
            throughput.push(Throughput {
                workload: label.into(),
                pods: n,
                nodewright_ms: nw,
                nodewright_pods_per_s: n as f64 / (nw / 1000.0),
                nodewright_without_bound_ms: nw_nb,
                ffd_ms: ffd,
                ffd_pods_per_s: ffd.map(|f| n as f64 / (f / 1000.0)),
                speedup: ffd.map(|f| f / nw),
            });
        }
    }

    let trace = match read_file(&trace_path)
        .and_then(|t| load_pods(&t, &trace_path.display().to_string()).map_err(|e| e.to_string()))
    {
        Ok(f) => f.pods,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let largest = args.sizes.iter().copied().max().unwrap_or(20_000);
    let cost_runs: Vec<CostRun> = if args.no_cost {
        Vec::new()
    } else {
        vec![
            (
                "benchmark shapes, diverse, 400 fake types".to_string(),
                workloads::diverse(largest, 42),
                &fake_types,
                &fake_pools,
            ),
            (
                "benchmark shapes, generic, real catalogue".to_string(),
                workloads::generic(largest, 7),
                &real_types,
                &real_pools,
            ),
            (
                "Alibaba GPU trace, real catalogue".to_string(),
                trace,
                &real_types,
                &real_pools,
            ),
            (
                "mixed CPU/GPU burst, real catalogue".to_string(),
                workloads::mixed_burst(largest, 11),
                &real_types,
                &real_pools,
            ),
        ]
    };
    let mut costs = Vec::new();
    for (label, pods, types, pools) in &cost_runs {
        let (nw, _) = timed(pods, pools, types, Strategy::CostAware, 1);
        if std::env::var_os("NODEWRIGHT_DEBUG_CLAIMS").is_some() {
            let mut hist: std::collections::BTreeMap<(usize, String), usize> = std::collections::BTreeMap::new();
            for c in &nw.claims {
                *hist
                    .entry((c.pods.len(), c.instance_types[0].name.clone()))
                    .or_default() += 1;
            }
            for ((pods, t), n) in hist.iter().filter(|(_, n)| **n > 20) {
                eprintln!("{label}: {n} claims of {t} with {pods} pods");
            }
        }
        let (ffd, _) = timed(pods, pools, types, Strategy::FirstFitDecreasing, 1);
        let input = Input::new_nodes_only(pods, pools, types);
        let lb = match lower_bound(&input) {
            Ok(lb) => lb.cost,
            Err(e) => {
                eprintln!("lower bound for {label}: {e}");
                f64::NAN
            }
        };
        costs.push(Cost {
            workload: label.clone(),
            pods: pods.len(),
            nodewright_nodes: nw.claims.len(),
            nodewright_cost: nw.total_price(),
            nodewright_unschedulable: nw.unschedulable.len(),
            ffd_nodes: ffd.claims.len(),
            ffd_cost: ffd.total_price(),
            ffd_unschedulable: ffd.unschedulable.len(),
            lower_bound: lb,
            nodewright_vs_bound: nw.total_price() / lb,
            ffd_vs_bound: ffd.total_price() / lb,
            nodewright_vs_ffd: nw.total_price() / ffd.total_price(),
        });
    }

    let small = if args.no_cost || args.small_seeds == 0 {
        Vec::new()
    } else {
        let solver = match args.exact_solver.as_str() {
            "none" => None,
            "auto" => crate::bench_small::Solver::project(std::path::Path::new(".")),
            program => Some(crate::bench_small::Solver {
                program: program.into(),
                args: Vec::new(),
                seconds: 0.0,
            }),
        }
        .map(|s| crate::bench_small::Solver {
            seconds: args.exact_seconds,
            ..s
        });
        crate::bench_small::run(&real_types, args.small_seeds, solver.as_ref())
    };
    let mut seeds = Vec::new();
    if !args.no_cost {
        for seed in 1..=args.diverse_seeds {
            let pods = workloads::diverse(largest, seed);
            let (nw, ms) = timed(&pods, &fake_pools, &fake_types, Strategy::CostAware, 1);
            let (ffd, _) = timed(&pods, &fake_pools, &fake_types, Strategy::FirstFitDecreasing, 1);
            let input = Input::new_nodes_only(&pods, &fake_pools, &fake_types);
            let lb = lower_bound(&input).map_or(f64::NAN, |b| b.cost);
            seeds.push(DiverseSeed {
                seed,
                pods: pods.len(),
                nodewright_vs_bound: nw.total_price() / lb,
                ffd_vs_bound: ffd.total_price() / lb,
                nodewright_pods_per_s: pods.len() as f64 / (ms / 1000.0),
            });
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "throughput": throughput,
            "cost": costs,
            "smallBatches": small,
            "diverseSeeds": seeds,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return exit::OK;
    }
    let width = report::width();
    println!("{}", throughput_table(&throughput, width));
    if !costs.is_empty() {
        println!("{}", cost_table(&costs, width));
    }
    if !seeds.is_empty() {
        println!("{}", seeds_table(&seeds, width));
        let worst = seeds.iter().map(|s| s.nodewright_vs_bound).fold(0.0, f64::max);
        let mean = seeds.iter().map(|s| s.nodewright_vs_bound).sum::<f64>() / seeds.len() as f64;
        println!(
            "Diverse mix over {} seeds: Nodewright / bound mean {mean:.3}, worst {worst:.3}.",
            seeds.len()
        );
    }
    if !small.is_empty() {
        println!("{}", crate::bench_small::table(&small, width));
        if let Some(t) = crate::bench_small::optimum_table(&small, width) {
            println!("{t}");
        }
        println!(
            "Small batches: seeded pods of 12 common shapes on on-demand c5/m5/r5; each plan against the bound it \
             reports: the exact whole-node optimum where the batch fits the exact search (\"exact bounds\"), else \
             column generation's bound over node patterns (up to 64 pods; the optimum lies between it and the plan), \
             else the relaxation. \"vs exact optimum\": each plan against the independent solver's best plan \
             (scripts/exact-optimum.py, CP-SAT on a model of its own; \"proven\" batches are proven optimal, the \
             others are its best plan in --exact-seconds)."
        );
    }
    println!(
        "Karpenter's published figure for its own benchmark: about 782 pods/s (40,151 pods onto 8,031 nodes in 51.4 s)."
    );
    exit::OK
}

/// Scheduling time per workload and size, Nodewright next to FFD.
fn throughput_table(throughput: &[Throughput], width: u16) -> Table {
    let header = [
        "throughput",
        "pods",
        "Nodewright ms",
        "Nodewright pods/s",
        "bound ms",
        "FFD ms",
        "FFD pods/s",
        "speed-up",
    ];
    let rows: Vec<Vec<String>> = throughput
        .iter()
        .map(|r| {
            vec![
                r.workload.clone(),
                r.pods.to_string(),
                format!("{:.1}", r.nodewright_ms),
                format!("{:.0}", r.nodewright_pods_per_s),
                format!("{:.1}", (r.nodewright_ms - r.nodewright_without_bound_ms).max(0.0)),
                r.ffd_ms.map_or("-".into(), |v| format!("{v:.1}")),
                r.ffd_pods_per_s.map_or("-".into(), |v| format!("{v:.0}")),
                r.speedup.map_or("-".into(), |v| format!("{v:.1}x")),
            ]
        })
        .collect();
    rows_or_transposed(&header, &rows, width)
}

/// The diverse mix per seed: each plan against its LP bound, FFD beside it.
fn seeds_table(seeds: &[DiverseSeed], width: u16) -> Table {
    let header = [
        "diverse seed",
        "pods",
        "Nodewright / bound",
        "FFD / bound",
        "Nodewright pods/s",
    ];
    let rows: Vec<Vec<String>> = seeds
        .iter()
        .map(|s| {
            vec![
                s.seed.to_string(),
                s.pods.to_string(),
                format!("{:.3}", s.nodewright_vs_bound),
                format!("{:.3}", s.ffd_vs_bound),
                format!("{:.0}", s.nodewright_pods_per_s),
            ]
        })
        .collect();
    rows_or_transposed(&header, &rows, width)
}

/// Plan cost per workload: Nodewright, FFD and the LP bound.
fn cost_table(costs: &[Cost], width: u16) -> Table {
    let header = [
        "cost ($/h)",
        "pods",
        "Nodewright nodes",
        "Nodewright $/h",
        "FFD nodes",
        "FFD $/h",
        "LP bound $/h",
        "NW / bound",
        "FFD / bound",
        "NW / FFD",
    ];
    let rows: Vec<Vec<String>> = costs
        .iter()
        .map(|r| {
            vec![
                r.workload.clone(),
                if r.nodewright_unschedulable + r.ffd_unschedulable > 0 {
                    format!(
                        "{} ({} / {} unsched.)",
                        r.pods, r.nodewright_unschedulable, r.ffd_unschedulable
                    )
                } else {
                    r.pods.to_string()
                },
                r.nodewright_nodes.to_string(),
                format!("{:.2}", money(r.nodewright_cost)),
                r.ffd_nodes.to_string(),
                format!("{:.2}", money(r.ffd_cost)),
                format!("{:.2}", money(r.lower_bound)),
                format!("{:.3}", r.nodewright_vs_bound),
                format!("{:.3}", r.ffd_vs_bound),
                format!("{:.3}", r.nodewright_vs_ffd),
            ]
        })
        .collect();
    rows_or_transposed(&header, &rows, width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::assert_fits;

    #[test]
    fn bench_tables_fit_80_and_100_columns() {
        // Rows as wide as the real ones get: the longest labels and large figures.
        let throughput: Vec<Throughput> = [
            ("diverse, 400 fake types", Some(1234.5)),
            ("diverse, real catalogue", None),
        ]
        .into_iter()
        .map(|(label, ffd)| Throughput {
            workload: label.into(),
            pods: 20_000,
            nodewright_ms: 12_345.6,
            nodewright_without_bound_ms: 12_000.1,
            nodewright_pods_per_s: 123_456.0,
            ffd_ms: ffd,
            ffd_pods_per_s: ffd.map(|ms| 20_000.0 / ms * 1000.0),
            speedup: ffd.map(|ms| ms / 12_345.6),
        })
        .collect();
        let costs = vec![Cost {
            workload: "Alibaba GPU trace (openb_pod_list_default)".into(),
            pods: 8152,
            nodewright_nodes: 1234,
            nodewright_cost: 12_345.678,
            nodewright_unschedulable: 8109,
            ffd_nodes: 1301,
            ffd_cost: 13_001.5,
            ffd_unschedulable: 8109,
            lower_bound: 11_999.25,
            nodewright_vs_bound: 1.029,
            ffd_vs_bound: 1.084,
            nodewright_vs_ffd: 0.949,
        }];
        for width in [80, 100] {
            let out = assert_fits(&throughput_table(&throughput, width), width, "bench throughput");
            assert!(out.contains("12345.6") && out.contains("123456"), "{out}");
            let out = assert_fits(&cost_table(&costs, width), width, "bench cost");
            assert!(out.contains("12345.68") && out.contains("0.949"), "{out}");
            let seeds = [DiverseSeed {
                seed: 10,
                pods: 20_000,
                nodewright_vs_bound: 1.0813,
                ffd_vs_bound: 1.5021,
                nodewright_pods_per_s: 37_242.0,
            }];
            let out = assert_fits(&seeds_table(&seeds, width), width, "bench seeds");
            assert!(out.contains("1.081") && out.contains("37242"), "{out}");
        }
        // Wide enough: one row per workload, as before.
        let out = cost_table(&costs, 250).to_string();
        assert_eq!(out.lines().filter(|l| l.contains("Alibaba")).count(), 1, "{out}");
    }

    /// The fill aims each node at the mix of the demand still to place, so the last claims are not
    /// left with the memory-heavy pods the first ones passed over. Before it, the last tenth of the
    /// claims of the 20k diverse mix held 42 % (seed 1) and about 60 % (seed 6) of the plan's idle CPU
    /// (CPU is the resource the mix's bound is short of on these types, so idle CPU is the plan's
    /// waste). Since the anchored nodes are planned as one programme the whole plan idles only
    /// ~17 vCPU of ~13,500 (seed 1), so a share of so little is noise: the check is now that the
    /// tail idles a small part of its own CPU (seed 1: 7.3 of 1,351 vCPU, 0.5 %).
    #[test]
    fn the_last_claims_of_a_large_plan_idle_little_of_their_own_cpu() {
        let types = fake::benchmark_types(400);
        let pools = vec![NodePool::new("default")];
        let cpu_of: std::collections::HashMap<&str, u64> = types
            .iter()
            .map(|t| (t.name.as_str(), t.allocatable.cpu_milli()))
            .collect();
        for seed in [1, 6] {
            let pods = workloads::diverse(20_000, seed);
            let plan = schedule(&Input::new_nodes_only(&pods, &pools, &types), &Options::default());
            assert!(
                plan.unschedulable.is_empty(),
                "seed {seed}: {:?}",
                plan.unschedulable.first()
            );
            let cpu: Vec<u64> = plan
                .claims
                .iter()
                .map(|c| cpu_of[c.instance_types[0].name.as_str()])
                .collect();
            let idle: Vec<u64> = plan
                .claims
                .iter()
                .zip(&cpu)
                .map(|(c, cpu)| cpu - c.requests.cpu_milli())
                .collect();
            let total: u64 = idle.iter().sum();
            let tail = idle.len() * 9 / 10;
            let last: u64 = idle[tail..].iter().sum();
            let last_cpu: u64 = cpu[tail..].iter().sum();
            assert!(
                total > 0,
                "seed {seed}: a plan with no idle CPU at all is not what this mix gives"
            );
            let tail_idle = last as f64 / last_cpu as f64;
            assert!(
                tail_idle < 0.02,
                "seed {seed}: the last tenth of {} claims idles {:.1} % of its {:.0} vCPU \
                 ({:.1} of the plan's {:.1} idle vCPU)",
                idle.len(),
                tail_idle * 100.0,
                last_cpu as f64 / 1000.0,
                last as f64 / 1000.0,
                total as f64 / 1000.0
            );
        }
    }
}
