//! `nodewright bench-disruption`: the disruption planner on generated clusters of 500, 2,000 and
//! 5,000 nodes (10 pods each), Nodewright's search side by side with a Karpenter-style baseline
//! (one multi-node command from a binary search over the first 100 candidates, else one
//! single-node command) in the same process and run: planning time and $/h saved per round.
//!
//! Clusters: pod shapes are the CPU-only pods of the Alibaba trace (data/workloads), requests scaled
//! by 1/8 so ten fit common instance sizes; each node's type is the cheapest that fits its ten pods,
//! grown by a random factor (1x-3x) to model the fragmentation a long-running cluster accumulates;
//! 60% spot, three zones. Seeded: the same seed gives the same clusters.

use std::path::PathBuf;

use comfy_table::Table;

use nodewright_core::catalogue::{CapacityType, InstanceType, OverheadConfig};
use nodewright_core::disruption::{self, ManagedNode, Options};
use nodewright_core::model::{Node, Pod, load_pods};
use nodewright_core::{Catalogue, NodePool, labels};
use serde::Serialize;

use crate::report::{self, best_of, first_fitting, money, transposed};
use crate::workloads::Rng;
use crate::{exit, read_file};

/// The Alibaba GPU trace, in the repository.
const DEFAULT_TRACE: &str = "data/workloads/openb_pod_list_default.csv";

#[derive(clap::Args)]
pub struct Args {
    /// Cluster sizes in nodes.
    #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
    nodes: Vec<usize>,
    /// The Alibaba trace (CSV); its CPU-only pods give the pod shapes.
    #[arg(long, default_value = DEFAULT_TRACE)]
    trace: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Repetitions per timing (the best is reported).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    nodes: usize,
    cluster_cost: f64,
    nodewright_ms: f64,
    nodewright_saving: f64,
    nodewright_disrupted: usize,
    nodewright_actions: usize,
    nodewright_evaluations: usize,
    karpenter_ms: f64,
    karpenter_saving: f64,
    karpenter_disrupted: usize,
    karpenter_evaluations: usize,
}

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn price(t: &InstanceType, ct: CapacityType, zone: &str) -> Option<f64> {
    t.cheapest_in(&[ct], &[zone.to_string()])
}

/// A generated cluster of `n` nodes with ten pods each.
fn cluster(n: usize, shapes: &[Pod], types: &[InstanceType], seed: u64) -> Vec<ManagedNode> {
    let mut rng = Rng::new(seed ^ n as u64);
    // General-purpose candidates for the launched nodes (what a default pool mostly picks).
    let general: Vec<&InstanceType> = types
        .iter()
        .filter(|t| !t.accelerated && !t.bare_metal)
        .filter(|t| ["m", "c", "r"].contains(&t.labels.get(labels::INSTANCE_CATEGORY).map_or("", |s| s.as_str())))
        .collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut pods = Vec::with_capacity(10);
        let mut need = nodewright_core::Resources::new();
        for k in 0..10 {
            let shape = rng.pick(shapes);
            let mut p = Pod::new(
                &format!("n{i}-p{k}"),
                shape.requests.cpu_milli() / 8,
                shape.requests.memory() / 8,
            );
            p.normalize();
            need.add(&p.requests);
            pods.push(p);
        }
        let factor = [1.0, 1.0, 1.5, 2.0, 3.0][rng.below(5) as usize];
        let zone = ZONES[rng.below(3) as usize];
        let ct = if rng.below(10) < 6 {
            CapacityType::Spot
        } else {
            CapacityType::OnDemand
        };
        let mut grown = need.clone();
        grown.set(
            nodewright_core::Resource::Cpu,
            (need.cpu_milli() as f64 * factor) as u64,
        );
        grown.set(
            nodewright_core::Resource::Memory,
            (need.memory() as f64 * factor) as u64,
        );
        let pick = general
            .iter()
            .filter(|t| grown.fits_in(&t.allocatable) && need.fits_in(&t.allocatable))
            .filter_map(|t| price(t, ct, zone).map(|p| (p, *t)))
            .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let Some((_, t)) = pick else { continue };
        let mut node = Node::new(&format!("node-{i:05}"), &t.name, zone);
        node.pool = Some("default".into());
        node.capacity_type = ct;
        node.pods = pods;
        out.push(ManagedNode::new(node, 0));
    }
    out
}

pub fn run(args: &Args) -> u8 {
    let trace_path = match crate::paths::default_file(&args.trace, DEFAULT_TRACE, "--trace") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let shapes: Vec<Pod> = match read_file(&trace_path)
        .and_then(|t| load_pods(&t, &trace_path.display().to_string()).map_err(|e| e.to_string()))
    {
        Ok(f) => f.pods.into_iter().filter(|p| p.requests.accelerators() == 0).collect(),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if shapes.is_empty() {
        eprintln!("error: {}: no CPU-only pods", trace_path.display());
        return exit::USAGE;
    }
    let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let pools = vec![NodePool::new("default")];
    let hashes = Default::default();
    // Built once, as the consolidation function's settings hold it across plans.
    let type_index = nodewright_core::scheduler::TypeIndex::new(&types);
    let mut rows = Vec::new();
    for &n in &args.nodes {
        let nodes = cluster(n, &shapes, &types, args.seed);
        let input = disruption::Input {
            nodes: &nodes,
            pools: &pools,
            instance_types: &types,
            type_index: Some(&type_index),
            daemonsets: &[],
            pdbs: &[],
            node_class_hashes: &hashes,
            now: 1_000_000,
        };
        let by: std::collections::BTreeMap<&str, &InstanceType> = types.iter().map(|t| (t.name.as_str(), t)).collect();
        let cluster_cost: f64 = nodes
            .iter()
            .map(|m| price(by[m.node.instance_type.as_str()], m.node.capacity_type, &m.node.zone).unwrap_or(0.0))
            .sum();
        let (ours, ours_ms) = best_of(args.repeat, || disruption::plan(&input, &Options::default()));
        let (base, base_ms) = best_of(args.repeat, || disruption::plan(&input, &Options::karpenter()));
        rows.push(Row {
            nodes: nodes.len(),
            cluster_cost,
            nodewright_ms: ours_ms,
            nodewright_saving: ours.saving(),
            nodewright_disrupted: ours.disrupted_nodes(),
            nodewright_actions: ours.actions.len(),
            nodewright_evaluations: ours.evaluations,
            karpenter_ms: base_ms,
            karpenter_saving: base.saving(),
            karpenter_disrupted: base.disrupted_nodes(),
            karpenter_evaluations: base.evaluations,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return exit::OK;
    }
    println!("Disruption planning, one round, default NodePool (budget 10%), real us-east-1 catalogue");
    println!("{}", rows_table(&rows, report::width()));
    exit::OK
}

/// One row per cluster size: Nodewright's round next to the Karpenter-style one (one column per
/// size when that is too wide).
fn rows_table(rows: &[Row], width: u16) -> Table {
    let header = [
        "nodes",
        "cluster $/h",
        "Nodewright ms",
        "saved $/h",
        "nodes disrupted",
        "evaluations",
        "Karpenter-style ms",
        "saved $/h",
        "nodes disrupted",
        "evaluations",
        "saving ratio",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let ratio = if r.karpenter_saving > 0.0 {
                format!("{:.2}x", r.nodewright_saving / r.karpenter_saving)
            } else {
                "-".into()
            };
            vec![
                r.nodes.to_string(),
                format!("{:.2}", money(r.cluster_cost)),
                format!("{:.0}", r.nodewright_ms),
                format!("{:.2}", money(r.nodewright_saving)),
                r.nodewright_disrupted.to_string(),
                r.nodewright_evaluations.to_string(),
                format!("{:.0}", r.karpenter_ms),
                format!("{:.2}", money(r.karpenter_saving)),
                r.karpenter_disrupted.to_string(),
                r.karpenter_evaluations.to_string(),
                ratio,
            ]
        })
        .collect();
    let wide = report::rows_table(&header, &cells, width);
    // On their side the two "saved $/h" lines need their owner.
    let side = [
        "nodes",
        "cluster $/h",
        "Nodewright ms",
        "Nodewright saved $/h",
        "Nodewright nodes disrupted",
        "Nodewright evaluations",
        "Karpenter-style ms",
        "Karpenter-style saved $/h",
        "Karpenter-style nodes disrupted",
        "Karpenter-style evaluations",
        "saving ratio",
    ];
    first_fitting([wide, transposed(&side, &cells, width)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::assert_fits;

    #[test]
    fn disruption_table_fits_80_and_100_columns() {
        let rows: Vec<Row> = [500, 5000, 50_000]
            .into_iter()
            .map(|n| Row {
                nodes: n,
                cluster_cost: n as f64 * 1.2345,
                nodewright_ms: 12_345.0,
                nodewright_saving: 1234.56,
                nodewright_disrupted: n / 10,
                nodewright_actions: 12,
                nodewright_evaluations: 123_456,
                karpenter_ms: 54_321.0,
                karpenter_saving: 0.0,
                karpenter_disrupted: 1,
                karpenter_evaluations: 100,
            })
            .collect();
        for width in [80, 100] {
            let out = assert_fits(&rows_table(&rows, width), width, "bench-disruption");
            assert!(out.contains("61725.00") && out.contains("1234.56"), "{out}");
            // No Karpenter saving: no ratio, not inf.
            assert!(!out.contains("inf"), "{out}");
        }
    }
}
