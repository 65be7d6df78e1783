//! Data-driven scheduling scenarios: each file in `tests/scenarios/scheduling/` re-expresses one
//! Karpenter scheduling test (named in its `upstream` field) as input (NodePools, pods as a user
//! writes them, existing nodes, daemonsets) and the expected outcome. Each file is its own test,
//! run by name (`cargo test -p nodewright-core --test scenarios -- 101-zone`). Every scenario also
//! gets the generic checks (no pod lost or placed twice, every option fits its claim, the plan is
//! deterministic, the FFD baseline's plan is valid too).
//!
//! A scenario with `knownGap` states a Karpenter behaviour Nodewright does not have yet: it must
//! fail, and the test fails when it starts to pass, so the gap list stays true.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nodewright_core::catalogue::{Catalogue, InstanceType, OverheadConfig, zone_ids};
use nodewright_core::model::{Node, Pod, load_pods};
use nodewright_core::requirements::{LabelSource, Layered, Requirement};
use nodewright_core::scheduler::{ClaimPlan, Input, InstanceOption, Options, Plan, Strategy, schedule};
use nodewright_core::{Config, labels};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Scenario {
    /// The upstream test re-expressed: file, then the Describe/Context path and the It name.
    upstream: String,
    behaviour: String,
    /// Where Nodewright deliberately differs from upstream; the expectations state ours.
    #[serde(default)]
    #[allow(dead_code)] // documentation for the reader of the file
    deviation: Option<String>,
    /// A Karpenter behaviour Nodewright does not have yet: the scenario must fail.
    #[serde(default)]
    known_gap: Option<String>,
    #[serde(default = "default_region")]
    region: String,
    config: String,
    /// Kubernetes objects (Pod, Deployment, ... DaemonSet) or compact pods.
    pods: serde_json::Value,
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
    /// Pods placed, on a new claim or an existing node.
    #[serde(default)]
    scheduled: Vec<String>,
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
    #[serde(default)]
    same_node: Vec<Vec<String>>,
    /// Pods counted per value of a key, compared as a multiset (upstream's ExpectSkew).
    #[serde(default)]
    domains: Vec<DomainCounts>,
    zone_counts: Option<ZoneCounts>,
    min_distinct: Option<MinDistinct>,
    /// When given, exactly these pods are placed by relaxing their preferences, each with these
    /// relaxations in order (each matched as a substring).
    relaxed: Option<BTreeMap<String, Vec<String>>>,
    /// Where we refuse a configuration Karpenter accepts (a stated deviation): reading `config`
    /// must fail with an error holding each of these, naming the field; nothing is planned.
    #[serde(default)]
    refused: Vec<String>,
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
    /// Every option of the claim carries these label values.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DomainCounts {
    key: String,
    /// Default: every placed pod of the scenario.
    #[serde(default)]
    pods: Vec<String>,
    /// Only pods with these labels count (upstream's ExpectSkew counts its selector's pods).
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    counts: Vec<usize>,
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

/// Runs one scenario file: its outcome, turned around for a known gap (which must fail).
fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let s: Scenario = serde_norway::from_str(&text).map_err(|e| format!("bad scenario file: {e}"))?;
    if s.upstream.trim().is_empty() {
        return Err("upstream: empty; name the upstream test this case re-expresses".into());
    }
    let gap = s.known_gap.clone();
    match (check(s), gap) {
        (Ok(()), Some(gap)) => Err(format!(
            "passes, but is marked as a known gap ({gap}): drop knownGap from the file"
        )),
        (Err(_), Some(_)) => Ok(()),
        (outcome, None) => outcome,
    }
}

fn check(mut s: Scenario) -> Result<(), String> {
    let pods_text = serde_json::to_string(&s.pods).map_err(|e| e.to_string())?;
    let file = load_pods(&pods_text, "pods").map_err(|e| e.to_string())?;
    let pods = file.pods;
    s.daemonsets.extend(file.daemonsets);
    for p in s.daemonsets.iter_mut() {
        p.normalize();
    }
    for n in s.existing.iter_mut() {
        for p in n.pods.iter_mut() {
            p.normalize();
        }
    }
    if !s.expect.refused.is_empty() {
        let err = match Config::parse_strict(&s.config, "config") {
            Ok(_) => return Err(format!("{}\nexpected the configuration to be refused", s.behaviour)),
            Err(e) => e.to_string(),
        };
        return match s.expect.refused.iter().find(|want| !err.contains(want.as_str())) {
            Some(want) => Err(format!("refused with {err:?}, which does not contain {want:?}")),
            None => Ok(()),
        };
    }
    let (config, _) = Config::parse_strict(&s.config, "config").map_err(|e| e.to_string())?;
    let mut types = Catalogue::embedded().instance_types(&s.region, &OverheadConfig::default());
    // The test account's zone IDs (upstream's fake subnets carry IDs too).
    zone_ids::assign_example(&mut types, &s.region);
    let input = Input {
        pods: &pods,
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
        pods.iter()
            .find(|p| p.name == pod || p.uid == pod)
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
    // Every relaxed pod is on the claim the plan names, and says what it gave up.
    for r in &plan.relaxed {
        let on = plan.claims.iter().find(|c| c.id == r.claim);
        if !on.is_some_and(|c| c.pods.contains(&r.pod)) || r.relaxations.is_empty() {
            return fail(format!("relaxed entry {r:?} does not match its claim"));
        }
    }
    if let Some(want) = &e.relaxed {
        let got: BTreeMap<String, Vec<String>> = plan
            .relaxed
            .iter()
            .map(|r| (r.pod.clone(), r.relaxations.clone()))
            .collect();
        let want_uids: BTreeSet<String> = want.keys().map(|p| uid_of(p)).collect();
        let got_uids: BTreeSet<String> = got.keys().cloned().collect();
        if want_uids != got_uids {
            return fail(format!("relaxed pods {got_uids:?}, expected {want_uids:?}"));
        }
        for (pod, parts) in want {
            let have = &got[&uid_of(pod)];
            let ok = have.len() == parts.len() && have.iter().zip(parts).all(|(h, p)| h.contains(p.as_str()));
            if !ok {
                return fail(format!("{pod}: relaxations {have:?}, expected {parts:?}"));
            }
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
                        && c.pods.iter().all(|uid| {
                            pods.iter()
                                .find(|p| &p.uid == uid)
                                .is_none_or(|p| admits_type(p, &t.labels))
                        })
                })
                .filter(|t| {
                    let mut need = c.requests.clone();
                    need.add(&c.daemonset_overhead);
                    need.fits_in(&pool.allocatable_of(t))
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
        if c.pods.is_empty() {
            return Err(format!("{} holds no pod: it would launch a node for nothing", c.id));
        }
        for o in &c.instance_types {
            let label = |key: &str| option_label(c, o, &types, key);
            for r in &e.every_option {
                if !r.matches(label(&r.key).as_deref()) {
                    return fail(format!("{}: option {} breaks {r}", c.id, o.name));
                }
            }
            for r in &e.no_option {
                if r.matches(label(&r.key).as_deref()) {
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
    for pod in &e.scheduled {
        if home_of(&plan, &uid_of(pod)).is_none() {
            return fail(format!("expected {pod} scheduled"));
        }
    }
    for group in &e.same_node {
        let homes: BTreeSet<Option<String>> = group.iter().map(|p| home_of(&plan, &uid_of(p))).collect();
        if homes.len() != 1 || homes.contains(&None) {
            return fail(format!("expected {group:?} on one node, got {homes:?}"));
        }
    }
    for (pod, ce) in &e.claim_of {
        let Some(c) = claim_of(&plan, &uid_of(pod)) else {
            continue;
        };
        for (key, want) in &ce.labels {
            for o in &c.instance_types {
                let got = option_label(c, o, &types, key);
                if got.as_deref() != Some(want.as_str()) {
                    return fail(format!(
                        "{pod}: option {} {} has {key}={got:?}, expected {want}",
                        o.name, o.zone
                    ));
                }
            }
        }
    }
    for d in &e.domains {
        // Default: every placed new pod and every pod already running (daemonsets aside).
        let selected = |p: &Pod| d.match_labels.iter().all(|(k, v)| p.labels.get(k) == Some(v));
        let names: Vec<String> = if d.pods.is_empty() {
            pods.iter()
                .filter(|p| home_of(&plan, &p.uid).is_some() && selected(p))
                .map(|p| p.uid.clone())
                .chain(
                    s.existing
                        .iter()
                        .flat_map(|n| &n.pods)
                        .filter(|p| !p.is_daemonset() && selected(p))
                        .map(|p| p.uid.clone()),
                )
                .collect()
        } else {
            d.pods.clone()
        };
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &names {
            let new = pods.iter().any(|p| &p.name == pod || &p.uid == pod);
            let running = s
                .existing
                .iter()
                .find(|n| n.pods.iter().any(|p| &p.name == pod || &p.uid == pod));
            let value = match running {
                Some(n) if !new => node_label(n, &d.key, &types),
                _ => domain_of(&plan, &uid_of(pod), &d.key, &types, &s.existing),
            };
            match value {
                Ok(v) => *counts.entry(v).or_default() += 1,
                Err(why) => return fail(format!("{pod}: {why}")),
            }
        }
        let mut got: Vec<usize> = counts.values().copied().collect();
        let mut want = d.counts.clone();
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            return fail(format!("{} counts {counts:?}, expected {:?}", d.key, d.counts));
        }
    }
    Ok(())
}

/// Where a pod landed: its claim's id or the existing node it is bound to.
fn home_of(plan: &Plan, uid: &str) -> Option<String> {
    claim_of(plan, uid)
        .map(|c| c.id.clone())
        .or_else(|| plan.bindings.iter().find(|b| b.pod == uid).map(|b| b.node.clone()))
}

/// A label of the node one option of a claim would become: the option's zone and capacity type,
/// the claim's id as hostname, the claim's labels, then its instance type's.
fn option_label(c: &ClaimPlan, o: &InstanceOption, types: &[InstanceType], key: &str) -> Option<String> {
    match key {
        labels::ZONE => Some(o.zone.clone()),
        labels::ZONE_ID => types
            .iter()
            .flat_map(|t| &t.offerings)
            .find(|x| x.zone == o.zone)
            .and_then(|x| x.zone_id.clone()),
        labels::CAPACITY_TYPE => Some(o.capacity_type.as_str().to_string()),
        labels::HOSTNAME => Some(c.id.clone()),
        labels::NODEPOOL => Some(c.pool.clone()),
        labels::INSTANCE_TYPE => Some(o.name.clone()),
        _ => c.labels.get(key).cloned().or_else(|| {
            types
                .iter()
                .find(|t| t.name == o.name)
                .and_then(|t| t.labels.label(key).map(str::to_string))
        }),
    }
}

/// The value of `key` on the node a pod landed on; a claim whose options disagree has none.
fn domain_of(plan: &Plan, uid: &str, key: &str, types: &[InstanceType], existing: &[Node]) -> Result<String, String> {
    if let Some(c) = claim_of(plan, uid) {
        let values: BTreeSet<Option<String>> = c
            .instance_types
            .iter()
            .map(|o| option_label(c, o, types, key))
            .collect();
        return match values.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(v)] => Ok(v.clone()),
            other => Err(format!("{}'s options do not share one {key}: {other:?}", c.id)),
        };
    }
    let node = plan
        .bindings
        .iter()
        .find(|b| b.pod == uid)
        .map(|b| b.node.as_str())
        .ok_or("not placed")?;
    let n = existing
        .iter()
        .find(|n| n.name == node)
        .ok_or(format!("bound to unknown node {node}"))?;
    node_label(n, key, types)
}

/// A label of an existing node: its own, the well-known ones, then its instance type's.
fn node_label(n: &Node, key: &str, types: &[InstanceType]) -> Result<String, String> {
    let type_labels = types.iter().find(|t| t.name == n.instance_type).map(|t| &t.labels);
    n.label_view(type_labels, None)
        .label(key)
        .map(str::to_string)
        .ok_or(format!("node {} has no {key}", n.name))
}

/// Whether a pod's nodeSelector and required node affinity admit an instance type's labels
/// (keys an instance type carries only; zones and capacity types are per offering).
fn admits_type(p: &Pod, type_labels: &BTreeMap<String, String>) -> bool {
    let of_type = |key: &str| labels::INSTANCE_TYPE_KEYS.contains(&key);
    let selector = p
        .node_selector
        .iter()
        .filter(|(k, _)| of_type(k))
        .all(|(k, v)| type_labels.get(k) == Some(v));
    let affinity = p.node_affinity.is_empty()
        || p.node_affinity.iter().any(|term| {
            term.iter()
                .filter(|r| of_type(&r.key))
                .all(|r| r.matches(type_labels.label(&r.key)))
        });
    selector && affinity
}

fn generic_checks(input: &Input, plan: &Plan, types: &[InstanceType]) -> Result<(), String> {
    let pool_of = |name: &str| input.pools.iter().find(|p| p.name == name);
    let placed = plan.placed_pods() + plan.unschedulable.len();
    if placed != input.pods.len() {
        return Err(format!("{} pods in, {placed} accounted for", input.pods.len()));
    }
    // Every plan with claims reports its cost against a bound that the plan itself must not beat
    // (the bound leaves constraints out; it may never exceed a feasible plan's price).
    match (&plan.cost, plan.claims.is_empty()) {
        (None, false) => return Err("a plan with claims reports no cost and bound".into()),
        (Some(c), false)
            if c.lower_bound > plan.total_price() + 1e-9 || (c.price - plan.total_price()).abs() > 1e-9 =>
        {
            return Err(format!("reported {c:?} for a plan costing {}", plan.total_price()));
        }
        _ => {}
    }
    for c in &plan.claims {
        for o in &c.instance_types {
            let t = types.iter().find(|t| t.name == o.name).ok_or("unknown type")?;
            let mut need = c.requests.clone();
            need.add(&c.daemonset_overhead);
            let pool = pool_of(&c.pool).ok_or(format!("{}: unknown pool {}", c.id, c.pool))?;
            if !need.fits_in(&pool.allocatable_of(t)) {
                return Err(format!("{}: {} does not fit", c.id, o.name));
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    support::run_scenario_files(&dir(), 15, run_file)
}
