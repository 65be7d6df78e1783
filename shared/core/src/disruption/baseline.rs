//! Karpenter's consolidation, as documented, for the benchmark baseline: candidates ordered by
//! disruption cost; one multi-node command from a binary search over the first 100 candidates
//! (delete them all, or replace them with one cheaper node); if none, the first single node that
//! can be deleted or replaced. One command per planning round.

use super::consolidate::{commit_verdict, longest_prefix};
use super::simulation::{Simulation, Verdict};
use super::{Action, Reason};

pub(super) fn underutilized(s: &mut Simulation<'_>, out: &mut Vec<Action>) {
    let mut candidates = super::consolidate::underutilized_candidates(s);
    candidates.sort_by(|&a, &b| {
        s.cost[a]
            .total_cmp(&s.cost[b])
            .then_with(|| s.nodes[a].name.cmp(&s.nodes[b].name))
    });
    // Candidates within their pool's budget, in order.
    let mut per_pool: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    candidates.retain(|&i| {
        let pool = s.pool_of(i).to_string();
        let used = per_pool.entry(pool.clone()).or_default();
        let ok = *used < s.candidates.allowed(&pool, Reason::Underutilized);
        if ok {
            *used += 1;
        }
        ok
    });
    let prefix: Vec<usize> = candidates.iter().copied().take(s.options.max_multi_node).collect();
    if prefix.len() >= 2 {
        let best = longest_prefix(s, &prefix, usize::MAX);
        if let Some((set, verdict)) = best {
            commit_verdict(s, &set, verdict, out);
            return;
        }
    }
    for &i in &candidates {
        if s.evaluations >= s.options.max_evaluations {
            break;
        }
        match s.evaluate(&[i], true, Reason::Underutilized) {
            Verdict::Infeasible => continue,
            v => {
                commit_verdict(s, &[i], v, out);
                return;
            }
        }
    }
}
