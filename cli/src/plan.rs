//! `nodewright plan`: one scheduling decision, printed as a table or as JSON (docs/cli.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use comfy_table::Table;

use nodewright_core::catalogue::OverheadConfig;
use nodewright_core::model::{load_nodes, load_pods};
use nodewright_core::scheduler::{Input, Options, Plan, Strategy, schedule};
use nodewright_core::{Catalogue, Resources};
use serde::Serialize;

use crate::report::{self, first_fitting, keep_words, money, table_with_width};
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
    let config = match crate::load_config(&args.nodepools) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            config
        }
        Err((code, message)) => {
            eprintln!("{message}");
            return Ok(code);
        }
    };
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
    // Each pool's EC2NodeClass (kubelet, volumes) is applied per pool by the scheduler.
    let mut types = catalogue.instance_types(&args.region, &OverheadConfig::default());
    // No account here: zone IDs as the example mapping gives them (a → az1).
    nodewright_core::catalogue::zone_ids::assign_example(&mut types, &args.region);
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
            total_price_per_hour: money(plan.total_price()),
            plan: &plan,
        };
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
    } else {
        print_table(&plan, pod_file.pods.len());
    }
    Ok(exit::OK)
}

fn print_table(plan: &Plan, pods: usize) {
    let width = report::width();
    if !plan.bindings.is_empty() {
        println!("{} pod(s) fit on existing or in-flight nodes:", plan.bindings.len());
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for b in &plan.bindings {
            *per_node.entry(&b.node).or_default() += 1;
        }
        for (n, c) in per_node {
            println!("  {n}: {c} pod(s)");
        }
    }
    if !plan.claims.is_empty() {
        println!("{}", claims_table(plan, width));
    }
    if !plan.unschedulable.is_empty() {
        let groups = group_unschedulable(plan);
        println!(
            "{} pod(s) unschedulable for {} reason(s) (every pod is listed with --json):",
            plan.unschedulable.len(),
            groups.len()
        );
        println!("{}", unschedulable_table(&groups, width));
        let rest = &groups[groups.len().min(TOP_REASONS)..];
        if !rest.is_empty() {
            println!(
                "... {} more reason(s) for {} pod(s)",
                rest.len(),
                rest.iter().map(|g| g.pods.len()).sum::<usize>()
            );
        }
    }
    println!(
        "{} pod(s): {} on existing capacity, {} on {} new node(s) at ${:.4}/h, {} unschedulable",
        pods,
        plan.bindings.len(),
        plan.claims.iter().map(|c| c.pods.len()).sum::<usize>(),
        plan.claims.len(),
        money(plan.total_price()),
        plan.unschedulable.len()
    );
    if let Some(c) = plan.cost {
        println!("{}", gap_line(&c));
    }
    for line in relaxed_lines(plan) {
        println!("{line}");
    }
}

/// Pods whose preferences were relaxed, grouped by what was given up (most pods first, a few
/// names each; every pod is in `--json`'s `relaxed`).
fn relaxed_lines(plan: &Plan) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for r in &plan.relaxed {
        groups.entry(r.relaxations.join("; ")).or_default().push(&r.name);
    }
    let mut groups: Vec<(String, Vec<&str>)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::new();
    if !groups.is_empty() {
        out.push(format!(
            "{} pod(s) placed by relaxing their preferences (Karpenter's order):",
            plan.relaxed.len()
        ));
    }
    for (what, names) in groups.iter().take(TOP_REASONS) {
        let shown: Vec<&str> = names.iter().take(3).copied().collect();
        let more = names.len() - shown.len();
        out.push(format!(
            "  {} pod(s) ({}{}): {what}",
            names.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    out
}

/// How far the new nodes' price may be from the optimum, in one line.
fn gap_line(c: &nodewright_core::scheduler::PlanCost) -> String {
    format!(
        "new nodes ${:.4}/h; no packing of their pods costs less than ${:.4}/h (lower bound): at most {:.1} % above the optimum",
        money(c.price),
        money(c.lower_bound),
        c.gap * 100.0
    )
}

/// One row per claim to launch: every detail in its own column when the width allows, else claim
/// and pool, type, capacity and zone stacked in one cell each, else the alternatives counted.
fn claims_table(plan: &Plan, width: u16) -> Table {
    struct Row {
        id: String,
        pool: String,
        kind: String,
        capacity: String,
        zone: String,
        price: String,
        pods: String,
        requests: String,
        alternatives: String,
        others: String,
    }
    let rows: Vec<Row> = plan
        .claims
        .iter()
        .map(|c| {
            let first = &c.instance_types[0];
            let alternatives: Vec<&str> = c
                .instance_types
                .iter()
                .skip(1)
                .take(4)
                .map(|o| o.name.as_str())
                .collect();
            let more = c.instance_types.len().saturating_sub(5);
            Row {
                id: c.id.clone(),
                pool: c.pool.clone(),
                kind: first.name.clone(),
                capacity: first.capacity_type.to_string(),
                zone: if c.zones.len() == 1 {
                    c.zones[0].clone()
                } else {
                    format!("{} zones", c.zones.len())
                },
                price: format!("{:.4}", money(c.price)),
                pods: c.pods.len().to_string(),
                requests: short(&c.requests),
                alternatives: if more > 0 {
                    format!("{} +{more}", alternatives.join(", "))
                } else {
                    alternatives.join(", ")
                },
                others: c.instance_types.len().saturating_sub(1).to_string(),
            }
        })
        .collect();
    let mut wide = table_with_width(
        [
            "claim",
            "pool",
            "instance type",
            "capacity",
            "zone",
            "$/h",
            "pods",
            "requests",
            "alternatives",
        ],
        width,
    );
    let mut stacked = table_with_width(
        [
            "claim / pool",
            "type / capacity / zone",
            "$/h",
            "pods",
            "requests",
            "alternatives",
        ],
        width,
    );
    let mut counted = table_with_width(
        [
            "claim / pool",
            "type / capacity / zone",
            "$/h",
            "pods",
            "requests",
            "other types",
        ],
        width,
    );
    for r in &rows {
        wide.add_row([
            &r.id,
            &r.pool,
            &r.kind,
            &r.capacity,
            &r.zone,
            &r.price,
            &r.pods,
            &r.requests,
            &r.alternatives,
        ]);
        let claim = format!("{}\n{}", r.id, r.pool);
        let kind = format!("{}\n{}\n{}", r.kind, r.capacity, r.zone);
        stacked.add_row([&claim, &kind, &r.price, &r.pods, &r.requests, &r.alternatives]);
        counted.add_row([&claim, &kind, &r.price, &r.pods, &r.requests, &r.others]);
    }
    first_fitting([wide, stacked, counted])
}

/// Reasons shown in the text output; the rest are counted.
const TOP_REASONS: usize = 10;
/// Pod names shown per reason.
const EXAMPLES: usize = 3;

/// Unschedulable pods grouped by their reason, most pods first (then by reason).
struct ReasonGroup<'a> {
    reason: &'a str,
    pods: Vec<&'a str>,
}

fn group_unschedulable(plan: &Plan) -> Vec<ReasonGroup<'_>> {
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for u in &plan.unschedulable {
        by_reason.entry(&u.reason).or_default().push(&u.name);
    }
    let mut groups: Vec<ReasonGroup> = by_reason
        .into_iter()
        .map(|(reason, pods)| ReasonGroup { reason, pods })
        .collect();
    groups.sort_by(|a, b| b.pods.len().cmp(&a.pods.len()).then_with(|| a.reason.cmp(b.reason)));
    groups
}

/// The first [`TOP_REASONS`] groups: count, reason, a few pods.
fn unschedulable_table(groups: &[ReasonGroup], width: u16) -> Table {
    let mut t = table_with_width(["pods", "reason", "e.g."], width);
    for g in groups.iter().take(TOP_REASONS) {
        let mut examples = g.pods.iter().take(EXAMPLES).copied().collect::<Vec<_>>().join(", ");
        if g.pods.len() > EXAMPLES {
            examples.push_str(&format!(" +{} more", g.pods.len() - EXAMPLES));
        }
        t.add_row([g.pods.len().to_string(), g.reason.to_string(), examples]);
    }
    keep_words(&mut t);
    t
}

/// Requests without the pod count, one resource per word ("cpu=3500m, memory=13Gi") so a narrow
/// column wraps between them.
fn short(r: &Resources) -> String {
    let mut out = r.clone();
    out.set(nodewright_core::Resource::Pods, 0);
    out.to_string().replace(',', ", ")
}

#[cfg(test)]
mod tests {
    use nodewright_core::Config;
    use nodewright_core::scheduler::Unschedulable;

    use super::*;
    use crate::report::testing::assert_fits;

    fn repo(path: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The example NodePools' plan for a pods file of the repository.
    fn example_plan(pods: &str) -> Plan {
        let (config, _) =
            Config::parse_strict(&repo("examples/nodepools.yaml"), "nodepools.yaml").expect("example pools");
        let pod_file = load_pods(&repo(pods), pods).expect("pods");
        let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
        let input = Input {
            pods: &pod_file.pods,
            nodes: &[],
            pools: &config.node_pools,
            instance_types: &types,
            daemonsets: &pod_file.daemonsets,
            pool_usage: &[],
        };
        schedule(&input, &Options::default())
    }

    #[test]
    fn plan_tables_fit_80_and_100_columns() {
        // The Alibaba trace: 19 claims, and 8,109 pods unschedulable for 5 long reasons.
        let plan = example_plan("data/workloads/openb_pod_list_default.csv");
        assert!(plan.claims.len() > 5 && plan.unschedulable.len() > 1000);
        let groups = group_unschedulable(&plan);
        for width in [80, 100, 160] {
            let out = assert_fits(&claims_table(&plan, width), width, "plan claims");
            for c in &plan.claims {
                assert!(out.contains(&c.id), "{} missing at {width}:\n{out}", c.id);
                assert!(out.contains(&c.instance_types[0].name), "{out}");
            }
            let out = assert_fits(&unschedulable_table(&groups, width), width, "plan unschedulable");
            assert!(out.contains(&groups[0].pods.len().to_string()), "{out}");
        }
        // Wide enough, one line per claim and every column of its own.
        let out = claims_table(&plan, 200).to_string();
        assert!(out.contains("alternatives") && out.contains("capacity"), "{out}");
    }

    #[test]
    fn relaxed_pods_are_grouped_by_what_they_gave_up() {
        let relaxed = |name: &str, what: &[&str]| nodewright_core::scheduler::Relaxed {
            pod: name.into(),
            name: name.into(),
            claim: "claim-1".into(),
            relaxations: what.iter().map(|w| w.to_string()).collect(),
        };
        let weight = "preferred node affinity term of weight 100 dropped";
        let plan = Plan {
            relaxed: vec![
                relaxed("a", &[weight]),
                relaxed("b", &[weight]),
                relaxed("c", &["taint t:PreferNoSchedule of NodePool p tolerated"]),
                relaxed("d", &[weight]),
                relaxed("e", &[weight]),
            ],
            ..Plan::default()
        };
        let lines = relaxed_lines(&plan);
        assert_eq!(
            lines[0],
            "5 pod(s) placed by relaxing their preferences (Karpenter's order):"
        );
        assert_eq!(lines[1], format!("  4 pod(s) (a, b, d and 1 more): {weight}"));
        assert!(lines[2].starts_with("  1 pod(s) (c): taint t"), "{lines:?}");
        assert!(relaxed_lines(&Plan::default()).is_empty());
    }

    #[test]
    fn unschedulable_pods_are_grouped_by_reason_most_pods_first() {
        let pod = |name: &str, reason: &str| Unschedulable {
            pod: name.into(),
            name: name.into(),
            reason: reason.into(),
        };
        let plan = Plan {
            unschedulable: vec![
                pod("a", "too big"),
                pod("b", "no gpu"),
                pod("c", "no gpu"),
                pod("d", "no gpu"),
                pod("e", "no gpu"),
                pod("f", "taint"),
            ],
            ..Plan::default()
        };
        let groups = group_unschedulable(&plan);
        let summary: Vec<(&str, usize)> = groups.iter().map(|g| (g.reason, g.pods.len())).collect();
        assert_eq!(summary, [("no gpu", 4), ("taint", 1), ("too big", 1)]);
        let out = unschedulable_table(&groups, 100).to_string();
        assert!(out.contains("b, c, d +1 more"), "{out}");
        assert_eq!(out.matches("no gpu").count(), 1, "{out}");
        // Ten reasons at most in the table.
        let many = Plan {
            unschedulable: (0..25)
                .map(|i| pod(&format!("p{i}"), &format!("reason {i:02}")))
                .collect(),
            ..Plan::default()
        };
        let out = unschedulable_table(&group_unschedulable(&many), 100).to_string();
        assert!(out.contains("reason 09") && !out.contains("reason 10"), "{out}");
    }
}
