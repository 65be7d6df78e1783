//! Data-driven disruption scenarios: each file in `tests/scenarios/disruption/` re-expresses one
//! Karpenter disruption behaviour as input (NodePools, nodes with their pods, PDBs, the time) and the
//! expected outcome. Every scenario also gets the generic checks: deterministic, every displaced pod
//! placed, graceful actions never cost more than they remove.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nodewright_core::Config;
use nodewright_core::catalogue::{Catalogue, OverheadConfig};
use nodewright_core::disruption::{Input, ManagedNode, Options, Pdb, Plan, Reason, apply, plan};
use nodewright_core::model::Pod;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Scenario {
    /// The upstream Karpenter test this case re-expresses, where it re-expresses one.
    #[serde(default)]
    #[allow(dead_code)] // documentation for the reader of the file
    upstream: Option<String>,
    behaviour: String,
    now: i64,
    config: String,
    nodes: Vec<ManagedNode>,
    #[serde(default)]
    pdbs: Vec<Pdb>,
    #[serde(default)]
    daemonsets: Vec<Pod>,
    #[serde(default)]
    node_class_hashes: BTreeMap<String, String>,
    expect: Expect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    #[serde(default)]
    no_actions: bool,
    /// Exactly these nodes are removed by delete actions.
    deleted: Option<Vec<String>>,
    /// Exactly these nodes are removed by replace actions.
    replaced: Option<Vec<String>>,
    /// This many nodes are disrupted in all.
    disrupted: Option<usize>,
    #[serde(default)]
    reasons: BTreeMap<String, Reason>,
    #[serde(default)]
    untouched: Vec<String>,
    /// node -> a substring of the reason it is blocked.
    #[serde(default)]
    blocked: BTreeMap<String, String>,
    /// Every replacement launches only with these capacity types.
    replacement_capacity_types: Option<Vec<String>>,
    /// Every replacement option's type starts with one of these prefixes.
    replacement_type_prefixes: Option<Vec<String>>,
    /// After applying the plan: node count and total $/h bound.
    after_nodes: Option<usize>,
    after_price_below: Option<f64>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios/disruption")
}

fn generic_checks(nodes: &[ManagedNode], p: &Plan) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    // Actions are sequential: each sees the pods where the previous ones put them.
    let mut state = nodes.to_vec();
    for a in &p.actions {
        let nodes = state.clone();
        for n in &a.nodes {
            if !seen.insert(n.clone()) {
                return Err(format!("node {n} disrupted twice"));
            }
        }
        // Every displaced pod has a place (existing node or a replacement), for graceful actions.
        if a.reason != Reason::Expired {
            let displaced: BTreeSet<&str> = nodes
                .iter()
                .filter(|m| a.nodes.contains(&m.node.name))
                .flat_map(|m| {
                    m.node
                        .pods
                        .iter()
                        .filter(|p| !p.goes_with_node())
                        .map(|p| p.uid.as_str())
                })
                .collect();
            let placed: BTreeSet<&str> = a.placements.iter().map(|(p, _)| p.as_str()).collect();
            if displaced != placed {
                return Err(format!(
                    "{:?} on {:?}: displaced {displaced:?} but placed {placed:?}",
                    a.reason, a.nodes
                ));
            }
        }
        if matches!(a.reason, Reason::Empty | Reason::Underutilized) && a.saving() <= 0.0 {
            return Err(format!("action on {:?} does not save: {}", a.nodes, a.saving()));
        }
        let one = Plan {
            actions: vec![a.clone()],
            ..Plan::default()
        };
        state = apply(&nodes, &one, 0);
    }
    Ok(())
}

fn run(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut s: Scenario = serde_norway::from_str(&text).map_err(|e| format!("bad scenario file: {e}"))?;
    for m in s.nodes.iter_mut() {
        for p in m.node.pods.iter_mut() {
            p.normalize();
        }
    }
    for p in s.daemonsets.iter_mut() {
        p.normalize();
    }
    let (config, _) = Config::parse_strict(&s.config, "config").map_err(|e| e.to_string())?;
    let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let input = Input {
        nodes: &s.nodes,
        pools: &config.node_pools,
        instance_types: &types,
        type_index: None,
        daemonsets: &s.daemonsets,
        pdbs: &s.pdbs,
        node_class_hashes: &s.node_class_hashes,
        now: s.now,
    };
    let p = plan(&input, &Options::default());
    // Deterministic, and the same when planned from a prebuilt type index (as the function does).
    let index = nodewright_core::scheduler::TypeIndex::new(&types);
    let indexed = Input {
        type_index: Some(&index),
        ..input
    };
    if p != plan(&indexed, &Options::default()) {
        return Err("plan is not deterministic (or differs with a prebuilt type index)".into());
    }
    generic_checks(&s.nodes, &p)?;
    // The Karpenter baseline must also produce a valid plan.
    generic_checks(&s.nodes, &plan(&input, &Options::karpenter()))?;

    let e = &s.expect;
    let fail = |msg: String| {
        Err(format!(
            "{}\n{msg}\nplan: {}",
            s.behaviour,
            serde_json::to_string_pretty(&p).unwrap_or_default()
        ))
    };
    let set = |replace: bool| -> BTreeSet<String> {
        p.actions
            .iter()
            .filter(|a| a.is_delete() != replace)
            .flat_map(|a| a.nodes.iter().cloned())
            .collect()
    };
    if e.no_actions && !p.actions.is_empty() {
        return fail("expected no actions".into());
    }
    if let Some(d) = &e.deleted
        && set(false) != d.iter().cloned().collect()
    {
        return fail(format!("expected deleted {d:?}, got {:?}", set(false)));
    }
    if let Some(r) = &e.replaced
        && set(true) != r.iter().cloned().collect()
    {
        return fail(format!("expected replaced {r:?}, got {:?}", set(true)));
    }
    if let Some(n) = e.disrupted
        && p.disrupted_nodes() != n
    {
        return fail(format!("expected {n} disrupted nodes, got {}", p.disrupted_nodes()));
    }
    for (node, reason) in &e.reasons {
        match p.actions.iter().find(|a| a.nodes.contains(node)) {
            Some(a) if a.reason == *reason => {}
            Some(a) => return fail(format!("{node}: expected {reason:?}, got {:?}", a.reason)),
            None => return fail(format!("{node}: expected {reason:?}, not disrupted")),
        }
    }
    for node in &e.untouched {
        if p.actions.iter().any(|a| a.nodes.contains(node)) {
            return fail(format!("{node} should be untouched"));
        }
    }
    for (node, why) in &e.blocked {
        if !p
            .blocked
            .iter()
            .any(|b| &b.node == node && b.reason.contains(why.as_str()))
        {
            return fail(format!(
                "{node} should be blocked with {why:?}; blocked: {:?}",
                p.blocked
            ));
        }
    }
    let replacements: Vec<_> = p.actions.iter().flat_map(|a| a.replacements.iter()).collect();
    if let Some(cts) = &e.replacement_capacity_types {
        if replacements.is_empty() {
            return fail("expected a replacement".into());
        }
        for c in &replacements {
            let got: Vec<String> = c.capacity_types.iter().map(|c| c.as_str().to_string()).collect();
            if &got != cts
                || c.instance_types
                    .iter()
                    .any(|o| !cts.contains(&o.capacity_type.as_str().to_string()))
            {
                return fail(format!("replacement {} capacity types {got:?}, expected {cts:?}", c.id));
            }
        }
    }
    if let Some(prefixes) = &e.replacement_type_prefixes {
        if replacements.is_empty() {
            return fail("expected a replacement".into());
        }
        for c in &replacements {
            if let Some(o) = c
                .instance_types
                .iter()
                .find(|o| !prefixes.iter().any(|x| o.name.starts_with(x.as_str())))
            {
                return fail(format!("replacement option {} does not match {prefixes:?}", o.name));
            }
        }
    }
    let after = apply(&s.nodes, &p, s.now);
    if let Some(n) = e.after_nodes
        && after.len() != n
    {
        return fail(format!("expected {n} nodes after, got {}", after.len()));
    }
    if let Some(max) = e.after_price_below {
        let types_by: BTreeMap<&str, _> = types.iter().map(|t| (t.name.as_str(), t)).collect();
        let total: f64 = after
            .iter()
            .map(|m| {
                m.node.price.unwrap_or_else(|| {
                    types_by[m.node.instance_type.as_str()]
                        .cheapest_in(&[m.node.capacity_type], std::slice::from_ref(&m.node.zone))
                        .unwrap_or(0.0)
                })
            })
            .sum();
        if total >= max {
            return fail(format!("expected total below ${max}/h after, got {total}"));
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    support::run_scenario_files(&dir(), 13, run)
}
