//! Where a consolidation run stopped, so the next run carries on instead of planning again.
//!
//! A plan over thousands of nodes can hold more actions than one run has time for. The run stores
//! the actions it has not finished ([`ResumePoint`]) before acting; the next run, within
//! [`RESUME_WITHIN_MS`], takes up the ones that still hold ([`still_valid`]) instead of planning
//! afresh. An action still holds when every node it removes is still a candidate for the same
//! reason, the pods on the nodes it removes and on the nodes it moves pods to are the pods it was
//! planned with (digests), and the pools' budgets at this moment allow it. Anything else is dropped
//! and left to the next plan. The point is bounded ([`MAX_RESUME_BYTES`]): the least valuable
//! actions, last in the plan, are what a full point leaves out.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{Action, Input, Reason, candidates};

/// A stored point older than this is planned afresh: the cluster has moved on.
pub const RESUME_WITHIN_MS: i64 = 5 * 60 * 1000;

/// The largest encoded point stored (a DynamoDB item holds 400 KB).
pub const MAX_RESUME_BYTES: usize = 300_000;

/// One planned action not yet carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAction {
    pub reason: Reason,
    /// Nodes it removes.
    pub nodes: Vec<String>,
    /// New nodes it launches first (0: a deletion).
    pub replacements: usize,
    /// $/h saved when carried out.
    pub saving: f64,
    /// The pods digest of every node it removes or moves pods to, when planned.
    pub digests: BTreeMap<String, String>,
}

impl PendingAction {
    /// `action` as planned, with the digests `digest_of` gives the nodes it touches (a node
    /// without one is left out and so never matches later).
    pub fn of(action: &Action, digest_of: impl Fn(&str) -> Option<String>) -> Self {
        let touched = action
            .nodes
            .iter()
            .map(String::as_str)
            .chain(action.placements.iter().map(|(_, to)| to.as_str()));
        let digests = touched.filter_map(|n| Some((n.to_string(), digest_of(n)?))).collect();
        PendingAction {
            reason: action.reason,
            nodes: action.nodes.clone(),
            replacements: action.replacements.len(),
            saving: action.saving(),
            digests,
        }
    }

    pub fn is_delete(&self) -> bool {
        self.replacements == 0
    }
}

/// The actions of one plan a run has not finished, and when the plan was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumePoint {
    /// Epoch milliseconds of the plan (a resumed point keeps its plan's time).
    pub planned_at: i64,
    pub actions: Vec<PendingAction>,
}

impl ResumePoint {
    /// The point for `actions`, cut to the longest prefix whose encoding fits [`MAX_RESUME_BYTES`].
    pub fn new(planned_at: i64, actions: &[PendingAction]) -> Self {
        let mut point = ResumePoint {
            planned_at,
            actions: Vec::new(),
        };
        let mut bytes = 64;
        for a in actions {
            bytes += serde_json::to_vec(a).map_or(usize::MAX, |v| v.len() + 1);
            if bytes > MAX_RESUME_BYTES {
                break;
            }
            point.actions.push(a.clone());
        }
        point
    }

    /// Whether it may still be taken up at `now`.
    pub fn is_current(&self, now: i64) -> bool {
        (0..RESUME_WITHIN_MS).contains(&(now - self.planned_at))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an encoded point, refusing one larger than a stored point can be.
    pub fn decode(text: &str) -> Result<Self, String> {
        if text.len() > MAX_RESUME_BYTES + 1024 {
            return Err(format!(
                "resume point of {} bytes (at most {MAX_RESUME_BYTES})",
                text.len()
            ));
        }
        serde_json::from_str(text).map_err(|e| format!("resume point: {e}"))
    }
}

/// The stored actions that still hold for the cluster in `input`, in their order, each spending
/// its pool's budgets as the planner would: its removed nodes are candidates for its reason (not
/// disrupting, past consolidateAfter, not blocked), the nodes it touches carry the pods it was
/// planned with (`digest_of`, now), and every budget that gates its reason has room for it.
pub fn still_valid(
    input: &Input<'_>,
    point: &ResumePoint,
    digest_of: impl Fn(&str) -> Option<String>,
) -> Vec<PendingAction> {
    let mut c = candidates::classify(input);
    let index: HashMap<&str, usize> = input
        .nodes
        .iter()
        .enumerate()
        .map(|(i, m)| (m.node.name.as_str(), i))
        .collect();
    let candidate_for = |reason: Reason, i: usize, c: &candidates::Candidates| match reason {
        Reason::Expired => c.expired.contains(&i),
        Reason::Drifted => c.drifted.contains(&i),
        Reason::Empty | Reason::Underutilized => c.consolidatable.contains(&i),
    };
    let mut out = Vec::new();
    for a in &point.actions {
        let Some(removed) = a
            .nodes
            .iter()
            .map(|n| index.get(n.as_str()).copied())
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        if a.nodes.is_empty() || !removed.iter().all(|&i| candidate_for(a.reason, i, &c)) {
            continue;
        }
        if !a
            .nodes
            .iter()
            .chain(a.digests.keys())
            .all(|n| a.digests.get(n).is_some_and(|d| digest_of(n).as_ref() == Some(d)))
        {
            continue;
        }
        let mut per_pool: BTreeMap<&str, u64> = BTreeMap::new();
        for &i in &removed {
            if let Some(p) = input.nodes[i].node.pool.as_deref() {
                *per_pool.entry(p).or_default() += 1;
            }
        }
        // Expiry is forceful: budgets do not gate it (as the planner).
        if a.reason != Reason::Expired {
            if per_pool.iter().any(|(p, n)| c.allowed(p, a.reason) < *n) {
                continue;
            }
            for (p, n) in &per_pool {
                c.spend(p, *n);
            }
        }
        out.push(a.clone());
    }
    out
}
