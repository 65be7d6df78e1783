//! `bench`'s small-batch table (issue #23): seeded batches of 10, 40 and 60 pods from 12 common
//! shapes on on-demand c5/m5/r5 (amd64), each plan against the bound it reports (the exact
//! search's whole-node optimum where the batch is within its budget, else column generation's
//! bound over node patterns, else the relaxation), with
//! the time each decision took and Karpenter-style FFD beside it; and each plan against the
//! independent exact optimum (`scripts/exact-optimum.py`: CP-SAT on a model of its own, sharing no
//! code with the scheduler) where that solver is installed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use comfy_table::Table;
use nodewright_core::catalogue::InstanceType;
use nodewright_core::model::Pod;
use nodewright_core::nodepool::NodePool;
use nodewright_core::scheduler::{Input, Options, Plan, Strategy, schedule};
use nodewright_core::{CapacityType, Operator, Requirement, Resource, labels};
use serde::Serialize;

use crate::report::rows_or_transposed;
use crate::workloads::Rng;

/// (CPU millicores, memory MiB): the request shapes of common Deployments and Jobs.
const SHAPES: [(u64, u64); 12] = [
    (100, 128),
    (250, 512),
    (500, 1024),
    (500, 2048),
    (1000, 1024),
    (1000, 2048),
    (1000, 4096),
    (1500, 3072),
    (2000, 4096),
    (2000, 8192),
    (4000, 8192),
    (4000, 16384),
];

pub const SIZES: [usize; 3] = [10, 40, 60];

/// Runs per batch whose median is its decision time.
const TIMED_RUNS: usize = 3;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SmallBatches {
    pub pods: usize,
    pub batches: usize,
    /// Batches whose bound is the exact whole-node optimum.
    pub exact_bounds: usize,
    pub mean_vs_bound: f64,
    pub worst_vs_bound: f64,
    /// The packer without its exact search and column generation, against the same bounds: what
    /// the search adds.
    pub packer_mean_vs_bound: f64,
    pub packer_worst_vs_bound: f64,
    /// Karpenter-style FFD on the same batches, against the same bounds.
    pub ffd_mean_vs_bound: f64,
    pub ffd_worst_vs_bound: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Against the independent solver's optimum (None when it was not run).
    pub optimum: Option<VsOptimum>,
}

/// The plans against the independent exact solver's results.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VsOptimum {
    /// Batches the solver found a plan for.
    pub solved: usize,
    /// Of those, batches whose optimum it proved (the others: its best plan and bound).
    pub proven: usize,
    /// Nodewright's plan over the solver's best plan (the optimum where proven).
    pub mean: f64,
    pub worst: f64,
    /// Batches where Nodewright's plan is more than 1 % dearer than the solver's.
    pub over_one_percent: usize,
    pub ffd_mean: f64,
    pub ffd_worst: f64,
    /// The solver's seconds on its slowest batch.
    pub solver_max_s: f64,
}

/// How to run the independent solver: a program and its arguments; it reads the problem as JSON
/// on stdin and writes one result per batch on stdout.
#[derive(Debug, Clone)]
pub struct Solver {
    pub program: String,
    pub args: Vec<String>,
    /// Per batch.
    pub seconds: f64,
}

impl Solver {
    /// The project's solver in the project's virtualenv under `root`, when it is there with
    /// OR-Tools (`scripts/venv` installs it).
    pub fn project(root: &std::path::Path) -> Option<Solver> {
        let python = root.join(".venv/bin/python").to_string_lossy().into_owned();
        let script = root.join("scripts/exact-optimum.py").to_string_lossy().into_owned();
        if !std::path::Path::new(&script).exists() {
            return None;
        }
        let ok = Command::new(&python)
            .args(["-c", "import ortools"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Solver {
            program: python,
            args: vec![script],
            seconds: 20.0,
        })
    }
}

/// One batch as the independent solver sees it: pods' requests (CPU millicores, memory bytes, one
/// pod slot) and the cost of Nodewright's plan (the solver's cut on node copies).
#[derive(Serialize)]
struct SolverBatch {
    pods: Vec<[u64; 3]>,
    cap_cost: f64,
}

#[derive(Serialize)]
struct SolverType {
    name: String,
    capacity: [u64; 3],
    price: f64,
}

#[derive(serde::Deserialize, Debug)]
struct SolverResult {
    optimum: Option<f64>,
    proven: bool,
    seconds: f64,
}

/// The types [`pool`] admits, read from their labels here rather than through the scheduler's
/// requirement matching, with their allocatable and cheapest on-demand price.
fn solver_types(types: &[InstanceType]) -> Vec<SolverType> {
    types
        .iter()
        .filter(|t| {
            let label = |k: &str| t.labels.get(k).map(String::as_str);
            matches!(label(labels::INSTANCE_FAMILY), Some("c5" | "m5" | "r5")) && label(labels::ARCH) == Some("amd64")
        })
        .filter_map(|t| {
            let price = t.cheapest(CapacityType::OnDemand)?;
            let a = &t.allocatable;
            Some(SolverType {
                name: t.name.clone(),
                capacity: [a.cpu_milli(), a.memory(), a.get(Resource::Pods)],
                price,
            })
        })
        .collect()
}

/// Runs the solver over every batch at once; None (with the reason on stderr) when it fails.
fn solve(solver: &Solver, types: &[InstanceType], batches: Vec<SolverBatch>) -> Option<Vec<SolverResult>> {
    let doc = serde_json::json!({
        "types": solver_types(types),
        "batches": batches,
        "seconds": solver.seconds,
    });
    if let Some(path) = std::env::var_os("NODEWRIGHT_DEBUG_EXACT") {
        let _ = std::fs::write(path, doc.to_string());
    }
    let run = || -> std::io::Result<std::process::Output> {
        let mut child = Command::new(&solver.program)
            .args(&solver.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(doc.to_string().as_bytes())?;
        }
        child.wait_with_output()
    };
    match run() {
        Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
            Ok(results) => Some(results),
            Err(e) => {
                eprintln!("exact solver: unreadable output: {e}");
                None
            }
        },
        Ok(out) => {
            eprintln!("exact solver: exited with {}", out.status);
            None
        }
        Err(e) => {
            eprintln!("exact solver: {e}");
            None
        }
    }
}

pub fn pool() -> NodePool {
    NodePool::new("default")
        .with_requirement(Requirement::new(labels::CAPACITY_TYPE, Operator::In, &["on-demand"]))
        .with_requirement(Requirement::new(
            labels::INSTANCE_FAMILY,
            Operator::In,
            &["c5", "m5", "r5"],
        ))
        .with_requirement(Requirement::new(labels::ARCH, Operator::In, &["amd64"]))
}

/// A seeded batch of `n` pods drawn from [`SHAPES`].
pub fn batch(n: usize, seed: u64) -> Vec<Pod> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let (cpu, mib) = SHAPES[rng.below(SHAPES.len() as u64) as usize];
            Pod::new(&format!("small-{seed}-{i}"), cpu, mib << 20)
        })
        .collect()
}

/// The default plan for a batch and the milliseconds it took.
fn timed_plan(input: &Input<'_>) -> (Plan, f64) {
    let start = Instant::now();
    let plan = schedule(input, &Options::default());
    (plan, start.elapsed().as_secs_f64() * 1000.0)
}

/// One row per size over `seeds` batches; each plan also against the independent solver's
/// optimum when `solver` is given.
pub fn run(types: &[InstanceType], seeds: u64, solver: Option<&Solver>) -> Vec<SmallBatches> {
    let pools = vec![pool()];
    // Per size: (Nodewright's cost, FFD's cost) per batch, and the batches for the solver.
    let mut costs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut batches = Vec::new();
    let mut rows: Vec<SmallBatches> = SIZES
        .iter()
        .map(|&n| {
            let mut size_costs = Vec::new();
            let (mut ratios, mut ffd_ratios, mut ms) = (Vec::new(), Vec::new(), Vec::new());
            let mut packer_ratios = Vec::new();
            let mut exact = 0;
            for seed in 1..=seeds {
                let pods = batch(n, seed);
                let input = Input::new_nodes_only(&pods, &pools, types);
                let (plan, took) = timed_plan(&input);
                ms.push(took);
                let ffd = schedule(
                    &input,
                    &Options {
                        strategy: Strategy::FirstFitDecreasing,
                        report_bound: false,
                        ..Options::default()
                    },
                );
                let packer = schedule(
                    &input,
                    &Options {
                        exact: false,
                        report_bound: false,
                        ..Options::default()
                    },
                );
                let Some(cost) = plan.cost else { continue };
                packer_ratios.push(packer.total_price() / cost.lower_bound);
                exact += usize::from(cost.exact);
                ratios.push(cost.price / cost.lower_bound);
                ffd_ratios.push(ffd.total_price() / cost.lower_bound);
                if std::env::var_os("NODEWRIGHT_DEBUG_CLAIMS").is_some() {
                    let mut names: Vec<&str> = plan.claims.iter().map(|c| c.instance_types[0].name.as_str()).collect();
                    names.sort_unstable();
                    eprintln!("small {n} seed {seed}: ${:.4} {names:?}", cost.price);
                }
                if plan.unschedulable.is_empty() && ffd.unschedulable.is_empty() {
                    size_costs.push((cost.price, ffd.total_price()));
                    batches.push(SolverBatch {
                        pods: pods
                            .iter()
                            .map(|p| [p.requests.cpu_milli(), p.requests.memory(), 1])
                            .collect(),
                        cap_cost: cost.price,
                    });
                }
            }
            costs.push(size_costs);
            // Each batch's time is the median of three runs, so one stall of the machine does not
            // stand for the search's time. The runs are interleaved (every batch, then every
            // batch again), so a batch never finds its own columns still remembered.
            let mut runs: Vec<Vec<f64>> = ms.iter().map(|t| vec![*t]).collect();
            for _ in 1..TIMED_RUNS {
                for (seed, times) in (1..=seeds).zip(runs.iter_mut()) {
                    let pods = batch(n, seed);
                    let (plan, took) = timed_plan(&Input::new_nodes_only(&pods, &pools, types));
                    times.push(took);
                    std::hint::black_box(plan);
                }
            }
            let mut ms: Vec<f64> = runs
                .into_iter()
                .map(|mut t| {
                    t.sort_by(f64::total_cmp);
                    t[t.len() / 2]
                })
                .collect();
            ms.sort_by(f64::total_cmp);
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            SmallBatches {
                pods: n,
                batches: ratios.len(),
                exact_bounds: exact,
                mean_vs_bound: mean(&ratios),
                worst_vs_bound: worst(&ratios),
                packer_mean_vs_bound: mean(&packer_ratios),
                packer_worst_vs_bound: worst(&packer_ratios),
                ffd_mean_vs_bound: mean(&ffd_ratios),
                ffd_worst_vs_bound: worst(&ffd_ratios),
                p50_ms: nearest_rank(&ms, 50.0),
                p99_ms: nearest_rank(&ms, 99.0),
                optimum: None,
            }
        })
        .collect();
    let Some(results) = solver.and_then(|s| solve(s, types, batches)) else {
        return rows;
    };
    let mut results = results.into_iter();
    for (row, size_costs) in rows.iter_mut().zip(costs) {
        let (mut ratios, mut ffd_ratios) = (Vec::new(), Vec::new());
        let (mut proven, mut slowest) = (0, 0.0f64);
        for ((nw, ffd), r) in size_costs.into_iter().zip(results.by_ref()) {
            slowest = slowest.max(r.seconds);
            let Some(opt) = r.optimum.filter(|o| *o > 0.0) else {
                continue;
            };
            proven += usize::from(r.proven);
            ratios.push(nw / opt);
            ffd_ratios.push(ffd / opt);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        row.optimum = Some(VsOptimum {
            solved: ratios.len(),
            proven,
            mean: mean(&ratios),
            worst: worst(&ratios),
            over_one_percent: ratios.iter().filter(|r| **r > 1.01 + 1e-9).count(),
            ffd_mean: mean(&ffd_ratios),
            ffd_worst: worst(&ffd_ratios),
            solver_max_s: slowest,
        });
    }
    rows
}

fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn table(rows: &[SmallBatches], width: u16) -> Table {
    let header = [
        "small batches",
        "batches",
        "exact bounds",
        "Nodewright / bound (mean, worst)",
        "packer alone / bound",
        "FFD / bound (mean, worst)",
        "Nodewright ms (p50, p99)",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{} pods", r.pods),
                r.batches.to_string(),
                r.exact_bounds.to_string(),
                format!("{:.4}, {:.4}", r.mean_vs_bound, r.worst_vs_bound),
                format!("{:.4}, {:.4}", r.packer_mean_vs_bound, r.packer_worst_vs_bound),
                format!("{:.4}, {:.4}", r.ffd_mean_vs_bound, r.ffd_worst_vs_bound),
                format!("{:.2}, {:.2}", r.p50_ms, r.p99_ms),
            ]
        })
        .collect();
    rows_or_transposed(&header, &body, width)
}

/// The plans against the independent solver's optimum; None when it was not run.
pub fn optimum_table(rows: &[SmallBatches], width: u16) -> Option<Table> {
    let header = [
        "vs exact optimum",
        "solved (proven)",
        "Nodewright / optimum (mean, worst)",
        "over 1 %",
        "FFD / optimum (mean, worst)",
        "solver s (slowest)",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let o = r.optimum.as_ref()?;
            Some(vec![
                format!("{} pods", r.pods),
                format!("{} ({})", o.solved, o.proven),
                format!("{:.4}, {:.4}", o.mean, o.worst),
                o.over_one_percent.to_string(),
                format!("{:.4}, {:.4}", o.ffd_mean, o.ffd_worst),
                format!("{:.1}", o.solver_max_s),
            ])
        })
        .collect();
    (!body.is_empty()).then(|| rows_or_transposed(&header, &body, width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::assert_fits;
    use nodewright_core::catalogue::{Catalogue, OverheadConfig};

    #[test]
    fn small_batches_report_every_size_against_a_bound_the_plan_never_beats() {
        let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
        let rows = run(&types, 3, None);
        assert_eq!(rows.iter().map(|r| r.pods).collect::<Vec<_>>(), SIZES);
        for r in &rows {
            assert_eq!(r.batches, 3, "every batch plans claims and reports its cost");
            assert!(
                r.worst_vs_bound >= 1.0 - 1e-9 && r.mean_vs_bound >= 1.0 - 1e-9,
                "{}",
                r.pods
            );
            assert!(
                r.packer_worst_vs_bound >= r.worst_vs_bound - 1e-9 && r.packer_mean_vs_bound >= r.mean_vs_bound - 1e-9,
                "the search never makes a plan dearer than the packer's own at {} pods",
                r.pods
            );
            assert!(
                r.ffd_worst_vs_bound >= 1.0 - 1e-9,
                "FFD beat the bound at {} pods",
                r.pods
            );
        }
        assert!(rows.iter().all(|r| r.optimum.is_none()), "no solver, no optimum");
        // Ten pods of 12 shapes are always within the exact search's budget.
        assert_eq!(rows[0].exact_bounds, 3);
        for width in [80, 100] {
            let out = assert_fits(&table(&rows, width), width, "bench small batches");
            assert!(out.contains("60 pods"), "{out}");
        }
    }

    /// The independent solver (installed by `scripts/venv`, as the test command does) solves every
    /// batch, proves the small ones, and no plan is cheaper than an optimum it proved: a plan
    /// below a proven optimum would mean one of the two models places pods where they do not fit.
    #[test]
    fn the_independent_solver_proves_optima_no_plan_beats() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let solver = Solver {
            seconds: 5.0,
            ..Solver::project(&root).expect("scripts/venv installs OR-Tools into ./.venv")
        };
        let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
        let rows = run(&types, 2, Some(&solver));
        for r in &rows {
            let o = r.optimum.as_ref().expect("the solver ran");
            assert_eq!(o.solved, 2, "{} pods: the solver found a plan for every batch", r.pods);
            if o.proven == o.solved {
                assert!(o.worst >= 1.0 - 1e-9 && o.mean >= 1.0 - 1e-9, "{} pods: {o:?}", r.pods);
            }
            assert!(o.ffd_worst >= o.worst - 1e-9 || o.proven < o.solved, "{o:?}");
        }
        assert_eq!(
            rows[0].optimum.as_ref().map(|o| o.proven),
            Some(2),
            "10-pod batches are proven"
        );
        assert!(optimum_table(&rows, 100).is_some());
    }
}
