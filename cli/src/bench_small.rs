//! `bench`'s small-batch table (issue #23): seeded batches of 10, 40 and 60 pods from 12 common
//! shapes on on-demand c5/m5/r5 (amd64), each plan against the bound it reports (the exact
//! search's whole-node optimum where the batch is within its budget, else column generation's
//! bound over node patterns, else the relaxation), with
//! the time each decision took and Karpenter-style FFD beside it.

use std::time::Instant;

use comfy_table::Table;
use nodewright_core::catalogue::InstanceType;
use nodewright_core::model::Pod;
use nodewright_core::nodepool::NodePool;
use nodewright_core::scheduler::{Input, Options, Strategy, schedule};
use nodewright_core::{Operator, Requirement, labels};
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

/// One row per size over `seeds` batches.
pub fn run(types: &[InstanceType], seeds: u64) -> Vec<SmallBatches> {
    let pools = vec![pool()];
    SIZES
        .iter()
        .map(|&n| {
            let (mut ratios, mut ffd_ratios, mut ms) = (Vec::new(), Vec::new(), Vec::new());
            let mut packer_ratios = Vec::new();
            let mut exact = 0;
            for seed in 1..=seeds {
                let pods = batch(n, seed);
                let input = Input {
                    pods: &pods,
                    nodes: &[],
                    pools: &pools,
                    instance_types: types,
                    daemonsets: &[],
                    pool_usage: &[],
                };
                let start = Instant::now();
                let plan = schedule(&input, &Options::default());
                ms.push(start.elapsed().as_secs_f64() * 1000.0);
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
            }
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
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::assert_fits;
    use nodewright_core::catalogue::{Catalogue, OverheadConfig};

    #[test]
    fn small_batches_report_every_size_against_a_bound_the_plan_never_beats() {
        let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
        let rows = run(&types, 3);
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
        // Ten pods of 12 shapes are always within the exact search's budget.
        assert_eq!(rows[0].exact_bounds, 3);
        for width in [80, 100] {
            let out = assert_fits(&table(&rows, width), width, "bench small batches");
            assert!(out.contains("60 pods"), "{out}");
        }
    }
}
