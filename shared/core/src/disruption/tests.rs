//! Disruption planner properties. Scenario tests (one data file per Karpenter behaviour) live in
//! `tests/scenarios/disruption/` and run from `shared/core/tests/disruption.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use proptest::prelude::{ProptestConfig, TestCaseError, prop, prop_assert, prop_assert_eq, prop_assert_ne, proptest};
use proptest::strategy::Strategy as Gen;

use super::*;
use crate::catalogue::{CapacityType, Catalogue, OverheadConfig};
use crate::labels;
use crate::nodepool::{Budget, BudgetNodes};

fn types() -> &'static [InstanceType] {
    static T: OnceLock<Vec<InstanceType>> = OnceLock::new();
    T.get_or_init(|| {
        let families = ["m5", "c5", "r5", "t3", "m6g"];
        Catalogue::embedded()
            .instance_types("us-east-1", &OverheadConfig::default())
            .into_iter()
            .filter(|t| families.contains(&t.labels[labels::INSTANCE_FAMILY].as_str()))
            .collect()
    })
}

const NODE_TYPES: [&str; 5] = ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.xlarge", "r5.large"];

/// A cluster: nodes of a few types with pods that fit them.
fn cluster() -> impl Gen<Value = (Vec<ManagedNode>, u64)> {
    let node = (
        prop::sample::select(NODE_TYPES.to_vec()),
        prop::bool::ANY,
        prop::collection::vec((100u64..1500, 128u64..3072, prop::bool::weighted(0.05)), 0..5),
    );
    (prop::collection::vec(node, 1..14), 1u64..6).prop_map(|(nodes, budget)| {
        let by_name: HashMap<&str, &InstanceType> = types().iter().map(|t| (t.name.as_str(), t)).collect();
        let mut out = Vec::new();
        for (i, (itype, spot, pods)) in nodes.into_iter().enumerate() {
            let mut n = Node::new(&format!("n{i:02}"), itype, "us-east-1a");
            n.pool = Some("default".into());
            n.capacity_type = if spot {
                CapacityType::Spot
            } else {
                CapacityType::OnDemand
            };
            let alloc = by_name[itype].allocatable.clone();
            let mut used = crate::resources::Resources::new();
            for (k, (cpu, mem, dnd)) in pods.into_iter().enumerate() {
                let mut p = Pod::new(&format!("p{i}-{k}"), cpu, mem << 20);
                p.do_not_disrupt = dnd;
                p.normalize();
                let mut next = used.clone();
                next.add(&p.requests);
                if next.fits_in(&alloc) {
                    used = next;
                    n.pods.push(p);
                }
            }
            out.push(ManagedNode::new(n, 0));
        }
        (out, budget)
    })
}

fn pool(budget: u64) -> NodePool {
    let mut p = NodePool::new("default");
    p.expire_after_secs = None;
    p.disruption.budgets = vec![Budget {
        nodes: BudgetNodes::Count(budget),
        schedule: None,
        duration_secs: None,
        reasons: Vec::new(),
    }];
    p
}

fn price_of(nodes: &[ManagedNode]) -> f64 {
    let by: BTreeMap<&str, &InstanceType> = types().iter().map(|t| (t.name.as_str(), t)).collect();
    nodes.iter().map(|m| simulation::node_price(&m.node, &by)).sum()
}

/// Every pod of the cluster is still somewhere, once, and every node's pods fit it.
fn check_conserved(before: &[ManagedNode], after: &[ManagedNode]) -> Result<(), TestCaseError> {
    let pods = |nodes: &[ManagedNode]| -> BTreeSet<String> {
        nodes
            .iter()
            .flat_map(|m| m.node.pods.iter().map(|p| p.uid.clone()))
            .collect()
    };
    let count: usize = after.iter().map(|m| m.node.pods.len()).sum();
    prop_assert!(pods(before) == pods(after), "pods lost or invented");
    prop_assert!(count == pods(after).len(), "a pod placed twice");
    for m in after {
        let alloc = types()
            .iter()
            .find(|t| t.name == m.node.instance_type)
            .map(|t| t.allocatable.clone())
            .unwrap_or_default();
        prop_assert!(m.node.requested().fits_in(&alloc), "node {} overcommitted", m.node.name);
    }
    Ok(())
}

/// The planner's input for `nodes` and `pools` at `now`: no DaemonSets, PDBs or class hashes.
fn input<'a>(
    nodes: &'a [ManagedNode],
    pools: &'a [NodePool],
    hashes: &'a BTreeMap<String, String>,
    now: i64,
) -> Input<'a> {
    Input {
        nodes,
        pools,
        instance_types: types(),
        type_index: None,
        daemonsets: &[],
        pdbs: &[],
        node_class_hashes: hashes,
        now,
    }
}

fn run(nodes: &[ManagedNode], pools: &[NodePool], now: i64, options: &Options) -> Plan {
    plan(&input(nodes, pools, &BTreeMap::new(), now), options)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After any plan: every displaced pod has a place, cost does not rise, budgets hold,
    /// do-not-disrupt nodes stay.
    #[test]
    fn plans_place_every_pod_save_and_respect_budgets((nodes, budget) in cluster()) {
        let pools = vec![pool(budget)];
        for options in [Options::default(), Options::karpenter()] {
            let p = run(&nodes, &pools, 100_000, &options);
            prop_assert!(p.disrupted_nodes() as u64 <= budget, "budget {budget} exceeded: {}", p.disrupted_nodes());
            let after = apply(&nodes, &p, 100_000);
            check_conserved(&nodes, &after)?;
            prop_assert!(price_of(&after) <= price_of(&nodes) + 1e-9, "cost rose");
            for a in &p.actions {
                for n in &a.nodes {
                    let m = nodes.iter().find(|m| &m.node.name == n).unwrap();
                    prop_assert!(!m.node.pods.iter().any(|p| p.do_not_disrupt), "{n} has a do-not-disrupt pod");
                }
            }
        }
    }

    /// Hysteresis: replaying the planner on a steady workload converges and then stays still —
    /// cost strictly falls with every action, so no set of nodes can come back.
    #[test]
    fn steady_workload_converges_without_oscillation((nodes, budget) in cluster()) {
        let pools = vec![pool(budget)];
        let mut state = nodes;
        let mut now = 100_000;
        let mut last_cost = price_of(&state);
        let mut seen: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
        let mut quiet = 0;
        for _ in 0..40 {
            let p = run(&state, &pools, now, &Options::default());
            if p.actions.is_empty() {
                quiet += 1;
                if quiet == 3 {
                    break;
                }
            } else {
                quiet = 0;
            }
            state = apply(&state, &p, now);
            let shape: Vec<(String, String)> = state
                .iter()
                .map(|m| (m.node.instance_type.clone(), m.node.capacity_type.to_string()))
                .collect();
            let cost = price_of(&state);
            prop_assert!(cost <= last_cost + 1e-9, "cost rose from {last_cost} to {cost}");
            if !p.actions.is_empty() {
                prop_assert!(cost < last_cost - 1e-9, "an action round that saved nothing");
                prop_assert!(seen.insert(shape), "the cluster returned to an earlier shape");
            }
            last_cost = cost;
            now += 3600;
        }
        prop_assert!(quiet == 3, "did not converge within 40 rounds");
    }
}

fn fingerprint_at(nodes: &[ManagedNode], pools: &[NodePool], now: i64) -> Option<u64> {
    fingerprint(&input(nodes, pools, &BTreeMap::new(), now))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Skipping a plan on an unchanged fingerprint is sound: two moments with one fingerprint plan
    /// alike (without expireAfter, the only input a fingerprint leaves out is a node's remaining
    /// lifetime), and the moment a node passes consolidateAfter changes it.
    #[test]
    fn one_fingerprint_one_plan(
        (mut nodes, budget) in cluster(),
        changes in prop::collection::vec(0i64..2_000, 14),
        later in 1i64..3_000,
    ) {
        for (m, at) in nodes.iter_mut().zip(&changes) {
            m.last_pod_change_at = Some(at + 10_000);
        }
        let mut pool = pool(budget);
        pool.disruption.consolidate_after_secs = Some(600);
        let pools = vec![pool];
        let (t1, t2) = (11_000, 11_000 + later);
        let f1 = fingerprint_at(&nodes, &pools, t1);
        let f2 = fingerprint_at(&nodes, &pools, t2);
        prop_assert!(f1.is_some());
        let p1 = run(&nodes, &pools, t1, &Options::default());
        let p2 = run(&nodes, &pools, t2, &Options::default());
        if f1 == f2 {
            prop_assert_eq!(&p1.actions, &p2.actions);
        }
        // Nodes leave the blocked list only by passing consolidateAfter here.
        if p1.blocked.len() != p2.blocked.len() {
            prop_assert_ne!(f1, f2, "a node became a candidate and the fingerprint did not change");
        }
    }
}

#[test]
fn a_pod_change_changes_the_fingerprint() {
    let mut n = Node::new("a", "m5.large", "us-east-1a");
    n.pool = Some("default".into());
    let m = ManagedNode::new(n, 0);
    let pools = [pool(1)];
    let before = fingerprint_at(std::slice::from_ref(&m), &pools, 100_000);
    assert_eq!(
        before,
        fingerprint_at(std::slice::from_ref(&m), &pools, 100_060),
        "nothing changed"
    );
    let mut busier = m.clone();
    busier.node.pods.push(Pod::new("p", 100, 1 << 20));
    assert_ne!(before, fingerprint_at(&[busier], &pools, 100_000));
}

#[test]
fn blocked_nodes_say_why() {
    let mut n = Node::new("young", "m5.large", "us-east-1a");
    n.pool = Some("default".into());
    let mut m = ManagedNode::new(n, 99_990);
    m.last_pod_change_at = Some(99_990);
    let mut p = pool(10);
    p.disruption.consolidate_after_secs = Some(60);
    let plan = run(&[m], &[p], 100_000, &Options::default());
    assert!(plan.actions.is_empty());
    assert_eq!(plan.blocked.len(), 1);
    assert!(
        plan.blocked[0].reason.contains("consolidateAfter is 60s"),
        "{:?}",
        plan.blocked
    );
}

#[test]
fn asg_pools_delete_idle_nodes_after_keep_alive_and_protect_busy_ones() {
    let mut p = pool(10);
    p.backing = crate::nodepool::PoolBacking::AutoScalingGroup {
        group_name: "gpu-spot".into(),
        min_size: 0,
        max_size: 10,
    };
    // consolidateAfter is the keep-alive: an idle spot node goes after 10 minutes without demand.
    p.disruption.consolidate_after_secs = Some(600);
    let node = |name: &str, pods: usize, last: i64| {
        let mut n = Node::new(name, "m5.xlarge", "us-east-1a");
        n.pool = Some("default".into());
        n.capacity_type = CapacityType::Spot;
        for k in 0..pods {
            let mut pod = Pod::new(&format!("{name}-{k}"), 200, 256 << 20);
            pod.normalize();
            n.pods.push(pod);
        }
        let mut m = ManagedNode::new(n, 0);
        m.last_pod_change_at = Some(last);
        m
    };
    let nodes = vec![
        node("idle-long", 0, 1_000),
        node("idle-short", 0, 99_900),
        node("busy", 2, 1_000),
    ];
    let plan = run(&nodes, &[p], 100_000, &Options::default());
    let disrupted: Vec<&str> = plan
        .actions
        .iter()
        .flat_map(|a| a.nodes.iter().map(String::as_str))
        .collect();
    assert_eq!(
        disrupted,
        vec!["idle-long"],
        "only the node idle past the keep-alive; ASG nodes are not consolidated"
    );
    assert!(
        plan.actions.iter().all(|a| a.replacements.is_empty()),
        "no replacements in a fixed-type group"
    );
    assert_eq!(plan.protect, vec!["busy".to_string()]);
}

/// After a peak: the api node has been stable long enough to be a candidate, the workers' nodes
/// have just emptied (consolidateAfter not yet passed). Karpenter would move the api pod onto one
/// of them; we never spend an eviction on a saving emptiness makes anyway.
#[test]
fn busy_nodes_are_not_consolidated_onto_nodes_emptiness_will_remove() {
    let now = 10_000;
    let mut nodes = Vec::new();
    let mut api = Node::new("api", "t3.medium", "us-east-1a");
    api.pool = Some("default".into());
    api.capacity_type = CapacityType::OnDemand;
    let mut pod = Pod::new("api-0", 1500, 2560 << 20);
    pod.normalize();
    api.pods.push(pod);
    let mut m = ManagedNode::new(api, 0);
    m.last_pod_change_at = Some(0);
    nodes.push(m);
    for i in 0..3 {
        let mut n = Node::new(&format!("worker-{i}"), "t3.medium", "us-east-1a");
        n.pool = Some("default".into());
        n.capacity_type = CapacityType::OnDemand;
        let mut m = ManagedNode::new(n, 0);
        // Emptied 10 s ago: emptiness removes them once consolidateAfter (30 s) has passed.
        m.last_pod_change_at = Some(now - 10);
        nodes.push(m);
    }
    let mut p = pool(10);
    p.disruption.consolidate_after_secs = Some(30);
    let planned = run(&nodes, std::slice::from_ref(&p), now, &Options::default());
    assert!(
        planned.actions.iter().all(|a| !a.nodes.contains(&"api".to_string())),
        "the api pod was moved onto a node about to be removed: {:?}",
        planned.actions
    );
    // Once the workers' nodes have gone, nothing else is proposed either: the api node is full.
    let later = run(&nodes, std::slice::from_ref(&p), now + 60, &Options::default());
    let emptied: Vec<&String> = later.actions.iter().flat_map(|a| &a.nodes).collect();
    assert_eq!(emptied.len(), 3, "the three empty nodes go: {:?}", later.actions);
    assert!(emptied.iter().all(|n| n.starts_with("worker-")), "{emptied:?}");

    // A node emptiness never removes (do-not-disrupt) stays a destination.
    let mut pinned = nodes.clone();
    pinned[1].do_not_disrupt = true;
    let moved = run(&pinned, std::slice::from_ref(&p), now, &Options::default());
    assert!(
        moved.actions.iter().any(|a| a.nodes == ["api"] && a.is_delete()),
        "the api pod may move onto a node that stays: {:?}",
        moved.actions
    );
}

/// A node's pods as a digest: the sorted uids (the handler hashes them; equality is what counts).
fn digests_of(nodes: &[ManagedNode]) -> HashMap<String, String> {
    nodes
        .iter()
        .map(|m| {
            let mut uids: Vec<&str> = m.node.pods.iter().map(|p| p.uid.as_str()).collect();
            uids.sort_unstable();
            (m.node.name.clone(), uids.join(","))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A stored plan taken up by the next run: on the cluster it was planned for every action still
    /// holds; once the first `k` are carried out (their nodes disrupting) exactly the rest hold, in
    /// order, within the budget the first `k` spent; a node whose pods changed drops its action; a
    /// budget closed since drops them all.
    #[test]
    fn a_resumed_plan_keeps_what_still_holds(
        (nodes, budget) in cluster(),
        done in 0usize..4,
        changed in 0usize..4,
    ) {
        let pools = vec![pool(budget)];
        let now = 100_000;
        let p = run(&nodes, &pools, now, &Options::default());
        let digests = digests_of(&nodes);
        let pending: Vec<PendingAction> =
            p.actions.iter().map(|a| PendingAction::of(a, |n| digests.get(n).cloned())).collect();
        let point = ResumePoint::decode(&ResumePoint::new(now * 1000, &pending).encode()).unwrap();
        // Stored and read back (JSON keeps the saving to within a rounding).
        prop_assert_eq!(point.actions.len(), pending.len());
        for (read, planned) in point.actions.iter().zip(&pending) {
            prop_assert_eq!(&read.nodes, &planned.nodes);
            prop_assert_eq!(&read.digests, &planned.digests);
            prop_assert!((read.saving - planned.saving).abs() < 1e-9);
        }
        let pending = point.actions.clone();
        let hashes = BTreeMap::new();
        let digest_of = |n: &str| digests.get(n).cloned();

        let same = still_valid(&input(&nodes, &pools, &hashes, now), &point, digest_of);
        prop_assert_eq!(&same, &pending);

        let k = done.min(pending.len());
        let mut after = nodes.clone();
        for a in &pending[..k] {
            for m in after.iter_mut().filter(|m| a.nodes.contains(&m.node.name)) {
                m.disrupting = true;
            }
        }
        let rest = still_valid(&input(&after, &pools, &hashes, now + 60), &point, digest_of);
        prop_assert_eq!(&rest, &pending[k..].to_vec());

        if let Some(a) = pending.get(k + changed) {
            let moved = a.nodes[0].clone();
            let touched = |n: &str| if n == moved { Some("another pod".to_string()) } else { digest_of(n) };
            let left = still_valid(&input(&after, &pools, &hashes, now + 60), &point, touched);
            // Dropped: every action that removes the node or moves pods onto it; kept: the rest.
            let untouched: Vec<PendingAction> =
                rest.iter().filter(|a| !a.digests.contains_key(&moved)).cloned().collect();
            prop_assert!(untouched.len() < rest.len());
            prop_assert_eq!(left, untouched);
        }

        let closed = vec![pool(0)];
        prop_assert!(still_valid(&input(&after, &closed, &hashes, now + 60), &point, digest_of).is_empty());
    }
}

#[test]
fn a_resume_point_is_bounded_and_refuses_oversized_input() {
    let action = PendingAction {
        reason: Reason::Empty,
        nodes: vec!["ip-10-0-0-1.ec2.internal".into()],
        replacements: 0,
        saving: 0.1,
        digests: BTreeMap::from([("ip-10-0-0-1.ec2.internal".to_string(), "0123456789abcdef".to_string())]),
    };
    let many = vec![action; 10_000];
    let point = ResumePoint::new(1, &many);
    let text = point.encode();
    assert!(text.len() <= MAX_RESUME_BYTES, "{} bytes", text.len());
    assert!(point.actions.len() > 1_000 && point.actions.len() < many.len());
    assert_eq!(ResumePoint::decode(&text).unwrap(), point);
    let err = ResumePoint::decode(&"x".repeat(MAX_RESUME_BYTES * 2)).unwrap_err();
    assert!(err.contains("bytes"), "{err}");
    assert!(point.is_current(RESUME_WITHIN_MS) && !point.is_current(RESUME_WITHIN_MS + 1));
}
