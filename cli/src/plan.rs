//! `nodewright plan`: one scheduling decision, printed as a table or as JSON (docs/cli.md).

use std::path::PathBuf;

use nodewright_core::catalogue::OverheadConfig;
use nodewright_core::model::{load_nodes, load_pods};
use nodewright_core::scheduler::{Input, Options, Plan, Strategy, schedule};
use nodewright_core::{Catalogue, Config, Resources};
use serde::Serialize;

use crate::report::table;
use crate::{exit, read_file};

#[derive(clap::Args)]
pub struct Args {
    /// NodePool configuration files (NodePool, EC2NodeClass, Provisioner, AutoScalingPool).
    #[arg(long = "nodepool", required = true)]
    nodepools: Vec<PathBuf>,
    /// Pending pods: Kubernetes Pod/Deployment YAML or JSON, the compact form, or CSV
    /// (name,cpu_milli,memory_mib,num_gpu). DaemonSets in the file count as per-node overhead.
    #[arg(long)]
    pods: PathBuf,
    /// Existing nodes and in-flight claims (YAML/JSON list, see docs/cli.md).
    #[arg(long)]
    existing: Option<PathBuf>,
    /// AWS region whose offerings and zones to use.
    #[arg(long, default_value = "us-east-1", env = "AWS_REGION")]
    region: String,
    /// Print the plan as JSON (schema in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Packing strategy.
    #[arg(long, value_enum, default_value = "cost-aware")]
    strategy: StrategyArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    CostAware,
    Ffd,
}

/// The `--json` document: schema version 1.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanDocument<'a> {
    schema_version: u32,
    region: &'a str,
    total_price_per_hour: f64,
    #[serde(flatten)]
    plan: &'a Plan,
}

pub fn run(args: &Args) -> u8 {
    match plan(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

fn plan(args: &Args) -> Result<u8, String> {
    let mut config = Config::default();
    for f in &args.nodepools {
        let text = read_file(f)?;
        match Config::parse_strict(&text, &f.display().to_string()) {
            Ok((c, warnings)) => {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                config.merge(c);
            }
            Err(e) => {
                eprintln!("{e}");
                return Ok(exit::INVALID);
            }
        }
    }
    if config.node_pools.is_empty() {
        return Err("no NodePool in the --nodepool files".into());
    }
    let catalogue = Catalogue::embedded();
    if !catalogue.regions().contains(&args.region) {
        return Err(format!(
            "unknown region {:?} (the catalogue covers {})",
            args.region,
            catalogue.regions().join(", ")
        ));
    }
    let pod_text = read_file(&args.pods)?;
    let pod_file = load_pods(&pod_text, &args.pods.display().to_string()).map_err(|e| e.to_string())?;
    let nodes = match &args.existing {
        Some(p) => load_nodes(&read_file(p)?, &p.display().to_string()).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    // kubelet.maxPods of the first node class applies to allocatable.
    let overhead = OverheadConfig {
        max_pods: config.node_classes.first().and_then(|c| c.kubelet.max_pods),
        ..OverheadConfig::default()
    };
    let types = catalogue.instance_types(&args.region, &overhead);
    for n in &nodes {
        if n.allocatable.is_none() && !types.iter().any(|t| t.name == n.instance_type) {
            return Err(format!(
                "existing node {:?}: unknown instance type {:?} in {}",
                n.name, n.instance_type, args.region
            ));
        }
    }
    let input = Input {
        pods: &pod_file.pods,
        nodes: &nodes,
        pools: &config.node_pools,
        instance_types: &types,
        daemonsets: &pod_file.daemonsets,
        pool_usage: &[],
    };
    let options = Options {
        strategy: match args.strategy {
            StrategyArg::CostAware => Strategy::CostAware,
            StrategyArg::Ffd => Strategy::FirstFitDecreasing,
        },
        ..Options::default()
    };
    let plan = schedule(&input, &options);
    if args.json {
        let doc = PlanDocument {
            schema_version: 1,
            region: &args.region,
            total_price_per_hour: plan.total_price(),
            plan: &plan,
        };
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
    } else {
        print_table(&plan, pod_file.pods.len());
    }
    Ok(exit::OK)
}

fn print_table(plan: &Plan, pods: usize) {
    if !plan.bindings.is_empty() {
        println!("{} pod(s) fit on existing or in-flight nodes:", plan.bindings.len());
        let mut per_node: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for b in &plan.bindings {
            *per_node.entry(&b.node).or_default() += 1;
        }
        for (n, c) in per_node {
            println!("  {n}: {c} pod(s)");
        }
    }
    if !plan.claims.is_empty() {
        let mut t = table([
            "claim",
            "pool",
            "instance type",
            "capacity",
            "zone",
            "$/h",
            "pods",
            "requests",
            "alternatives",
        ]);
        for c in &plan.claims {
            let first = &c.instance_types[0];
            let alternatives: Vec<&str> = c
                .instance_types
                .iter()
                .skip(1)
                .take(4)
                .map(|o| o.name.as_str())
                .collect();
            let more = c.instance_types.len().saturating_sub(5);
            t.add_row([
                c.id.clone(),
                c.pool.clone(),
                first.name.clone(),
                first.capacity_type.to_string(),
                if c.zones.len() == 1 {
                    c.zones[0].clone()
                } else {
                    format!("{} zones", c.zones.len())
                },
                format!("{:.4}", c.price),
                c.pods.len().to_string(),
                short(&c.requests),
                if more > 0 {
                    format!("{} +{more}", alternatives.join(", "))
                } else {
                    alternatives.join(", ")
                },
            ]);
        }
        println!("{t}");
    }
    for u in &plan.unschedulable {
        println!("unschedulable {}: {}", u.name, u.reason);
    }
    println!(
        "{} pod(s): {} on existing capacity, {} on {} new node(s) at ${:.4}/h, {} unschedulable",
        pods,
        plan.bindings.len(),
        plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(),
        plan.claims.len(),
        plan.total_price(),
        plan.unschedulable.len()
    );
}

fn short(r: &Resources) -> String {
    let mut out = r.clone();
    out.set(nodewright_core::Resource::Pods, 0);
    out.to_string()
}
