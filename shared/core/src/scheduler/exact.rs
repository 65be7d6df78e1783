//! The exact search for small batches: the cheapest set of whole new nodes for a batch whose pods
//! fall into few groups, found by dynamic programming over the batch's pod-count vectors.
//!
//! A node is a (pool, instance type) pair. It may hold a pattern of pods (so many of each group)
//! when every group in it may use that pool and type, their summed requests fit the type's
//! allocatable after daemonsets, no group exceeds its per-node limit, and the groups share a zone
//! and a capacity type where the type is offered; its price is the cheapest such offering.
//! `cost(v) = min over patterns u <= v holding the first pod left of price(u) + cost(v - u)`.
//!
//! Topology across nodes (zone spread, pod affinity between groups) and pool limits are not
//! modelled, so the optimum is a lower bound on any plan ([`super::lower_bound`] reports it as
//! the plan's bound) and, where those constraints do not bind, a plan the packer can follow
//! (`pack` replays it through its own joins and keeps it only when every constraint held).
//! The work is bounded: batches over [`STATES_MAX`] states or [`WORK_MAX`] steps are left to the
//! relaxation and the greedy.

use super::claim::best_price;
use super::prepare::Prepared;
use super::typeset::TypeSet;
use crate::resources::Resources;

/// At most this many pod-count vectors (pods per group + 1, multiplied).
pub const STATES_MAX: usize = 4096;
/// At most this many steps (patterns tried plus candidate nodes checked).
pub const WORK_MAX: u64 = 2_000_000;

/// Interchangeable pods.
pub(super) struct Group<'a> {
    pub req: &'a Resources,
    pub pods: u64,
    /// At most this many of the group on one node.
    pub per_node: u64,
    /// Per pool (in `Prepared::pools` order): the types, zones and capacity types the group may
    /// use there, or None when it may not use the pool.
    pub pools: Vec<Option<(&'a TypeSet, u64, u8)>>,
}

/// One node of the optimum: its pool, instance type and pods per group.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub pool: usize,
    pub instance_type: usize,
    pub pods: Vec<u64>,
}

/// A candidate node: its pool-wide cheapest price (a lower bound on any offering it is bought
/// at), pool, type, capacity after daemonsets and the groups it may host.
struct Candidate {
    floor: f64,
    pool: usize,
    instance_type: usize,
    cap: Resources,
    hosts: u64,
}

/// The cheapest whole nodes for every pod of `groups`, with their price; None when the batch is
/// over the budget or some pod fits no node.
pub(super) fn optimum(prep: &Prepared, groups: &[Group]) -> Option<(f64, Vec<Node>)> {
    if groups.is_empty() || groups.len() > 64 {
        return None;
    }
    let radix: Vec<usize> = groups.iter().map(|g| g.pods as usize + 1).collect();
    let states = radix
        .iter()
        .try_fold(1usize, |acc, r| acc.checked_mul(*r).filter(|s| *s <= STATES_MAX))?;
    let candidates = candidates(prep, groups);
    let mut stride = vec![1usize; radix.len()];
    for g in 1..radix.len() {
        stride[g] = stride[g - 1] * radix[g - 1];
    }
    let decode = |mut i: usize, out: &mut [u64]| {
        for (o, r) in out.iter_mut().zip(&radix) {
            *o = (i % r) as u64;
            i /= r;
        }
    };
    let mut work = 0u64;
    // Per pattern: the cheapest node holding it (None inside: no node does); None outside: not
    // computed yet.
    let mut node_of: Vec<Option<Option<(f64, usize)>>> = vec![None; states];
    // Per state: its cost and the pattern of the node that starts it.
    let mut cost = vec![f64::INFINITY; states];
    let mut first_node = vec![usize::MAX; states];
    cost[0] = 0.0;
    let (mut v, mut u) = (vec![0u64; radix.len()], vec![0u64; radix.len()]);
    for vi in 1..states {
        decode(vi, &mut v);
        let first = v.iter().position(|c| *c > 0)?;
        // Every u <= v with u[first] >= 1, counted like an odometer.
        u.iter_mut().for_each(|x| *x = 0);
        u[first] = 1;
        'patterns: loop {
            work += 1;
            if work > WORK_MAX {
                return None;
            }
            let ui: usize = u.iter().zip(&stride).map(|(c, s)| *c as usize * s).sum();
            let node = *node_of[ui].get_or_insert_with(|| cheapest_node(&u, groups, prep, &candidates, &mut work));
            if let Some((price, _)) = node {
                let total = price + cost[vi - ui];
                if total < cost[vi] {
                    cost[vi] = total;
                    first_node[vi] = ui;
                }
            }
            for g in 0..u.len() {
                if u[g] < v[g] {
                    u[g] += 1;
                    continue 'patterns;
                }
                u[g] = u64::from(g == first);
            }
            break;
        }
    }
    let last = states - 1;
    if !cost[last].is_finite() {
        return None;
    }
    // Walk the choices back into nodes.
    let mut nodes = Vec::new();
    let mut vi = last;
    while vi != 0 {
        let ui = first_node[vi];
        let (_, c) = node_of[ui].flatten()?;
        let mut pods = vec![0u64; radix.len()];
        decode(ui, &mut pods);
        nodes.push(Node {
            pool: candidates[c].pool,
            instance_type: candidates[c].instance_type,
            pods,
        });
        vi -= ui;
    }
    Some((cost[last], nodes))
}

/// The cheapest candidate node holding pattern `u` and its price, None when none does.
fn cheapest_node(
    u: &[u64],
    groups: &[Group],
    prep: &Prepared,
    candidates: &[Candidate],
    work: &mut u64,
) -> Option<(f64, usize)> {
    let mut need = Resources::new();
    let mut mask = 0u64;
    for (g, (&k, grp)) in u.iter().zip(groups).enumerate() {
        if k == 0 {
            continue;
        }
        if k > grp.per_node {
            return None;
        }
        need.add_times(grp.req, k);
        mask |= 1 << g;
    }
    let mut best: Option<(f64, usize)> = None;
    for (i, c) in candidates.iter().enumerate() {
        *work += 1;
        if best.is_some_and(|(p, _)| c.floor >= p) {
            break;
        }
        if mask & !c.hosts != 0 || !need.fits_in(&c.cap) {
            continue;
        }
        // The groups must share a zone and a capacity type the type is offered in.
        let (mut zones, mut cts) = (u64::MAX, u8::MAX);
        for (g, grp) in groups.iter().enumerate() {
            if mask & (1 << g) != 0
                && let Some((_, z, ct)) = grp.pools[c.pool]
            {
                zones &= z;
                cts &= ct;
            }
        }
        let pv = &prep.pools[c.pool];
        if let Some((price, _, _)) = best_price(prep, c.instance_type, pv.zones & zones, pv.cts & cts)
            && best.is_none_or(|(p, _)| price < p)
        {
            best = Some((price, i));
        }
    }
    best
}

/// Candidate nodes for `groups`, cheapest pool-wide price first.
fn candidates(prep: &Prepared, groups: &[Group]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (pi, pv) in prep.pools.iter().enumerate() {
        for t in pv.types.iter() {
            let Some((floor, _, _)) = best_price(prep, t, pv.zones, pv.cts) else {
                continue;
            };
            let cap = prep.capacity(pi, t);
            let hosts = groups.iter().enumerate().fold(0u64, |m, (g, grp)| {
                let ok = grp.pools[pi].is_some_and(|(types, _, _)| types.contains(t)) && grp.req.fits_in(&cap);
                if ok { m | (1 << g) } else { m }
            });
            if hosts != 0 {
                out.push(Candidate {
                    floor,
                    pool: pi,
                    instance_type: t,
                    cap,
                    hosts,
                });
            }
        }
    }
    out.sort_by(|a, b| a.floor.total_cmp(&b.floor).then(a.instance_type.cmp(&b.instance_type)));
    out
}
