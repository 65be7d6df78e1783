//! Data-driven scheduling scenarios: each file in `tests/scenarios/scheduling/` re-expresses one
//! Karpenter scheduling behaviour as input (NodePools, pods, existing nodes, daemonsets) and the
//! expected outcome. Every scenario also gets the generic checks (no pod lost or placed twice,
//! every option fits its claim).

use std::collections::BTreeMap;
use std::path::PathBuf;

use nodewright_core::catalogue::{Catalogue, InstanceType, OverheadConfig};
use nodewright_core::model::{Node, Pod};
use nodewright_core::requirements::{LabelSource, Layered, Requirement};
use nodewright_core::scheduler::{ClaimPlan, Input, Options, Plan, Strategy, schedule};
use nodewright_core::{Config, labels};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Scenario {
    behaviour: String,
    #[serde(default = "default_region")]
    region: String,
    config: String,
    pods: Vec<Pod>,
    #[serde(default)]
    daemonsets: Vec<Pod>,
    #[serde(default)]
    existing: Vec<Node>,
    expect: Expect,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    claims: Option<usize>,
    #[serde(default)]
    bindings: BTreeMap<String, String>,
    #[serde(default)]
    unschedulable: BTreeMap<String, String>,
    #[serde(default)]
    claim_of: BTreeMap<String, ClaimExpect>,
    #[serde(default)]
    every_option: Vec<Requirement>,
    #[serde(default)]
    no_option: Vec<Requirement>,
    #[serde(default)]
    separate_nodes: Vec<Vec<String>>,
    zone_counts: Option<ZoneCounts>,
    min_distinct: Option<MinDistinct>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClaimExpect {
    instance_type: Option<String>,
    capacity_type: Option<String>,
    pool: Option<String>,
    /// The claim's price is the cheapest of every type the pool allows that fits the claim.
    #[serde(default)]
    cheapest: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ZoneCounts {
    pods: Vec<String>,
    zones: usize,
    max_skew: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MinDistinct {
    key: String,
    count: usize,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios/scheduling")
}

fn claim_of<'p>(plan: &'p Plan, uid: &str) -> Option<&'p ClaimPlan> {
    plan.claims.iter().find(|c| c.pods.iter().any(|p| p == uid))
}

fn run(path: &PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut s: Scenario = serde_norway::from_str(&text).map_err(|e| format!("bad scenario file: {e}"))?;
    for p in s.pods.iter_mut().chain(s.daemonsets.iter_mut()) {
        p.normalize();
    }
    for n in s.existing.iter_mut() {
        for p in n.pods.iter_mut() {
            p.normalize();
        }
    }
    let (config, _) = Config::parse_strict(&s.config, "config").map_err(|e| e.to_string())?;
    let types = Catalogue::embedded().instance_types(&s.region, &OverheadConfig::default());
    let input = Input {
        pods: &s.pods,
        nodes: &s.existing,
        pools: &config.node_pools,
        instance_types: &types,
        daemonsets: &s.daemonsets,
        pool_usage: &[],
    };
    let plan = schedule(&input, &Options::default());
    let again = schedule(&input, &Options::default());
    if plan != again {
        return Err("plan is not deterministic".into());
    }
    // The FFD baseline must also produce a valid plan for the same input.
    let ffd = schedule(
        &input,
        &Options {
            strategy: Strategy::FirstFitDecreasing,
            ..Options::default()
        },
    );
    for p in [&plan, &ffd] {
        generic_checks(&input, p, &types)?;
    }
    let e = &s.expect;
    let fail = |msg: String| {
        Err(format!(
            "{}\n{msg}\nplan: {}",
            s.behaviour,
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        ))
    };
    // A pod's uid by its name (pods of other namespaces are `namespace/name`).
    let uid_of = |pod: &str| {
        s.pods
            .iter()
            .find(|p| p.name == pod)
            .map_or_else(|| format!("default/{pod}"), |p| p.uid.clone())
    };
    if let Some(n) = e.claims
        && plan.claims.len() != n
    {
        return fail(format!("expected {n} claims, got {}", plan.claims.len()));
    }
    for (pod, node) in &e.bindings {
        let uid = uid_of(pod);
        if !plan.bindings.iter().any(|b| b.pod == uid && &b.node == node) {
            return fail(format!("expected {pod} bound to {node}"));
        }
    }
    for (pod, reason) in &e.unschedulable {
        let uid = uid_of(pod);
        match plan.unschedulable.iter().find(|u| u.pod == uid) {
            Some(u) if u.reason.contains(reason.as_str()) => {}
            Some(u) => return fail(format!("{pod}: reason {:?} does not contain {reason:?}", u.reason)),
            None => return fail(format!("expected {pod} unschedulable")),
        }
    }
    for (pod, ce) in &e.claim_of {
        let Some(c) = claim_of(&plan, &uid_of(pod)) else {
            return fail(format!("{pod} is not on a new claim"));
        };
        if let Some(t) = &ce.instance_type
            && &c.instance_types[0].name != t
        {
            return fail(format!("{pod}: expected {t}, got {}", c.instance_types[0].name));
        }
        if let Some(ct) = &ce.capacity_type
            && c.instance_types[0].capacity_type.as_str() != ct
        {
            return fail(format!(
                "{pod}: expected capacity type {ct}, got {}",
                c.instance_types[0].capacity_type
            ));
        }
        if let Some(pool) = &ce.pool
            && &c.pool != pool
        {
            return fail(format!("{pod}: expected pool {pool}, got {}", c.pool));
        }
        if ce.cheapest {
            let pool = config.node_pools.iter().find(|p| p.name == c.pool).ok_or("pool")?;
            let cheapest = types
                .iter()
                .filter(|t| {
                    let l = Layered(&c.labels, &t.labels);
                    pool.requirements
                        .iter()
                        .filter(|r| labels::INSTANCE_TYPE_KEYS.contains(&r.key.as_str()))
                        .all(|r| r.matches(l.label(&r.key)))
                        && !(t.accelerated || t.bare_metal)
                })
                .filter(|t| {
                    let mut need = c.requests.clone();
                    need.add(&c.daemonset_overhead);
                    need.fits_in(&t.allocatable)
                })
                .filter_map(|t| t.cheapest_in(&c.capacity_types, &c.zones))
                .fold(f64::INFINITY, f64::min);
            if c.price > cheapest + 1e-9 {
                return fail(format!(
                    "{pod}: price {} is above the cheapest fitting type's {cheapest}",
                    c.price
                ));
            }
        }
    }
    for c in &plan.claims {
        for o in &c.instance_types {
            let t = types.iter().find(|t| t.name == o.name).ok_or("unknown type")?;
            // An offering's labels: its type's, and its zone.
            let label = |key: &str| {
                if key == nodewright_core::labels::ZONE {
                    Some(o.zone.as_str())
                } else {
                    t.labels.label(key)
                }
            };
            for r in &e.every_option {
                if !r.matches(label(&r.key)) {
                    return fail(format!("{}: option {} breaks {r}", c.id, o.name));
                }
            }
            for r in &e.no_option {
                if r.matches(label(&r.key)) {
                    return fail(format!("{}: option {} satisfies forbidden {r}", c.id, o.name));
                }
            }
        }
    }
    for group in &e.separate_nodes {
        let mut homes = Vec::new();
        for pod in group {
            let uid = uid_of(pod);
            let home = claim_of(&plan, &uid)
                .map(|c| c.id.clone())
                .or_else(|| plan.bindings.iter().find(|b| b.pod == uid).map(|b| b.node.clone()))
                .ok_or(format!("{pod} not placed"))?;
            if homes.contains(&home) {
                return fail(format!("{pod} shares {home} with another pod of its group"));
            }
            homes.push(home);
        }
    }
    if let Some(z) = &e.zone_counts {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &z.pods {
            let c = claim_of(&plan, &uid_of(pod)).ok_or(format!("{pod} not on a claim"))?;
            if c.zones.len() != 1 {
                return fail(format!("{pod}'s claim is not pinned to one zone"));
            }
            *counts.entry(c.zones[0].clone()).or_default() += 1;
        }
        let (mn, mx) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        if counts.len() != z.zones || mx - mn > z.max_skew {
            return fail(format!("zone counts {counts:?}"));
        }
    }
    if let Some(m) = &e.min_distinct {
        for c in &plan.claims {
            let mut values: Vec<&str> = c
                .instance_types
                .iter()
                .filter_map(|o| {
                    types
                        .iter()
                        .find(|t| t.name == o.name)
                        .and_then(|t| t.labels.label(&m.key))
                })
                .collect();
            values.sort_unstable();
            values.dedup();
            if values.len() < m.count {
                return fail(format!("{}: only {} distinct {}", c.id, values.len(), m.key));
            }
        }
    }
    Ok(())
}

fn generic_checks(input: &Input, plan: &Plan, types: &[InstanceType]) -> Result<(), String> {
    let placed = plan.placed_pods() + plan.unschedulable.len();
    if placed != input.pods.len() {
        return Err(format!("{} pods in, {placed} accounted for", input.pods.len()));
    }
    for c in &plan.claims {
        for o in &c.instance_types {
            let t = types.iter().find(|t| t.name == o.name).ok_or("unknown type")?;
            let mut need = c.requests.clone();
            need.add(&c.daemonset_overhead);
            if !c.requests.fits_in(&t.allocatable) {
                return Err(format!("{}: {} does not fit", c.id, o.name));
            }
        }
    }
    Ok(())
}

#[test]
fn scheduling_scenarios() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/scenarios/scheduling exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected at least 15 scenarios, found {}",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            run(f)
                .err()
                .map(|e| format!("{}: {e}", f.file_name().unwrap_or_default().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
