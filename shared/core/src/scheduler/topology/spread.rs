//! Topology spread on any key but the hostname: pods dealt over the domains before packing
//! ([`deal`]), and the skew checked again on what was placed ([`enforce`]).

use crate::model::{LabelSelector, NodeInclusionPolicy, Pod, SpreadConstraint, WhenUnsatisfiable};

use super::super::claim::Claim;
use super::super::prepare::{Prepared, matching_on};
use super::{Domains, Key, Mask};

/// A spread group: pods of one namespace counted by one selector on one key, under one pair of
/// node-inclusion policies (Karpenter's `TopologyGroup`).
#[derive(Clone, PartialEq)]
struct Group<'p> {
    namespace: &'p str,
    selector: &'p LabelSelector,
    affinity: NodeInclusionPolicy,
    taints: NodeInclusionPolicy,
}

fn constraints<'p>(p: &'p Pod, key: &Key) -> impl Iterator<Item = &'p SpreadConstraint> {
    let key = key.name().to_string();
    p.topology_spread.iter().filter(move |s| s.topology_key == key)
}

/// Pods counted by a spread selector are dealt over the domains, the emptiest first, so the
/// counts differ by as little as the pods' own domains allow; the most constrained pods choose
/// first, so the flexible ones can even out the counts. Pods already pinned on the key (pod
/// affinity, anti-affinity) keep their domain and count. DoNotSchedule and ScheduleAnyway are
/// dealt alike (the second is kept when it can be: Karpenter relaxes it only when it cannot).
/// A pod whose DoNotSchedule constraint names a label no node it could launch carries is
/// unschedulable (Kubernetes never places it on a node without the key).
///
/// The skew is measured over `required`: the domains each pod could launch into with its
/// preferred node affinity given up, as Karpenter counts them. A pod whose preferences keep it
/// in domains where it would exceed `maxSkew` gives them up (Karpenter relaxes a preference
/// before it leaves a pod pending) and is dealt over all its domains; those pods are returned.
pub fn deal(
    prep: &Prepared,
    dom: &Domains,
    eligible: &[Mask],
    required: &[Mask],
    pin: &mut [Option<usize>],
    skip: &mut [bool],
) -> (Vec<(usize, String)>, Vec<usize>) {
    let mut relaxed = Vec::new();
    let pods = prep.input.pods;
    let mut seen: Vec<Group> = Vec::new();
    for (ci, carrier) in pods.iter().enumerate() {
        if skip[ci] {
            continue;
        }
        for s in constraints(carrier, &dom.key) {
            let g = Group {
                namespace: &carrier.namespace,
                selector: &s.selector,
                affinity: s.node_affinity_policy,
                taints: s.node_taints_policy,
            };
            if seen.contains(&g) {
                continue;
            }
            seen.push(g.clone());
            let carries =
                |q: &Pod| q.namespace == g.namespace && constraints(q, &dom.key).any(|x| x.selector == *g.selector);
            let counted = |q: &Pod| q.namespace == g.namespace && g.selector.matches(&q.labels);
            // Domains: every one some carrier of this group could launch into.
            let mut domains = Mask::default();
            for (i, q) in pods.iter().enumerate() {
                if !skip[i] && carries(q) {
                    domains.or(&required[i]);
                }
            }
            if domains.is_empty() {
                continue;
            }
            // Pods on the existing nodes, each node in its domain; with nodeTaintsPolicy Honor,
            // nodes whose taints the carrier does not tolerate are left out.
            let sig = prep.base_sig[ci];
            let mut counts = vec![0u64; dom.values.len()];
            for (n, node) in prep.input.nodes.iter().enumerate() {
                if dom.counts_node(prep, sig, n, NodeInclusionPolicy::Ignore, g.taints)
                    && let Some(d) = dom.of_node(prep, n)
                {
                    counts[d] += matching_on(node, g.namespace, g.selector);
                }
            }
            let mut members: Vec<usize> = (0..pods.len())
                .filter(|&i| !skip[i] && (counted(&pods[i]) || carries(&pods[i])))
                .collect();
            for &i in &members {
                if let Some(d) = pin[i]
                    && counted(&pods[i])
                {
                    counts[d] += 1;
                }
            }
            members.sort_by_key(|&i| (eligible[i].count(), i));
            for i in members {
                if pin[i].is_some() {
                    continue;
                }
                let emptiest = |m: &Mask| m.iter().min_by_key(|&d| (counts[d], d));
                let mut choice = emptiest(&domains.and(&eligible[i]));
                if required[i] != eligible[i] {
                    // Skew against the emptiest domain the pod could reach without preferences.
                    let all = domains.and(&required[i]);
                    let floor = all.iter().map(|d| counts[d]).min().unwrap_or(0);
                    let over = |d: usize| counts[d] + u64::from(counted(&pods[i])) > floor + u64::from(s.max_skew);
                    if choice.is_none_or(over) {
                        choice = emptiest(&all);
                        if choice.is_some() {
                            relaxed.push(i);
                        }
                    }
                }
                if let Some(d) = choice {
                    pin[i] = Some(d);
                    if counted(&pods[i]) {
                        counts[d] += 1;
                    }
                }
            }
        }
    }
    let mut failed = Vec::new();
    if matches!(dom.key, Key::Label(_)) {
        for (i, p) in pods.iter().enumerate() {
            let hard = constraints(p, &dom.key).any(|s| s.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule);
            if hard && !skip[i] && pin[i].is_none() {
                skip[i] = true;
                failed.push((
                    i,
                    format!(
                        "topology spread on {} cannot be met: no node it could launch carries the label",
                        dom.key.name()
                    ),
                ));
            }
        }
    }
    (failed, relaxed)
}

/// The domain of a planned claim on the key, when all its options share one.
fn claim_domain(prep: &Prepared, dom: &Domains, c: &Claim) -> Option<usize> {
    match &dom.key {
        Key::Zone => (c.zones.count_ones() == 1).then(|| c.zones.trailing_zeros() as usize),
        Key::CapacityType => (c.cts.count_ones() == 1).then(|| c.cts.trailing_zeros() as usize),
        Key::Hostname => None,
        Key::Label(_) => {
            let mut found = None;
            for t in c.types.iter() {
                let d = dom.of_launch(prep, c.pool, t)?;
                if found.is_some_and(|f| f != d) {
                    return None;
                }
                found = Some(d);
            }
            found
        }
    }
}

/// Spread (DoNotSchedule) must hold for what is actually placed: when limits or capacity leave
/// part of a group unplaced, the fullest domains give pods back until the skew is within bounds,
/// as the pod-at-a-time placement in Kubernetes would have left it.
pub(in crate::scheduler) fn enforce(
    prep: &Prepared,
    claims: &mut Vec<Claim>,
    bindings: &mut Vec<(usize, usize)>,
    failed: &mut Vec<(usize, String)>,
) {
    let pods = prep.input.pods;
    let hard = |s: &&SpreadConstraint| {
        s.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule && Key::of(&s.topology_key) != Key::Hostname
    };
    if !pods.iter().any(|p| p.topology_spread.iter().any(|s| hard(&s))) {
        return;
    }
    type Rule<'p> = (&'p str, &'p SpreadConstraint);
    let mut rules: Vec<Rule> = Vec::new();
    for p in pods {
        for s in p.topology_spread.iter().filter(hard) {
            let same = |(ns, x): &Rule| {
                *ns == p.namespace
                    && x.topology_key == s.topology_key
                    && x.selector == s.selector
                    && x.max_skew == s.max_skew
                    && x.min_domains == s.min_domains
                    && x.node_affinity_policy == s.node_affinity_policy
                    && x.node_taints_policy == s.node_taints_policy
            };
            if !rules.iter().any(same) {
                rules.push((&p.namespace, s));
            }
        }
    }
    let mut domains_of: Vec<Domains> = Vec::new();
    for (ns, rule) in rules {
        let key = Key::of(&rule.topology_key);
        if !domains_of.iter().any(|d| d.key == key) {
            domains_of.push(Domains::of(prep, key.clone()));
        }
        let Some(dom) = domains_of.iter().find(|d| d.key == key) else {
            continue;
        };
        enforce_rule(prep, dom, ns, rule, claims, bindings, failed);
    }
    claims.retain(|c| !c.pods.is_empty());
}

fn enforce_rule(
    prep: &Prepared,
    dom: &Domains,
    ns: &str,
    rule: &SpreadConstraint,
    claims: &mut [Claim],
    bindings: &mut Vec<(usize, usize)>,
    failed: &mut Vec<(usize, String)>,
) {
    let pods = prep.input.pods;
    let sel = &rule.selector;
    let skew = i64::from(rule.max_skew);
    // The group's pods: those its selector counts, and those that carry the constraint without
    // matching it (placed, they must keep the skew too; they do not add to it).
    // Decided once per pod: the victim search below asks again for every pod on every claim.
    let carries = |i: usize| {
        pods[i].namespace == ns
            && pods[i].topology_spread.iter().any(|s| {
                s.topology_key == rule.topology_key
                    && s.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule
                    && s.selector == *sel
                    && s.max_skew == rule.max_skew
                    && s.min_domains == rule.min_domains
            })
    };
    let is_counted: Vec<bool> = pods
        .iter()
        .map(|p| p.namespace == ns && sel.matches(&p.labels))
        .collect();
    let is_carrier: Vec<bool> = (0..pods.len()).map(carries).collect();
    let counted = |i: usize| is_counted[i];
    let matches = |i: usize| is_counted[i] || is_carrier[i];
    // A member's domains: what its node selector, affinity and pools allow (whether or not a
    // type that fits it is offered there: size does not make a domain, as in Kubernetes), and
    // those of the existing nodes the policies count (a domain known only from a node the pools
    // no longer allow still counts).
    let mut by_sig: Vec<(usize, Mask)> = Vec::new();
    let own: Vec<Mask> = (0..pods.len())
        .map(|i| {
            if !matches(i) {
                return Mask::default();
            }
            let sig = prep.base_sig[i];
            if let Some((_, m)) = by_sig.iter().find(|(s, _)| *s == sig) {
                return m.clone();
            }
            let mut m = dom.of_pools(prep, sig);
            m.or(&dom.of_nodes(prep, sig, rule.node_affinity_policy, rule.node_taints_policy));
            by_sig.push((sig, m.clone()));
            m
        })
        .collect();
    let mut domains = Mask::default();
    for m in &own {
        domains.or(m);
    }
    // Pods on the existing nodes, each in its domain; with nodeTaintsPolicy Honor, nodes whose
    // taints the first carrier does not tolerate are left out.
    let Some(first) = (0..pods.len()).find(|&i| is_carrier[i]) else {
        return;
    };
    let mut counts = vec![0i64; dom.values.len()];
    for (n, node) in prep.input.nodes.iter().enumerate() {
        if dom.counts_node(
            prep,
            prep.base_sig[first],
            n,
            NodeInclusionPolicy::Ignore,
            rule.node_taints_policy,
        ) && let Some(d) = dom.of_node(prep, n)
        {
            counts[d] += matching_on(node, ns, sel) as i64;
        }
    }
    for c in claims.iter() {
        if let Some(d) = claim_domain(prep, dom, c) {
            counts[d] += c.pods.iter().filter(|p| counted(**p)).count() as i64;
        }
    }
    let node_domain: Vec<Option<usize>> = (0..prep.nodes.len()).map(|n| dom.of_node(prep, n)).collect();
    for (p, n) in bindings.iter() {
        if counted(*p)
            && let Some(d) = node_domain[*n]
        {
            counts[d] += 1;
        }
    }
    // A pod's skew is measured over the domains it may use itself (nodeAffinityPolicy Honor):
    // pods pinned to one zone by their node selector never compete with zones they cannot reach.
    let min_over = |counts: &[i64], p: usize| own[p].iter().min_by_key(|d| (counts[*d], *d));
    // Fewer domains than minDomains: the global minimum counts as 0.
    let floor = |counts: &[i64], p: usize| match rule.min_domains {
        Some(m) if own[p].count() < m => Some(0),
        _ => min_over(counts, p).map(|d| counts[d]),
    };
    let breaks =
        |counts: &[i64], p: usize, d: usize| matches(p) && floor(counts, p).is_some_and(|m| counts[d] - m > skew);
    loop {
        let mut fullest: Vec<usize> = domains.iter().collect();
        fullest.sort_by_key(|d| (std::cmp::Reverse(counts[*d]), *d));
        // The last placed pod of the fullest domain that holds one breaking its skew.
        let mut victim = None;
        for &d in &fullest {
            let on_claim = claims.iter().enumerate().rev().find_map(|(ci, c)| {
                (claim_domain(prep, dom, c) == Some(d))
                    .then(|| c.pods.iter().rposition(|p| breaks(&counts, *p, d)))
                    .flatten()
                    .map(|pos| (ci, pos))
            });
            if let Some((ci, pos)) = on_claim {
                victim = Some((d, Some(ci), pos));
                break;
            }
            if let Some(pos) = bindings
                .iter()
                .rposition(|(p, n)| node_domain[*n] == Some(d) && breaks(&counts, *p, d))
            {
                victim = Some((d, None, pos));
                break;
            }
        }
        let Some((d, claim, pos)) = victim else {
            break;
        };
        let p = match claim {
            Some(ci) => {
                let c = &mut claims[ci];
                let p = c.pods.remove(pos);
                c.load.saturating_sub(&pods[p].requests);
                p
            }
            None => bindings.remove(pos).0,
        };
        let min_d = min_over(&counts, p).unwrap_or(d);
        failed.push((
            p,
            format!(
                "topology spread on {} (maxSkew {skew}) cannot be kept: {} {} cannot take more pods of the group",
                rule.topology_key,
                if dom.key == Key::Zone { "zone" } else { "domain" },
                dom.values[min_d]
            ),
        ));
        if counted(p) {
            counts[d] -= 1;
        }
    }
}
