//! Nodewright's disruption search: forceful and drift replacements, emptiness, and consolidation.
//!
//! Consolidation runs three passes over the candidates, cheapest-to-move first (disruption cost,
//! then lowest utilization, then highest price), and never plans a pod onto an empty node that
//! emptiness will remove (`Simulation::close_emptying`):
//! 1. **Delete search over every candidate** (not a 100-candidate prefix): galloping group testing.
//!    A batch of candidates is removed together and their pods rescheduled onto the rest; a batch
//!    that fits is committed and the next batch doubles, a batch that does not is halved, and a
//!    single candidate that does not fit is skipped. Blockers therefore cost one evaluation each
//!    instead of ending the search.
//! 2. **Multi-node replacement**: binary search for the longest prefix (up to `max_multi_node`) of
//!    one pool's remaining candidates that one cheaper new node can absorb.
//! 3. **Single-node replacement** of each remaining candidate, while evaluations remain.
//!
//! Each commit updates the simulation, so later passes see the pods where earlier ones put them.
//! Budgets are spent per pool as actions commit. The search is deterministic: ties break by name.

use std::collections::{BTreeMap, HashMap};

use super::simulation::{Simulation, Verdict};
use super::{Action, Reason};
use crate::nodepool::{ConsolidationPolicy, PoolBacking};

/// Expired (forceful, no budget) or drifted (budgeted) nodes, each replaced on its own.
pub(super) fn replace_each(s: &mut Simulation<'_>, reason: Reason, out: &mut Vec<Action>) {
    let list = match reason {
        Reason::Expired => s.candidates.expired.clone(),
        _ => s.candidates.drifted.clone(),
    };
    for i in list {
        if s.removed[i] {
            continue;
        }
        let pool = s.pool_of(i).to_string();
        if reason == Reason::Drifted && s.candidates.allowed(&pool, reason) == 0 {
            s.candidates.blocked.push(super::Blocked {
                node: s.nodes[i].name.clone(),
                reason: format!("drifted, but pool {pool}'s Drifted budget is used up"),
            });
            continue;
        }
        let Some(plan) = s.replace_any(i) else {
            if reason == Reason::Expired {
                // Forceful: the node goes; pods that fit nowhere wait for new capacity.
                let empty = crate::scheduler::Plan::default();
                out.push(s.commit(&[i], &empty, Vec::new(), reason));
            }
            continue;
        };
        let claims = plan.claims.clone();
        out.push(s.commit(&[i], &plan, claims, reason));
        s.candidates.spend(&pool, 1);
    }
}

/// Empty candidates, most expensive first, within each pool's Empty budget; one action per pool.
pub(super) fn delete_empty(s: &mut Simulation<'_>, out: &mut Vec<Action>) {
    let mut by_pool: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in &s.candidates.consolidatable {
        if !s.removed[i] && s.is_empty(i) {
            by_pool.entry(s.pool_of(i).to_string()).or_default().push(i);
        }
    }
    for (pool, mut nodes) in by_pool {
        nodes.sort_by(|&a, &b| {
            s.price[b]
                .total_cmp(&s.price[a])
                .then_with(|| s.nodes[a].name.cmp(&s.nodes[b].name))
        });
        let allowed = s.candidates.allowed(&pool, Reason::Empty);
        nodes.truncate(usize::try_from(allowed).unwrap_or(usize::MAX));
        if nodes.is_empty() {
            continue;
        }
        s.candidates.spend(&pool, nodes.len() as u64);
        out.push(s.commit(&nodes, &crate::scheduler::Plan::default(), Vec::new(), Reason::Empty));
    }
}

/// Candidates for consolidation, cheapest to move first: by Karpenter's disruption cost (pods
/// weighted by priority and deletion cost, scaled by remaining lifetime), then lowest
/// utilization, then highest price.
pub(super) fn underutilized_candidates(s: &Simulation<'_>) -> Vec<usize> {
    let mut c: Vec<usize> = s
        .candidates
        .consolidatable
        .iter()
        .copied()
        .filter(|&i| !s.removed[i] && !s.is_empty(i))
        .filter(|&i| {
            s.input.pools.iter().any(|p| {
                Some(p.name.as_str()) == s.nodes[i].pool.as_deref()
                    && p.disruption.consolidation_policy == ConsolidationPolicy::WhenEmptyOrUnderutilized
                    && matches!(p.backing, PoolBacking::Fleet)
            })
        })
        .collect();
    let util: HashMap<usize, f64> = c.iter().map(|&i| (i, s.utilization(i))).collect();
    c.sort_by(|a, b| {
        s.cost[*a]
            .total_cmp(&s.cost[*b])
            .then_with(|| util[a].total_cmp(&util[b]))
            .then_with(|| s.price[*b].total_cmp(&s.price[*a]))
            .then_with(|| s.nodes[*a].name.cmp(&s.nodes[*b].name))
    });
    c
}

fn within_budget(s: &Simulation<'_>, set: &[usize]) -> bool {
    let mut per_pool: BTreeMap<&str, u64> = BTreeMap::new();
    for &i in set {
        *per_pool.entry(s.pool_of(i)).or_default() += 1;
    }
    per_pool
        .iter()
        .all(|(p, n)| s.candidates.allowed(p, Reason::Underutilized) >= *n)
}

fn spend(s: &mut Simulation<'_>, set: &[usize]) {
    for &i in set {
        let pool = s.pool_of(i).to_string();
        s.candidates.spend(&pool, 1);
    }
}

pub(super) fn underutilized(s: &mut Simulation<'_>, out: &mut Vec<Action>) {
    let candidates = underutilized_candidates(s);
    s.close_emptying();
    let max_eval = s.options.max_evaluations;

    // 1. Galloping delete search over every candidate.
    let mut pos = 0;
    let mut batch = 1usize;
    while pos < candidates.len() && s.evaluations < max_eval {
        let mut set = Vec::new();
        let mut per_pool: BTreeMap<&str, u64> = BTreeMap::new();
        let mut next = pos;
        while next < candidates.len() && set.len() < batch {
            let i = candidates[next];
            let pool = s.pool_of(i);
            let n = per_pool.get(pool).copied().unwrap_or(0) + 1;
            if !s.removed[i] && s.candidates.allowed(pool, Reason::Underutilized) >= n {
                per_pool.insert(pool, n);
                set.push(i);
            }
            next += 1;
        }
        if set.is_empty() {
            break;
        }
        match s.evaluate(&set, false, Reason::Underutilized) {
            Verdict::Delete(plan) => {
                spend(s, &set);
                out.push(s.commit(&set, &plan, Vec::new(), Reason::Underutilized));
                pos = next;
                batch *= 2;
            }
            _ if batch == 1 => pos = next,
            _ => batch = (batch / 2).max(1),
        }
    }

    // 2. Multi-node replacement: the longest prefix of one pool's remaining candidates.
    let remaining: Vec<usize> = candidates.iter().copied().filter(|&i| !s.removed[i]).collect();
    let mut pools: Vec<&str> = remaining.iter().map(|&i| s.pool_of(i)).collect();
    pools.sort_unstable();
    pools.dedup();
    let pools: Vec<String> = pools.into_iter().map(String::from).collect();
    for pool in pools {
        let group: Vec<usize> = remaining.iter().copied().filter(|&i| s.pool_of(i) == pool).collect();
        let budget = usize::try_from(s.candidates.allowed(&pool, Reason::Underutilized)).unwrap_or(usize::MAX);
        let max_k = group.len().min(s.options.max_multi_node).min(budget);
        if max_k < 2 {
            continue;
        }
        let best = longest_prefix(s, &group[..max_k], max_eval);
        if let Some((set, verdict)) = best {
            commit_verdict(s, &set, verdict, out);
        }
    }

    // 3. Single-node: each remaining candidate on its own.
    for &i in &candidates {
        if s.evaluations >= max_eval {
            break;
        }
        if s.removed[i] || !within_budget(s, &[i]) {
            continue;
        }
        let verdict = s.evaluate(&[i], true, Reason::Underutilized);
        commit_verdict(s, &[i], verdict, out);
    }
}

/// Binary search for the longest prefix (at least 2) of `group` that can be deleted or replaced by
/// one node. Assumes, as Karpenter does, that a prefix that fails makes longer ones fail too.
pub(super) fn longest_prefix(
    s: &mut Simulation<'_>,
    group: &[usize],
    max_eval: usize,
) -> Option<(Vec<usize>, Verdict)> {
    let (mut lo, mut hi) = (2usize, group.len());
    let mut best = None;
    while lo <= hi && s.evaluations < max_eval {
        let mid = (lo + hi) / 2;
        let set = group[..mid].to_vec();
        match s.evaluate(&set, true, Reason::Underutilized) {
            Verdict::Infeasible => hi = mid - 1,
            v => {
                best = Some((set, v));
                lo = mid + 1;
            }
        }
    }
    best
}

pub(super) fn commit_verdict(s: &mut Simulation<'_>, set: &[usize], verdict: Verdict, out: &mut Vec<Action>) {
    match verdict {
        Verdict::Delete(plan) => {
            spend(s, set);
            out.push(s.commit(set, &plan, Vec::new(), Reason::Underutilized));
        }
        Verdict::Replace(plan, claim) => {
            spend(s, set);
            out.push(s.commit(set, &plan, vec![*claim], Reason::Underutilized));
        }
        Verdict::Infeasible => {}
    }
}
