//! Nodewright's cost-aware packing.
//!
//! 1. Existing and in-flight nodes first: each bucket goes best-fit onto the nodes it may use.
//! 2. Buckets whose pods must be spread one (or a few) per node seed new claims first, so that the
//!    other pods fill the room beside them instead of needing nodes of their own.
//! 3. A new claim takes the highest-weight pool that can host the seed; among its types it picks the
//!    one with the lowest price per pod of the demand that could share the node (an estimate from the
//!    remaining compatible buckets), then fills it, largest bucket first. The next claims of the
//!    same seed copy that choice while a copy packs as much value (a few in a row), which spares
//!    most simulations when a bucket needs many nodes.
//! 4. Claims then trade pods where that lets one drop a size (see `exchange`).
//! 5. Each claim is right-sized: its options are every compatible type that fits what it holds,
//!    cheapest first, so the plan's price is the cheapest type that fits, not the seed's choice.

use super::claim::{Claim, apply_limits, headroom, join, new_claim, place_on_existing, within_limits};
use super::finish::finish;
use super::prepare::{HostCounts, Prepared, Templates};
use super::tuning::{
    FAIR_SLACK, MAX_REUSES, MIX_REFRESH, REST_STATES_MAX, REUSE_TOLERANCE, SEED_TYPES, SIMULATED_TYPES,
};
use super::typeset::TypeSet;
use super::{Input, Options, Plan};
use crate::resources::{FIXED, Resource, Resources};

pub(super) fn run(mut prep: Prepared, opts: &Options) -> Plan {
    let mut bindings = Vec::new();
    place_on_existing(&mut prep, &mut bindings);
    let mut failed: Vec<(usize, String)> = std::mem::take(&mut prep.unschedulable);
    // Pods that must share a node go first, each group onto its anchor or one claim of its own.
    let mut claims: Vec<Claim> = super::topology::colocation::place(&mut prep, &[], &mut bindings, &mut failed);
    let mut values = Values::new(&prep);
    let look = Lookups::new(&prep);

    // Buckets limited per node go first, then accelerated pods (whose nodes' spare room takes
    // other pods); inside each group, the prepared (largest-first) order.
    let mut order: Vec<usize> = (0..prep.buckets.len()).collect();
    order.sort_by_key(|b| {
        let o = &prep.buckets[*b];
        (o.per_node == u64::MAX, o.req.accelerators() == 0, *b)
    });

    // Every pod asks at least this much of each resource: a claim with less room left is full.
    let mut least = [u64::MAX; FIXED];
    for bucket in &prep.buckets {
        for (l, r) in least.iter_mut().zip(bucket.req.fixed()) {
            *l = (*l).min(*r);
        }
    }
    let is_full = |c: &Claim| (0..FIXED).any(|r| c.cap.fixed()[r].saturating_sub(c.load.fixed()[r]) < least[r]);
    // Claims that may still take pods, in the order they were opened.
    let mut open: Vec<usize> = (0..claims.len()).collect();

    let mut relaxed = false;
    for &b in &order {
        if prep.buckets[b].remaining() == 0 {
            continue;
        }
        if !relaxed && prep.buckets[b].per_node == u64::MAX && prep.buckets[b].req.accelerators() == 0 {
            relaxed = true;
            open_relaxed(&mut prep, &look, &mut claims, &mut open, opts.relaxed_min_pods);
        }
        open.retain(|c| !is_full(&claims[*c]));
        let (cpu, memory) = (prep.buckets[b].req.cpu_milli(), prep.buckets[b].req.memory());
        for &c in &open {
            if prep.buckets[b].remaining() == 0 {
                break;
            }
            // Most open claims lack the CPU or memory: that check first, by comparison alone.
            let claim = &mut claims[c];
            if claim.load.cpu_milli() + cpu > claim.cap.cpu_milli() || claim.load.memory() + memory > claim.cap.memory()
            {
                continue;
            }
            join(&mut prep, claim, b, u64::MAX);
        }
        // The last claim this bucket opened: while a copy of it packs as much value, the next
        // claims copy its choice instead of simulating every candidate again (at most
        // `MAX_REUSES` in a row, so the choice follows the shrinking demand).
        let mut last: Option<Choice> = None;
        let mut reused = 0usize;
        while prep.buckets[b].remaining() > 0 {
            let share = share_budget(&prep, b, fair_share(&prep, b));
            if reused < MAX_REUSES
                && let Some(choice) = &last
                && let Some(claim) = reuse(&mut prep, &look, &claims, b, choice, &mut values, share)
            {
                reused += 1;
                open.push(claims.len());
                claims.push(claim);
                continue;
            }
            reused = 0;
            match open_claim(&prep, &claims, b, &mut values, share) {
                Ok(mut claim) => {
                    let choice = Choice {
                        pool: claim.pool,
                        target: claim.target,
                        zones: claim.zones,
                        cts: claim.cts,
                        sliced: claim.sliced,
                        value: 0.0,
                    };
                    let before = prep.buckets[b].remaining();
                    seed_and_fill(&mut prep, &look, &mut claim, b, share);
                    if prep.buckets[b].remaining() == before {
                        // A new node that takes none of the pods: opening more would never end.
                        // Pods of other buckets it took go back to them.
                        for (bucket, k) in claim.joins.iter().rev() {
                            prep.buckets[*bucket].next -= *k as usize;
                        }
                        let reason = format!(
                            "pool {}: a new node cannot take the pod within the pool's requirements",
                            prep.pools[claim.pool].pool.name
                        );
                        prep.buckets[b].fail_rest(&reason, &mut failed);
                        continue;
                    }
                    last = Some(Choice {
                        value: packed_value(&prep, &mut values, &claim),
                        ..choice
                    });
                    open.push(claims.len());
                    claims.push(claim);
                }
                Err(reason) => prep.buckets[b].fail_rest(&reason, &mut failed),
            }
        }
    }
    if opts.exchange {
        if opts.anchored {
            super::anchored::run(&prep, &look, &mut claims);
        }
        super::exchange::run(&prep, &look, &mut claims);
    }
    let greedy = finish(&prep, claims, bindings, failed, opts);
    // The exact search prepares the batch again: only when its states can fit the budget (every
    // bucket's pods counted, placed on existing capacity or not).
    let small = prep
        .buckets
        .iter()
        .filter(|b| !b.pods.is_empty())
        .try_fold(1usize, |acc, b| {
            acc.checked_mul(b.pods.len() + 1)
                .filter(|s| *s <= super::exact::STATES_MAX)
        })
        .is_some()
        || prep.buckets.iter().map(|b| b.pods.len() as u64).sum::<u64>() <= super::patterns::PODS_MAX;
    // The search does not model pods that must share a node.
    if !opts.exact || !small || !prep.gangs.is_empty() {
        return greedy;
    }
    let templates = Templates::of_batch(prep.input, &prep.zones, &prep.offers, &prep.pools);
    exact_plan(prep.input, opts, &greedy, &templates).unwrap_or(greedy)
}

/// Per pool: the types, zones and capacity types a group may use there (None: not that pool).
type PoolSets = Vec<Option<(TypeSet, u64, u8)>>;

/// The exact search's plan for a small batch (see `exact`), when it is cheaper than `greedy` and
/// every constraint held as the packer's own joins replayed it: no pod left out that the greedy
/// placed, every node within its pool's limits (the search does not count them; the replay
/// does, as the packer counts a claim when it opens). Then the small end of the best plan so
/// far (the search's or the greedy's) is solved exactly (see `exact_rest`). None if neither is
/// cheaper than `greedy`.
fn exact_plan<'a>(input: &'a Input<'a>, opts: &Options, greedy: &Plan, templates: &Templates<'a>) -> Option<Plan> {
    if greedy.claims.is_empty() || greedy.cost.is_some_and(|c| c.gap <= 1e-9) {
        return None;
    }
    let mut prep = Prepared::new_with(input, Some(templates));
    place_on_existing(&mut prep, &mut Vec::new());
    // Each bucket left, with the pools of its best rank (least relaxed, then heaviest) that can
    // take it, as the greedy would choose among them.
    let buckets: Vec<usize> = (0..prep.buckets.len())
        .filter(|b| prep.buckets[*b].remaining() > 0)
        .collect();
    let mut sets: Vec<PoolSets> = Vec::with_capacity(buckets.len());
    for &b in &buckets {
        let bucket = &prep.buckets[b];
        let options: Vec<Option<(TypeSet, u64, u8)>> = (0..prep.pools.len())
            .map(|pi| prep.seed_types(bucket, pi).ok())
            .collect();
        let rank = |pi: usize| {
            let relaxed = prep.sigs[bucket.sig].compat[pi]
                .as_ref()
                .map_or(usize::MAX, |c| c.relaxed);
            (std::cmp::Reverse(relaxed), prep.pools[pi].pool.weight)
        };
        let best = (0..prep.pools.len())
            .filter(|pi| options[*pi].is_some())
            .map(rank)
            .max()?;
        sets.push(
            options
                .into_iter()
                .enumerate()
                .map(|(pi, o)| o.filter(|_| rank(pi) == best))
                .collect(),
        );
    }
    let groups: Vec<super::exact::Group> = buckets
        .iter()
        .zip(&sets)
        .map(|(&b, per_pool)| super::exact::Group {
            req: &prep.buckets[b].req,
            pods: prep.buckets[b].remaining() as u64,
            per_node: prep.buckets[b].per_node.max(1),
            pools: per_pool
                .iter()
                .map(|o| o.as_ref().map(|(t, z, c)| (t, *z, *c)))
                .collect(),
        })
        .collect();
    // The dynamic programme where its states fit (its optimum is the model's: nothing left to
    // search), else column generation.
    let (exact, (cost, nodes)) = match super::exact::optimum(&prep, &groups) {
        Some(optimum) => (true, optimum),
        None => (
            false,
            super::patterns::solve(&prep, &groups).map(|s| (s.cost, s.nodes))?,
        ),
    };
    let searched = (cost < greedy.total_price() - 1e-9)
        .then(|| replay(input, opts, templates, &buckets, &sets, &nodes))
        .flatten();
    let best = searched.as_ref().unwrap_or(greedy);
    // With the plan's dearest nodes kept, the pods left are few enough for the dynamic
    // programme, which finds their cheapest nodes: a neighbourhood neither column generation
    // (which rounds the whole batch's relaxation) nor the greedy searches.
    let rest = (!exact)
        .then(|| plan_nodes(input, &prep, &buckets, best))
        .flatten()
        .and_then(|nodes| exact_rest(&prep, &groups, nodes))
        .and_then(|(_, nodes)| replay(input, opts, templates, &buckets, &sets, &nodes))
        .filter(|p| p.total_price() < best.total_price() - 1e-9);
    let plan = rest.or(searched)?;
    let better = plan.unschedulable.len() <= greedy.unschedulable.len()
        && plan.placed_pods() >= greedy.placed_pods()
        && plan.total_price() < greedy.total_price() - 1e-9;
    better.then_some(plan)
}

/// Each claim of the plan as its price and a node of the search's kind (pods per group of
/// `buckets`); None if some pod of a claim is in none of the groups.
fn plan_nodes(
    input: &Input<'_>,
    prep: &Prepared,
    buckets: &[usize],
    plan: &Plan,
) -> Option<Vec<(f64, super::exact::Node)>> {
    let mut group_of = std::collections::HashMap::new();
    for (g, b) in buckets.iter().enumerate() {
        for p in &prep.buckets[*b].pods[prep.buckets[*b].next..] {
            group_of.insert(input.pods[*p].uid.as_str(), g);
        }
    }
    plan.claims
        .iter()
        .map(|claim| {
            let mut pods = vec![0u64; buckets.len()];
            for uid in &claim.pods {
                pods[*group_of.get(uid.as_str())?] += 1;
            }
            let pool = prep.pools.iter().position(|p| p.pool.name == claim.pool)?;
            let name = &claim.instance_types.first()?.name;
            let instance_type = input.instance_types.iter().position(|t| t.name == *name)?;
            Some((
                claim.price,
                super::exact::Node {
                    pool,
                    instance_type,
                    pods,
                },
            ))
        })
        .collect()
}

/// The plan's nodes kept, dearest first, until the pods left fit the exact search, which then
/// finds their cheapest nodes: the small end of the plan solved exactly. None when nothing is
/// kept, everything is, or nothing is cheaper.
fn exact_rest(
    prep: &Prepared,
    groups: &[super::exact::Group],
    mut nodes: Vec<(f64, super::exact::Node)>,
) -> Option<(f64, Vec<super::exact::Node>)> {
    nodes.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut left: Vec<u64> = groups.iter().map(|g| g.pods).collect();
    let fits = |left: &[u64]| {
        left.iter()
            .try_fold(1usize, |acc, k| {
                acc.checked_mul(*k as usize + 1).filter(|s| *s <= REST_STATES_MAX)
            })
            .is_some()
    };
    let mut kept = 0;
    while kept < nodes.len() && !fits(&left) {
        for (l, k) in left.iter_mut().zip(&nodes[kept].1.pods) {
            *l = l.checked_sub(*k)?;
        }
        kept += 1;
    }
    if kept == 0 || kept == nodes.len() {
        return None;
    }
    let now: f64 = nodes[kept..].iter().map(|n| n.0).sum();
    let rest: Vec<super::exact::Group> = groups
        .iter()
        .zip(&left)
        .map(|(g, k)| super::exact::Group {
            req: g.req,
            pods: *k,
            per_node: g.per_node,
            pools: g.pools.clone(),
        })
        .collect();
    let (cost, mut solved) = super::exact::optimum(prep, &rest)?;
    if cost >= now - 1e-9 {
        return None;
    }
    let kept_price: f64 = nodes[..kept].iter().map(|n| n.0).sum();
    solved.extend(nodes.into_iter().take(kept).map(|n| n.1));
    Some((cost + kept_price, solved))
}

/// The search's nodes replayed through the packer's joins on a fresh preparation of the batch:
/// any constraint the search leaves out (host ports across groups, anti-affinity, zone pins)
/// refuses a join, and the replay gives up (None).
fn replay<'a>(
    input: &'a Input<'a>,
    opts: &Options,
    templates: &Templates<'a>,
    buckets: &[usize],
    sets: &[PoolSets],
    nodes: &[super::exact::Node],
) -> Option<Plan> {
    let mut prep = Prepared::new_with(input, Some(templates));
    let mut bindings = Vec::new();
    place_on_existing(&mut prep, &mut bindings);
    let failed: Vec<(usize, String)> = std::mem::take(&mut prep.unschedulable);
    let mut claims = Vec::with_capacity(nodes.len());
    for node in nodes {
        let seed = node.pods.iter().position(|k| *k > 0)?;
        let (mut zones, mut cts) = (u64::MAX, u8::MAX);
        for (g, k) in node.pods.iter().enumerate() {
            if *k > 0 {
                let (_, z, c) = sets[g][node.pool].as_ref()?;
                zones &= z;
                cts &= c;
            }
        }
        if let Some(room) = headroom(&prep, claims.iter(), node.pool)
            && !within_limits(
                &prep.pools[node.pool].pool.limits,
                &room,
                &prep.input.instance_types[node.instance_type].capacity,
            )
        {
            return None;
        }
        let mut claim = new_claim(&prep, buckets[seed], node.pool, node.instance_type, zones, cts).ok()?;
        for (g, k) in node.pods.iter().enumerate() {
            if *k > 0 && join(&mut prep, &mut claim, buckets[g], *k) != *k {
                return None;
            }
        }
        claims.push(claim);
    }
    // The search's nodes are whole-node optima of its model, but trades between them can still
    // drop a size where the search stopped short (40-pod bench seed 13: $2.792 -> $2.770).
    if opts.exchange {
        super::exchange::run(&prep, &Lookups::new(&prep), &mut claims);
    }
    Some(finish(&prep, claims, bindings, failed, opts))
}

/// For a large batch of pods without per-node limits (nor accelerators), opens the nodes of the
/// cost relaxation's optimum (see `lower_bound`) for the highest-weight pool, rounded to the
/// nearest whole number per type, each filled with its share of the whole pods the optimum puts on
/// its type. The greedy then places what is left (on these nodes' spare room first), and each
/// claim is still right-sized at the end. With thousands of small pods the optimum's mix of types
/// is what a cheap plan needs, and no greedy choice finds it.
fn open_relaxed(prep: &mut Prepared, look: &Lookups, claims: &mut Vec<Claim>, open: &mut Vec<usize>, min_pods: u64) {
    let pi = 0;
    let Some(pv) = prep.pools.get(pi) else { return };
    let (zones, cts) = (pv.zones, pv.cts);
    let free: Vec<bool> = prep
        .buckets
        .iter()
        .map(|o| {
            o.remaining() > 0
                && o.per_node == u64::MAX
                && o.req.accelerators() == 0
                && o.zones & zones != 0
                && o.cts & cts != 0
                && prep.sigs[o.sig].compat[pi].is_ok()
        })
        .collect();
    let pods: u64 = (0..free.len())
        .filter(|b| free[*b])
        .map(|b| prep.buckets[b].remaining() as u64)
        .sum();
    if pods < min_pods.max(1) {
        return;
    }
    let groups = prep
        .buckets
        .iter()
        .zip(&free)
        .filter(|(_, f)| **f)
        .filter_map(|(o, _)| {
            let c = prep.sigs[o.sig].compat[pi].as_ref().ok()?;
            Some((&o.req, o.remaining() as u64, &c.types))
        });
    let relaxation = super::lower_bound::Relaxation::new(prep, pi, groups);
    let Ok(optimum) = relaxation.solve() else { return };
    let mut nodes: Vec<(usize, u64)> = optimum
        .nodes
        .iter()
        .map(|(t, n)| (*t, (n - 1e-6).round() as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    nodes.sort_by_key(|(t, n)| (std::cmp::Reverse(*n), *t));
    for (t, n) in nodes {
        if !prep.offered(t, zones, cts) {
            continue;
        }
        // The pods of each request the optimum puts on this type, whole.
        let mut assigned: Vec<(usize, u64)> = Vec::new();
        for (si, on) in optimum.pods.iter().enumerate() {
            let k: u64 = on
                .iter()
                .filter(|(x, _)| *x == t)
                .map(|(_, y)| (y + 1e-6).floor() as u64)
                .sum();
            let req = &relaxation.shapes[si].0;
            if k > 0
                && let Some(shape) = look.shapes.iter().position(|(r, _)| r == req)
            {
                assigned.push((shape, k));
            }
        }
        for i in 0..n {
            if let Some(room) = headroom(prep, claims.iter(), pi)
                && !within_limits(
                    &prep.pools[pi].pool.limits,
                    &room,
                    &prep.input.instance_types[t].capacity,
                )
            {
                return;
            }
            let Some(seed) = assigned
                .iter()
                .flat_map(|(s, _)| look.shapes[*s].1.iter().copied())
                .find(|b| free[*b])
            else {
                break;
            };
            let Ok(mut claim) = new_claim(prep, seed, pi, t, zones, cts) else {
                continue;
            };
            for (s, left) in assigned.iter_mut() {
                let mut want = left.div_ceil(n - i);
                for &b in &look.shapes[*s].1 {
                    if want == 0 {
                        break;
                    }
                    if free[b] {
                        let k = join(prep, &mut claim, b, want);
                        want -= k;
                        *left -= k;
                    }
                }
            }
            if !claim.pods.is_empty() {
                open.push(claims.len());
                claims.push(claim);
            }
        }
    }
}

/// A type choice for a new claim, and the value the claim packed when it was made.
struct Choice {
    pool: usize,
    target: usize,
    zones: u64,
    cts: u8,
    sliced: bool,
    value: f64,
}

/// The value of the pods a claim holds.
fn packed_value(prep: &Prepared, values: &mut Values, c: &Claim) -> f64 {
    c.joins
        .iter()
        .map(|(b, k)| values.get(prep, c.pool, *b) * *k as f64)
        .sum()
}

/// Seeds a new claim with bucket `b` and fills it: without a fair share, first with a slice of
/// every bucket in proportion to what is left (so a large node takes the demand's own mix), then
/// with whatever else fits.
fn seed_and_fill(prep: &mut Prepared, look: &Lookups, claim: &mut Claim, b: usize, share: Option<Share>) {
    let slice = match share {
        None if claim.sliced => slice_fraction(
            slice_demand(prep, claim.pool, (claim.zones, claim.cts), b).as_ref(),
            &claim.cap,
        ),
        _ => None,
    };
    let per_node = prep.buckets[b].per_node;
    if let Some(f) = slice {
        join(
            prep,
            claim,
            b,
            per_node.min(slice_of(prep.buckets[b].remaining() as u64, f, true)),
        );
        for o in 0..prep.buckets.len() {
            let rem = prep.buckets[o].remaining() as u64;
            if o != b && rem > 0 {
                join(prep, claim, o, slice_of(rem, f, false));
            }
        }
    }
    // The seed's own pods first (after its slice, the rest of them), then the others.
    join(prep, claim, b, if slice.is_some() { u64::MAX } else { per_node });
    fill(prep, look, claim, share);
}

/// Opens a claim with the type of bucket `b`'s previous claim, kept only when it packs at least
/// the value that claim did (so the choice would still win); otherwise its pods go back.
#[allow(clippy::too_many_arguments)]
fn reuse(
    prep: &mut Prepared,
    look: &Lookups,
    claims: &[Claim],
    b: usize,
    choice: &Choice,
    values: &mut Values,
    share: Option<Share>,
) -> Option<Claim> {
    let pi = choice.pool;
    if let Some(room) = headroom(prep, claims.iter(), pi)
        && !within_limits(
            &prep.pools[pi].pool.limits,
            &room,
            &prep.input.instance_types[choice.target].capacity,
        )
    {
        return None;
    }
    let mut claim = new_claim(prep, b, pi, choice.target, choice.zones, choice.cts).ok()?;
    claim.sliced = choice.sliced;
    seed_and_fill(prep, look, &mut claim, b, share);
    if packed_value(prep, values, &claim) >= choice.value * (1.0 - REUSE_TOLERANCE) && !claim.pods.is_empty() {
        return Some(claim);
    }
    for (bucket, k) in claim.joins.iter().rev() {
        prep.buckets[*bucket].next -= *k as usize;
    }
    None
}

/// How many claims a per-node-limited bucket still needs on its own; other pods are spread evenly
/// over those claims instead of crowding the first ones.
/// A claim's share of the other pods when its seed group needs `m` claims anyway: at most
/// `FAIR_SLACK` x (their remaining CPU and memory / m), so that every mandatory claim gets some and
/// a claim may still round up to a whole instance size.
#[derive(Clone, Copy)]
struct Share {
    cpu: u64,
    memory: u64,
}

fn share_budget(prep: &Prepared, b: usize, m: Option<u64>) -> Option<Share> {
    let m = m?;
    let seed = &prep.buckets[b];
    let (mut cpu, mut mem) = (0u64, 0u64);
    for (i, o) in prep.buckets.iter().enumerate() {
        if i == b || o.remaining() == 0 {
            continue;
        }
        // Pods of the seed's own group cannot share its claims.
        if seed
            .carries
            .iter()
            .any(|(c, _)| o.members.contains(c) && o.carries.iter().any(|(x, _)| x == c))
        {
            continue;
        }
        cpu += o.req.cpu_milli() * o.remaining() as u64;
        mem += o.req.memory() * o.remaining() as u64;
    }
    let f = |x: u64| ((x as f64 / m as f64) * FAIR_SLACK).ceil() as u64;
    Some(Share {
        cpu: f(cpu),
        memory: f(mem),
    })
}

fn fair_share(prep: &Prepared, b: usize) -> Option<u64> {
    let bucket = &prep.buckets[b];
    if bucket.per_node == u64::MAX {
        return None;
    }
    let mut m = (bucket.remaining() as u64).div_ceil(bucket.per_node.max(1));
    // The whole group under the same per-node limit (every bucket that both carries and matches the
    // constraint) needs that many nodes, not just this bucket.
    for (c, limit) in &bucket.carries {
        if !bucket.members.contains(c) {
            continue;
        }
        let total: u64 = prep
            .buckets
            .iter()
            .filter(|o| o.members.contains(c) && o.carries.iter().any(|(x, _)| x == c))
            .map(|o| o.remaining() as u64)
            .sum();
        m = m.max(total.div_ceil(u64::from(*limit).max(1)));
    }
    Some(m.max(1))
}

/// Fills a claim with the remaining buckets, balanced (see `fill_balanced`), within its fair share
/// of the other pods when it has one.
fn fill(prep: &mut Prepared, look: &Lookups, c: &mut Claim, share: Option<Share>) {
    let seed_load = c.load.clone();
    fill_balanced(prep, look, c, share, &seed_load);
    // The fair share is spent, but the node the claim needs may have room left: filling that room
    // costs nothing, and every pod placed there needs no room elsewhere.
    if share.is_some()
        && let Some(room) = paid_room(prep, look, c)
    {
        let cap = std::mem::replace(&mut c.cap, room);
        fill_balanced(prep, look, c, None, &seed_load);
        c.cap = cap;
    }
}

/// What one packing run looks up again and again, listed once: buckets by request (the balanced
/// fill scores a request once for all its buckets) and each pool's types by price.
pub(super) struct Lookups {
    /// Buckets grouped by request: (request, its buckets in order).
    pub shapes: Vec<(Resources, Vec<usize>)>,
    /// Each pool's types, cheapest first (at the pool's own zones and capacity types), listed on
    /// first use.
    by_price: Vec<std::cell::OnceCell<Vec<(f64, usize)>>>,
    /// The CPU and memory still to place per (zones, capacity types) a claim may launch in, and
    /// how many more fills may use the figure before it is summed again (see `demand_mix`).
    mix: std::cell::RefCell<Vec<DemandMix>>,
}

/// The demand still to place that claims of (zones, capacity types) could take: CPU and memory,
/// and the fills left before it is summed again.
type DemandMix = (u64, u8, [f64; 2], usize);

impl Lookups {
    pub(super) fn new(prep: &Prepared) -> Lookups {
        let mut by_req: std::collections::BTreeMap<&Resources, Vec<usize>> = std::collections::BTreeMap::new();
        for (b, bucket) in prep.buckets.iter().enumerate() {
            by_req.entry(&bucket.req).or_default().push(b);
        }
        Lookups {
            shapes: by_req.into_iter().map(|(r, b)| (r.clone(), b)).collect(),
            by_price: (0..prep.pools.len()).map(|_| std::cell::OnceCell::new()).collect(),
            mix: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The CPU (millicores) and memory (bytes) of the pods still to place that a claim in `zones`
    /// and `cts` could take. Summing every bucket for every claim cost 8 % of a 20k-pod plan, and
    /// the mix drifts slowly while many pods are left: the sum is reused for one fill per
    /// `MIX_REFRESH` pods it counted (a fill takes a few pods), so it is fresh at every fill of
    /// the last claims, where the mix changes fastest.
    fn demand_mix(&self, prep: &Prepared, zones: u64, cts: u8) -> [f64; 2] {
        let mut mix = self.mix.borrow_mut();
        if let Some(entry) = mix.iter_mut().find(|e| e.0 == zones && e.1 == cts)
            && entry.3 > 0
        {
            entry.3 -= 1;
            return entry.2;
        }
        let (mut d, mut pods) = ([0f64; 2], 0usize);
        for o in &prep.buckets {
            let n = o.remaining();
            if n > 0 && o.zones & zones != 0 && o.cts & cts != 0 {
                d[0] += o.req.cpu_milli() as f64 * n as f64;
                d[1] += o.req.memory() as f64 * n as f64;
                pods += n;
            }
        }
        mix.retain(|e| e.0 != zones || e.1 != cts);
        mix.push((zones, cts, d, pods / MIX_REFRESH));
        d
    }

    /// Pool `pi`'s types with their price at the pool's zones and capacity types, cheapest first.
    pub(super) fn by_price(&self, prep: &Prepared, pi: usize) -> &[(f64, usize)] {
        self.by_price[pi].get_or_init(|| {
            let pv = &prep.pools[pi];
            let mut priced: Vec<(f64, usize)> = pv
                .types
                .iter()
                .filter_map(|t| prep.best_offer(t, pv.zones, pv.cts).map(|(p, _, _)| (p, t)))
                .collect();
            priced.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            priced
        })
    }
}

/// Adds one pod at a time, each time of the request that leaves the room closest to empty (the
/// smallest distance between request and free capacity, both as shares of the node), so that no
/// resource is left idle while another runs out. (Measured against the dot product of request and
/// room, the other classic vector-packing rule: 0.8-1.3 % cheaper plans on the diverse benchmark.)
/// A bucket that cannot join once never can again (the claim only fills up and narrows), so each
/// request keeps a cursor past its buckets that failed.
///
/// The room is measured against the node cut to the mix of the demand still to place: when the
/// pods left ask for less memory per CPU than the node sells, its memory counts only up to that
/// share (and the other way round). Each node then takes pods in the proportion of what is left,
/// the spare resource idles evenly on every node, and the last nodes are not left with only the
/// pods the first ones passed over (20k diverse pods, 10 seeds: worst plan 7.5 % above the bound
/// before, 4.9 % after; the last tenth of the claims had held half the idle CPU).
fn fill_balanced(prep: &mut Prepared, look: &Lookups, c: &mut Claim, share: Option<Share>, seed_load: &Resources) {
    let mut cap = [c.cap.cpu_milli().max(1) as f64, c.cap.memory().max(1) as f64];
    // Batches the exact search takes keep the plain rule: few pods fill few nodes, no tail forms,
    // and the aim only made their greedy plans dearer (40 pods: 1.0547 -> 1.0584 of the bound).
    let [dc, dm] = if prep.input.pods.len() as u64 > super::patterns::PODS_MAX {
        look.demand_mix(prep, c.zones, c.cts)
    } else {
        [0.0; 2]
    };
    if dc > 0.0 && dm > 0.0 {
        let ratio = dm / dc;
        if ratio < cap[1] / cap[0] {
            cap[1] = cap[0] * ratio;
        } else {
            cap[0] = cap[1] / ratio;
        }
    }
    // (shape, cursor into its buckets)
    let mut candidates: Vec<(usize, usize)> = (0..look.shapes.len())
        .filter(|s| look.shapes[*s].0.fits_in_with(&c.load, &c.cap))
        .map(|s| (s, 0))
        .collect();
    loop {
        let mut free = c.cap.clone();
        free.saturating_sub(&c.load);
        let (fc, fm) = (
            (cap[0] - c.load.cpu_milli() as f64) / cap[0],
            (cap[1] - c.load.memory() as f64) / cap[1],
        );
        let filled = (
            c.load.cpu_milli() - seed_load.cpu_milli(),
            c.load.memory() - seed_load.memory(),
        );
        candidates.retain(|(s, _)| {
            let req = &look.shapes[*s].0;
            req.fixed().iter().zip(free.fixed()).all(|(r, f)| r <= f)
                && share.is_none_or(|x| budget_left(x, filled.0, filled.1, req) != 0)
        });
        let mut best: Option<(f64, usize)> = None;
        for (i, (s, _)) in candidates.iter().enumerate() {
            let req = &look.shapes[*s].0;
            let (rc, rm) = (req.cpu_milli() as f64 / cap[0], req.memory() as f64 / cap[1]);
            let score = -((fc - rc).powi(2) + (fm - rm).powi(2));
            if best.is_none_or(|(x, _)| score > x + 1e-12) {
                best = Some((score, i));
            }
        }
        let Some((_, i)) = best else { return };
        let (s, cursor) = &mut candidates[i];
        let buckets = &look.shapes[*s].1;
        let mut joined = false;
        while *cursor < buckets.len() {
            let b = buckets[*cursor];
            if prep.buckets[b].remaining() > 0 && join(prep, c, b, 1) == 1 {
                joined = true;
                break;
            }
            *cursor += 1;
        }
        if !joined {
            candidates.remove(i);
        }
    }
}

/// The capacity of the type the claim will probably be sized to (the cheapest at the pool's prices
/// that fits what it holds and is offered where the claim may launch), within the type it was
/// opened for.
fn paid_room(prep: &Prepared, look: &Lookups, c: &Claim) -> Option<Resources> {
    let pv = &prep.pools[c.pool];
    let types = prep.input.instance_types;
    let t = look.by_price(prep, c.pool).iter().map(|(_, t)| *t).find(|t| {
        c.types.contains(*t)
            && c.load.fits_in_with(&pv.ds_overhead[*t], pv.allocatable(types, *t))
            && prep.offered(*t, c.zones, c.cts)
    })?;
    let mut room = prep.capacity(c.pool, t);
    room.min_with(&c.cap);
    Some(room)
}

/// Whether a fair share is used up by `cpu`/`memory` of fillers.
fn budget_spent(s: Share, cpu: u64, memory: u64) -> bool {
    cpu >= s.cpu || memory >= s.memory
}

/// How many pods of `req` still fit in a fair-share budget after `cpu`/`memory` of fillers.
fn budget_left(s: Share, cpu: u64, memory: u64, req: &Resources) -> u64 {
    let mut k = u64::MAX;
    if req.cpu_milli() > 0 {
        k = k.min(s.cpu.saturating_sub(cpu) / req.cpu_milli());
    }
    if req.memory() > 0 {
        k = k.min(s.memory.saturating_sub(memory) / req.memory());
    }
    k
}

/// Each bucket's value: the cheapest fractional cost of one of its pods on any type of a pool
/// (price x the largest share of the node the pod takes). A claim's worth is the value it packs;
/// types are chosen to maximise worth per dollar, which rewards mixing complementary pods.
struct Values {
    per_pool: Vec<Vec<Option<f64>>>,
}

impl Values {
    fn new(prep: &Prepared) -> Self {
        Values {
            per_pool: vec![vec![None; prep.buckets.len()]; prep.pools.len()],
        }
    }

    fn get(&mut self, prep: &Prepared, pi: usize, b: usize) -> f64 {
        if let Some(v) = self.per_pool[pi][b] {
            return v;
        }
        let bucket = &prep.buckets[b];
        let pv = &prep.pools[pi];
        let mut best = f64::INFINITY;
        if let Ok(c) = &prep.sigs[bucket.sig].compat[pi] {
            for t in c.types.iter() {
                let Some((price, _, _)) = prep.best_offer(t, pv.zones & bucket.zones, pv.cts & bucket.cts) else {
                    continue;
                };
                let cap = prep.capacity_fixed(pi, t);
                let mut share: f64 = 0.0;
                for (&need, &have) in bucket.req.fixed().iter().zip(&cap) {
                    if need > 0 {
                        share = share.max(if have == 0 {
                            f64::INFINITY
                        } else {
                            need as f64 / have as f64
                        });
                    }
                }
                if share <= 1.0 {
                    best = best.min(price * share);
                }
            }
        }
        let v = if best.is_finite() { best } else { 0.0 };
        self.per_pool[pi][b] = Some(v);
        v
    }
}

/// The remaining demand a new claim seeded by bucket `seed` could take a slice of: each fixed
/// resource summed over the pods left in the buckets of the seed's kind (accelerated or not) that
/// could join a claim of pool `pi` in `zones`/`cts`. None for accelerated seeds, whose nodes are
/// sized by their accelerators.
fn slice_demand(prep: &Prepared, pi: usize, (zones, cts): (u64, u8), seed: usize) -> Option<[f64; FIXED]> {
    if prep.buckets[seed].req.accelerators() > 0 {
        return None;
    }
    let mut d = [0f64; FIXED];
    for o in &prep.buckets {
        if o.remaining() == 0 || o.req.accelerators() > 0 || o.zones & zones == 0 || o.cts & cts == 0 {
            continue;
        }
        let Ok(c) = &prep.sigs[o.sig].compat[pi] else {
            continue;
        };
        if c.zones & zones == 0 || c.cts & cts == 0 {
            continue;
        }
        let n = o.remaining() as f64;
        for (x, r) in d.iter_mut().zip(o.req.fixed()) {
            *x += *r as f64 * n;
        }
    }
    Some(d)
}

/// The fraction of `demand` a node of capacity `cap` holds (the tightest resource); None when it
/// all fits, so the claim is filled without slicing.
fn slice_fraction(demand: Option<&[f64; FIXED]>, cap: &Resources) -> Option<f64> {
    let d = demand?;
    let f = d
        .iter()
        .zip(cap.fixed())
        .filter(|(d, _)| **d > 0.0)
        .map(|(d, c)| *c as f64 / d)
        .fold(f64::INFINITY, f64::min);
    (f < 1.0).then_some(f)
}

/// A bucket's pods in a slice of fraction `f`: at least one for the seed.
fn slice_of(remaining: u64, f: f64, seed: bool) -> u64 {
    let k = (remaining as f64 * f).floor() as u64;
    if seed { k.max(1) } else { k }
}

#[allow(clippy::too_many_arguments)]
/// Simulates filling a fresh claim of type `t` in pool `pi` seeded by bucket `seed`; returns the
/// value packed. `active` lists the other buckets with pods left, largest first; `mins` holds the
/// smallest request of each resource among them (the scan stops once nothing more can fit). With a
/// slice fraction, a first pass takes each bucket's slice and a second tops the node up.
fn simulate(
    prep: &Prepared,
    values: &mut Values,
    pi: usize,
    t: usize,
    (zones, cts): (u64, u8),
    seed: usize,
    share: Option<Share>,
    slice: Option<f64>,
    active: &[usize],
    mins: &[u64; FIXED],
    taken: &mut Vec<u64>,
) -> f64 {
    let min_cpu = mins[Resource::Cpu as usize];
    let (mut filled_cpu, mut filled_mem) = (0u64, 0u64);
    let mut free = prep.capacity(pi, t);
    let mut host = HostCounts::default();
    let (mut zones, mut cts) = (zones, cts);
    let mut value = 0.0;
    taken.clear();
    taken.resize(active.len() + 1, 0);
    let passes: &[Option<f64>] = if slice.is_some() { &[slice, None] } else { &[None] };
    for pass in passes {
        for (i, &b) in std::iter::once(&seed).chain(active.iter()).enumerate() {
            if i > 0
                && (free.fixed().iter().zip(mins).any(|(f, m)| f < m)
                    || free.get(Resource::Pods) == 0
                    || share.is_some_and(|s| {
                        budget_spent(s, filled_cpu, filled_mem) || s.cpu.saturating_sub(filled_cpu) < min_cpu
                    }))
            {
                break;
            }
            let bucket = &prep.buckets[b];
            // One pod must fit before anything costlier is asked (comparisons, no divisions).
            if bucket.req.fixed().iter().zip(free.fixed()).any(|(r, f)| r > f) {
                continue;
            }
            let Ok(compat) = &prep.sigs[bucket.sig].compat[pi] else {
                continue;
            };
            if !compat.types.contains(t) {
                continue;
            }
            let z = zones & compat.zones & bucket.zones;
            let c = cts & compat.cts & bucket.cts;
            if z == 0 || c == 0 || ((z != zones || c != cts) && !prep.offered(t, z, c)) {
                continue;
            }
            let rem = bucket.remaining() as u64 - taken[i];
            let mut want = if i == 0 {
                bucket.per_node - taken[0].min(bucket.per_node)
            } else {
                share.map_or(u64::MAX, |s| budget_left(s, filled_cpu, filled_mem, &bucket.req))
            };
            if let Some(f) = pass {
                want = want.min(slice_of(bucket.remaining() as u64, *f, i == 0));
            }
            let k = free.times_fits(&bucket.req).min(want).min(rem);
            let k = host.max_add(bucket, k);
            if k == 0 {
                continue;
            }
            let mut add = Resources::new();
            add.add_times(&bucket.req, k);
            free.saturating_sub(&add);
            host.add(bucket, k as u32);
            taken[i] += k;
            if i > 0 {
                filled_cpu += bucket.req.cpu_milli() * k;
                filled_mem += bucket.req.memory() * k;
            }
            zones = z;
            cts = c;
            value += values.get(prep, pi, b) * k as f64;
        }
    }
    value
}

/// A pool's place in a claim's choice: the less relaxed, then the heavier, first.
type PoolRank = (std::cmp::Reverse<usize>, u32);

/// Opens a claim for bucket `b`: pool by relaxation and weight; then the candidate types with the lowest price per
/// pod of the demand that could share the node are simulated, and the one packing the most value per
/// dollar wins.
fn open_claim(
    prep: &Prepared,
    claims: &[Claim],
    b: usize,
    values: &mut Values,
    share: Option<Share>,
) -> Result<Claim, String> {
    let bucket = &prep.buckets[b];
    let mut reasons = Vec::new();
    if let Some(r) = prep.sig_reason(bucket.sig) {
        return Err(r);
    }
    // Pools in Karpenter's order: the least relaxed of the pod's preferences first (a pool that
    // meets its preferred node affinity, or has no PreferNoSchedule taint it does not tolerate,
    // comes before one that does not, whatever their weights), then by weight. A pool whose
    // limits leave no room falls through to the next.
    let compat = &prep.sigs[bucket.sig].compat;
    let rank = |pi: usize| {
        let relaxed = compat[pi].as_ref().map_or(usize::MAX, |c| c.relaxed);
        (std::cmp::Reverse(relaxed), prep.pools[pi].pool.weight)
    };
    let mut order: Vec<usize> = (0..prep.pools.len()).collect();
    order.sort_by_key(|&pi| std::cmp::Reverse(rank(pi)));
    // The best candidate so far, with its pool's rank, value per dollar and price.
    let mut best: Option<(PoolRank, f64, f64, Choice)> = None;
    for pi in order {
        let weight = rank(pi);
        if best.as_ref().is_some_and(|b| b.0 > weight) {
            break;
        }
        let (mut set, zones, cts) = match prep.seed_types(bucket, pi) {
            Ok(x) => x,
            Err(e) => {
                reasons.push(e);
                continue;
            }
        };
        if let Err(reason) = apply_limits(prep, pi, headroom(prep, claims.iter(), pi).as_ref(), &mut set) {
            reasons.push(reason);
            continue;
        }
        if let Some(reason) = prep.min_values_shortfall(pi, &set) {
            reasons.push(reason);
            continue;
        }
        let (demand, count) = demand(prep, b, pi, zones, cts, share);
        // Rank by price per pod of the estimated demand.
        let mut ranked: Vec<(f64, f64, usize)> = Vec::new();
        for t in set.iter() {
            let Some((price, _, _)) = prep.best_offer(t, zones, cts) else {
                continue;
            };
            let cap = prep.capacity_fixed(pi, t);
            let mut per_node = f64::INFINITY;
            for (&d, &have) in demand.fixed().iter().zip(&cap) {
                if d > 0 {
                    per_node = per_node.min(have as f64 * count / d as f64);
                }
            }
            ranked.push((price / per_node.min(count).max(1.0), price, t));
        }
        let by_rank = |a: &(f64, f64, usize), b: &(f64, f64, usize)| {
            a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2))
        };
        let (sim_types, seed_types) = (SIMULATED_TYPES, SEED_TYPES);
        if ranked.len() > sim_types {
            ranked.select_nth_unstable_by(sim_types, by_rank);
            ranked[..sim_types].sort_by(by_rank);
        } else {
            ranked.sort_by(by_rank);
        }
        // The cheapest type that fits the seed is always a candidate.
        let cheapest = ranked
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
            .copied();
        // Only buckets that could share the claim's zones and capacity types: the rest (pods
        // pinned to other zones by topology spread, most of a spread batch) can never join it.
        let active: Vec<usize> = (0..prep.buckets.len())
            .filter(|x| {
                let o = &prep.buckets[*x];
                *x != b && o.remaining() > 0 && o.zones & zones != 0 && o.cts & cts != 0
            })
            .collect();
        // The smallest request of each resource among them: once a simulated node has less of
        // any, nothing more fits and its scan stops.
        let mut mins = [u64::MAX; FIXED];
        for x in &active {
            for (m, v) in mins.iter_mut().zip(prep.buckets[*x].req.fixed()) {
                *m = (*m).min(*v);
            }
        }
        if active.is_empty() {
            mins = [0; FIXED];
        }
        let mut candidates: Vec<(f64, f64, usize)> = ranked.iter().take(sim_types).copied().collect();
        let mut taken = Vec::new();
        // Also the types that are cheapest per pod for the seed's own shape: large pods often belong
        // on large nodes even when the average pod does not.
        let seed_req = &bucket.req;
        let seed_rem = (bucket.remaining() as u64).min(bucket.per_node).max(1) as f64;
        let mut by_seed: Vec<(f64, f64, usize)> = ranked
            .iter()
            .map(|(_, price, t)| {
                let per_node = (prep.times_fits_on(pi, *t, seed_req) as f64).min(seed_rem).max(1.0);
                (price / per_node, *price, *t)
            })
            .collect();
        let by_rank = |a: &(f64, f64, usize), b: &(f64, f64, usize)| {
            a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2))
        };
        if by_seed.len() > seed_types {
            by_seed.select_nth_unstable_by(seed_types, by_rank);
            by_seed.truncate(seed_types);
        }
        by_seed.sort_by(by_rank);
        for c in by_seed {
            if !candidates.iter().any(|x| x.2 == c.2) {
                candidates.push(c);
            }
        }
        if let Some(c) = cheapest
            && !candidates.iter().any(|x| x.2 == c.2)
        {
            candidates.push(c);
        }
        let demand = share
            .is_none()
            .then(|| slice_demand(prep, pi, (zones, cts), b))
            .flatten();
        for (_, price, t) in candidates {
            let slice = slice_fraction(demand.as_ref(), &prep.capacity(pi, t));
            for sliced in [false, true] {
                if sliced && slice.is_none() {
                    continue;
                }
                let value = simulate(
                    prep,
                    values,
                    pi,
                    t,
                    (zones, cts),
                    b,
                    share,
                    if sliced { slice } else { None },
                    &active,
                    &mins,
                    &mut taken,
                );
                let ratio = value / price;
                let better = match &best {
                    None => true,
                    Some(x) => {
                        weight > x.0
                            || ratio > x.1 + 1e-9
                            || ((ratio - x.1).abs() <= 1e-9 && (price < x.2 || (price == x.2 && t < x.3.target)))
                    }
                };
                if better {
                    let choice = Choice {
                        pool: pi,
                        target: t,
                        zones,
                        cts,
                        sliced,
                        value,
                    };
                    best = Some((weight, ratio, price, choice));
                }
            }
        }
    }
    let Some((_, _, _, choice)) = best else {
        if reasons.is_empty() {
            reasons.push("no NodePool is configured".into());
        }
        return Err(reasons.join("; "));
    };
    let mut claim = new_claim(prep, b, choice.pool, choice.target, choice.zones, choice.cts)?;
    claim.sliced = choice.sliced;
    Ok(claim)
}

/// Demand that could share a node seeded by bucket `b` in pool `pi`: the remaining pods of buckets
/// of the same kind (accelerated or not) compatible with the pool and offerings, each counted at most
/// as many times as one node may hold.
fn demand(prep: &Prepared, b: usize, pi: usize, zones: u64, cts: u8, share: Option<Share>) -> (Resources, f64) {
    let seed_acc = prep.buckets[b].req.accelerators() > 0;
    let mut d = Resources::new();
    let mut n = 0u64;
    for (i, other) in prep.buckets.iter().enumerate() {
        if other.remaining() == 0 || (other.req.accelerators() > 0) != seed_acc {
            continue;
        }
        if i != b {
            let Ok(c) = &prep.sigs[other.sig].compat[pi] else {
                continue;
            };
            if c.zones & other.zones & zones == 0 || c.cts & other.cts & cts == 0 {
                continue;
            }
        }
        let rem = other.remaining() as u64;
        let k = if i == b {
            rem.min(other.per_node)
        } else {
            share
                .map_or(rem, |s| budget_left(s, 0, 0, &other.req).min(rem))
                .min(other.per_node)
        };
        d.add_times(&other.req, k);
        n += k;
    }
    (d, n.max(1) as f64)
}
