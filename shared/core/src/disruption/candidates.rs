//! Which nodes may be disrupted, for which reason, and how many each pool's budgets allow.

use std::collections::BTreeMap;

use super::schedule::window_active;
use super::{Blocked, Input, Reason};
use crate::catalogue::InstanceType;
use crate::nodepool::{DisruptionReason, NodePool};
use crate::requirements::first_mismatch;

pub(super) struct Candidates {
    pub expired: Vec<usize>,
    pub drifted: Vec<usize>,
    /// Graceful candidates past consolidateAfter (emptiness and consolidation).
    pub consolidatable: Vec<usize>,
    pub blocked: Vec<Blocked>,
    /// Disruptions each active budget of a pool still allows: every disruption counts against
    /// every budget of its pool (a budget limits how many nodes are disrupted at once, whatever the
    /// reason); the reasons of a budget say which disruptions it gates.
    pub budget: BTreeMap<String, Vec<(Vec<Reason>, u64)>>,
}

impl Candidates {
    /// How many more nodes of `pool` may be disrupted for `reason`: the most restrictive active
    /// budget that applies to the reason (unbounded when none applies).
    pub fn allowed(&self, pool: &str, reason: Reason) -> u64 {
        self.budget
            .get(pool)
            .into_iter()
            .flatten()
            .filter(|(reasons, _)| reasons.is_empty() || reasons.contains(&reason))
            .map(|(_, left)| *left)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Records `n` more disrupted nodes in `pool` (for any reason).
    pub fn spend(&mut self, pool: &str, n: u64) {
        for (_, left) in self.budget.get_mut(pool).into_iter().flatten() {
            *left = left.saturating_sub(n);
        }
    }
}

/// Why a node's pool requirements no longer hold, if they don't.
fn drift_reason(
    input: &Input<'_>,
    node: &super::ManagedNode,
    pool: &NodePool,
    types: &BTreeMap<&str, &InstanceType>,
) -> Option<String> {
    let l = node
        .node
        .label_view(types.get(node.node.instance_type.as_str()).map(|t| &t.labels), None);
    if let Some(r) = first_mismatch(&pool.requirements, &l) {
        return Some(format!(
            "requirement {} {:?} {:?} no longer holds",
            r.key, r.operator, r.values
        ));
    }
    if let (Some(have), Some(class)) = (&node.node_class_hash, &pool.node_class)
        && let Some(want) = input.node_class_hashes.get(class)
        && have != want
    {
        return Some(format!(
            "EC2NodeClass {class} changed (AMI, subnets or security groups)"
        ));
    }
    None
}

fn graceful_blocker(input: &Input<'_>, node: &super::ManagedNode) -> Option<String> {
    if node.do_not_disrupt {
        return Some("node has karpenter.sh/do-not-disrupt".into());
    }
    for p in node.node.pods.iter().filter(|p| !p.goes_with_node()) {
        if p.do_not_disrupt {
            return Some(format!(
                "pod {}/{} has karpenter.sh/do-not-disrupt",
                p.namespace, p.name
            ));
        }
        if let Some(pdb) = input
            .pdbs
            .iter()
            .find(|b| b.disruptions_allowed == 0 && b.namespace == p.namespace && b.selector.matches(&p.labels))
        {
            return Some(format!(
                "PodDisruptionBudget {}/{} allows no disruption of pod {}",
                pdb.namespace, pdb.name, p.name
            ));
        }
    }
    None
}

pub(super) fn classify(input: &Input<'_>) -> Candidates {
    let types: BTreeMap<&str, &InstanceType> = input.instance_types.iter().map(|t| (t.name.as_str(), t)).collect();
    let pools: BTreeMap<&str, &NodePool> = input.pools.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut c = Candidates {
        expired: Vec::new(),
        drifted: Vec::new(),
        consolidatable: Vec::new(),
        blocked: Vec::new(),
        budget: BTreeMap::new(),
    };
    let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new(); // pool -> (nodes, disrupting)
    for (i, n) in input.nodes.iter().enumerate() {
        let Some(pool) = n.node.pool.as_deref().and_then(|p| pools.get(p)) else {
            continue;
        };
        let t = totals.entry(pool.name.as_str()).or_default();
        t.0 += 1;
        if n.disrupting {
            t.1 += 1;
            continue;
        }
        if n.node.in_flight {
            continue;
        }
        let block = |c: &mut Candidates, reason: String| {
            c.blocked.push(Blocked {
                node: n.node.name.clone(),
                reason,
            })
        };
        if let Some(expire) = pool.expire_after_secs
            && input.now - n.created_at >= expire as i64
        {
            c.expired.push(i);
            continue;
        }
        if n.node.unschedulable {
            block(&mut c, "cordoned".into());
            continue;
        }
        let blocker = graceful_blocker(input, n);
        if let Some(why) = drift_reason(input, n, pool, &types) {
            match blocker {
                Some(b) => block(&mut c, format!("drifted ({why}) but {b}")),
                None => c.drifted.push(i),
            }
            continue;
        }
        let Some(after) = pool.disruption.consolidate_after_secs else {
            block(&mut c, format!("pool {} has consolidateAfter: Never", pool.name));
            continue;
        };
        let since = n.last_pod_change_at.unwrap_or(n.created_at);
        if input.now - since < after as i64 {
            block(
                &mut c,
                format!("pods changed {}s ago; consolidateAfter is {after}s", input.now - since),
            );
            continue;
        }
        if let Some(b) = blocker {
            block(&mut c, b);
            continue;
        }
        c.consolidatable.push(i);
    }
    // Budgets: each active budget allows its node count (percentages of the pool's nodes, rounded
    // up) minus the nodes already being disrupted.
    for pool in input.pools {
        let (total, disrupting) = totals.get(pool.name.as_str()).copied().unwrap_or((0, 0));
        let active: Vec<(Vec<Reason>, u64)> = pool
            .disruption
            .budgets
            .iter()
            .filter(|b| window_active(b.schedule.as_deref(), b.duration_secs, input.now))
            .map(|b| {
                let reasons = b
                    .reasons
                    .iter()
                    .map(|r| match r {
                        DisruptionReason::Empty => Reason::Empty,
                        DisruptionReason::Underutilized => Reason::Underutilized,
                        DisruptionReason::Drifted => Reason::Drifted,
                    })
                    .collect();
                (reasons, b.nodes.allowed(total).saturating_sub(disrupting))
            })
            .collect();
        c.budget.insert(pool.name.clone(), active);
    }
    c
}
