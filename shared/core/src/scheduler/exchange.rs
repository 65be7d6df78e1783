//! Exchanges after packing: a claim shrinks to a cheaper type by handing one pod to another claim
//! (or trading it for one of that claim's pods), while the other claim keeps its own price.
//!
//! Greedy packing leaves some nodes bound by one resource with another idle: memory-heavy pods
//! left over at the end share a node with idle CPU, while earlier nodes ran out of CPU with memory
//! to spare. A trade moves the memory-heavy pod to the spare memory and a CPU-heavy pod the other
//! way, and the first node drops a size. The other move is the reverse: a node with much idle
//! room grows a size to take one pod from each of several nodes that each drop a size, when
//! together they save more than the growth costs.
//!
//! Only claims of the same pool, zones and capacity types trade, so no pod changes zone or
//! capacity type (spread and affinity counts stay as packed), and hostname constraints are checked
//! on both sides. Claims whose pool has limits or minValues, or that hold accelerators, are left as
//! packed. Every accepted move makes the plan strictly cheaper, so the pass ends.

use std::collections::BTreeMap;

use super::claim::Claim;
use super::pack::Lookups;
use super::prepare::{HostCounts, Prepared};
use super::tuning::{
    ABSORB_IDLE, GROW_TARGETS, MAX_PASSES, MERGE_MAX_GROUP, MERGE_PARTNERS, PARTNERS, REPACK_PARTNERS, REPACK_SLACK,
    SCATTER_TARGETS, SCATTER_WORK, TARGETS,
};
use crate::resources::{FIXED, Resources};

/// Claims of one pool, zones and capacity types: the only ones that trade with each other.
type Group = (usize, u64, u8);

/// A group's claims by (CPU room, claim) and by (memory room, claim), most room first.
type ByRoom = [Vec<(u64, usize)>; 2];

/// Which room a partner scan is ordered by.
type RoomOf = fn(&Resources) -> u64;

/// A claim's best way down: the price of the cheaper type needing least moved out, and the excess
/// over that type (what one leaving pod must cover).
struct Down {
    price: f64,
    excess: Resources,
}

/// What a claim costs now: its cheapest fitting type and the room left on it.
#[derive(Clone)]
struct Size {
    t: usize,
    price: f64,
    room: Resources,
}

/// A trade to apply: the bucket of the pod leaving the shrinking claim for `partner` and, if any,
/// the bucket of the partner's pod coming back.
struct Trade {
    out: usize,
    back: Option<usize>,
    partner: usize,
}

pub(super) fn run(prep: &Prepared, look: &Lookups, claims: &mut [Claim]) {
    // Trades need two claims (most plans of the disruption planner have none or one).
    if claims.len() < 2 {
        return;
    }
    let mut pod_bucket = vec![usize::MAX; prep.input.pods.len()];
    for (b, bucket) in prep.buckets.iter().enumerate() {
        for p in &bucket.pods[..bucket.next] {
            pod_bucket[*p] = b;
        }
    }
    let mut sizes: Vec<Option<Size>> = claims.iter().map(|c| size(prep, look, c)).collect();
    let mut held: Vec<Vec<usize>> = claims.iter().map(|c| buckets_of(c, &pod_bucket)).collect();
    // Claims whose absorb failed and that have not changed since: not tried again.
    let mut absorb_failed = vec![false; claims.len()];
    let mut downs: Vec<Option<Down>> = (0..claims.len())
        .map(|i| down(prep, look, &claims[i], sizes[i].as_ref(), &held[i]))
        .collect();
    let mut groups: BTreeMap<Group, Vec<usize>> = BTreeMap::new();
    for (i, c) in claims.iter().enumerate() {
        if sizes[i].is_some() {
            groups.entry((c.pool, c.zones, c.cts)).or_default().push(i);
        }
    }
    for _ in 0..MAX_PASSES {
        let mut order: Vec<usize> = (0..claims.len()).filter(|i| sizes[*i].is_some()).collect();
        order.sort_by(|a, b| {
            let (pa, pb) = (
                sizes[*a].as_ref().map_or(0.0, |s| s.price),
                sizes[*b].as_ref().map_or(0.0, |s| s.price),
            );
            pb.total_cmp(&pa).then(a.cmp(b))
        });
        // Each group's claims by CPU room and by memory room, most first: a pod needing more of
        // one than any partner has left stops the scan at once.
        // (The rooms are those at the start of the pass: a claim whose room grew since may be
        // missed until the next pass.)
        let by_room: BTreeMap<Group, ByRoom> = groups
            .iter()
            .map(|(k, members)| {
                let sorted = |r: RoomOf| {
                    let mut v: Vec<(u64, usize)> = members
                        .iter()
                        .map(|i| (sizes[*i].as_ref().map_or(0, |s| r(&s.room)), *i))
                        .collect();
                    v.sort_by_key(|(room, i)| (std::cmp::Reverse(*room), *i));
                    v
                };
                (*k, [sorted(Resources::cpu_milli), sorted(Resources::memory)])
            })
            .collect();
        // Each group's pods whose leaving lets their claim drop a size (checked again when used:
        // claims change during the pass).
        let donors: BTreeMap<Group, Vec<(usize, usize)>> = groups
            .iter()
            .map(|(k, members)| {
                let mut v = Vec::new();
                for &z in members {
                    if let Some(d) = downs[z].as_ref() {
                        v.extend(
                            held[z]
                                .iter()
                                .filter(|b| d.excess.fits_in(&prep.buckets[**b].req))
                                .map(|b| (z, *b)),
                        );
                    }
                }
                (*k, v)
            })
            .collect();
        let mut improved = false;
        for y in order {
            let key = (claims[y].pool, claims[y].zones, claims[y].cts);
            let partners = &by_room[&key];
            while let Some(trade) = find_trade(prep, look, claims, &sizes, &held, y, partners) {
                apply(prep, claims, &pod_bucket, y, &trade);
                for c in [y, trade.partner] {
                    absorb_failed[c] = false;
                    sizes[c] = size(prep, look, &claims[c]);
                    held[c] = buckets_of(&claims[c], &pod_bucket);
                    downs[c] = down(prep, look, &claims[c], sizes[c].as_ref(), &held[c]);
                }
                improved = true;
            }
            if absorb_failed[y] {
                continue;
            }

            let Some(moves) = find_absorb(prep, look, claims, &sizes, &held, &downs, y, &donors[&key]) else {
                absorb_failed[y] = true;
                continue;
            };
            {
                for (b, from) in &moves {
                    move_pod(prep, claims, &pod_bucket, *b, *from, y);
                }
                for c in std::iter::once(y).chain(moves.iter().map(|(_, from)| *from)) {
                    absorb_failed[c] = false;
                    sizes[c] = size(prep, look, &claims[c]);
                    held[c] = buckets_of(&claims[c], &pod_bucket);
                    downs[c] = down(prep, look, &claims[c], sizes[c].as_ref(), &held[c]);
                }
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
    merge(prep, look, claims, &pod_bucket, &groups, &mut sizes);
    scatter(prep, look, claims, &pod_bucket, &groups, &mut sizes);
}

/// A repacking: each bin's claim and its pods per bucket.
type Repack = Vec<(usize, Vec<(usize, u64)>)>;

/// One claim as a bin of a repacking: its type, the room left, its hostname counts and the pods
/// given to it per bucket.
struct Bin {
    claim: usize,
    t: usize,
    left: Resources,
    host: HostCounts,
    held: Vec<(usize, u64)>,
}

impl Bin {
    fn new(claim: usize, t: usize, cap: Resources) -> Bin {
        Bin {
            claim,
            t,
            left: cap,
            host: HostCounts::default(),
            held: Vec::new(),
        }
    }
}

/// Per bucket, the claims that give pods and those that take them (claim, pods).
type Shifts = (Vec<(usize, i64)>, Vec<(usize, i64)>);

/// Scatters: a claim hands several pods to the idle room other claims of its group keep, each
/// partner at its own price, so that it drops to a cheaper type or empties. Packing to a relaxed
/// optimum leaves a little room on most nodes and a tail of nodes holding the residue (20k
/// benchmark-shaped pods on the real catalogue: 68 c6a.48xlarge about 1.4 vCPU short of full each,
/// and an m5.24xlarge and an m6i.4xlarge for what was left); the room the many nodes waste is
/// enough for the tail's pods. Cheapest claims go first (they empty most easily); each tries to
/// empty, then the cheaper types needing least moved out. Work is counted (claims and pods looked
/// at) and bounded by `SCATTER_WORK` per plan.
fn scatter(
    prep: &Prepared,
    look: &Lookups,
    claims: &mut [Claim],
    pod_bucket: &[usize],
    groups: &BTreeMap<Group, Vec<usize>>,
    sizes: &mut [Option<Size>],
) {
    let mut work = 0u64;
    for members in groups.values() {
        if members.len() < 2 {
            continue;
        }
        let price = |sizes: &[Option<Size>], i: usize| sizes[i].as_ref().map_or(f64::INFINITY, |s| s.price);
        // The room all the group's claims keep (each scatter takes its own claim's out).
        let room_of = |sizes: &[Option<Size>]| {
            let mut room = Resources::new();
            for s in members.iter().filter_map(|i| sizes[*i].as_ref()) {
                room.add(&s.room);
            }
            room
        };
        let mut total = room_of(sizes);
        let mut order: Vec<usize> = members.iter().copied().filter(|i| sizes[*i].is_some()).collect();
        order.sort_by(|a, b| price(sizes, *a).total_cmp(&price(sizes, *b)).then(a.cmp(b)));
        for y in order {
            if work >= SCATTER_WORK {
                return;
            }
            let Some(sy) = sizes[y].clone() else { continue };
            if claims[y].pods.is_empty() {
                continue;
            }
            let mut room = total.clone();
            room.saturating_sub(&sy.room);
            let mut targets: Vec<Option<(usize, Resources)>> = vec![None];
            targets.extend(scatter_targets(prep, look, &claims[y], &sy).into_iter().map(Some));
            for cap in targets {
                let Some(repack) = plan_repack(
                    prep,
                    claims,
                    sizes,
                    pod_bucket,
                    members,
                    y,
                    cap.as_ref(),
                    &room,
                    &mut work,
                ) else {
                    continue;
                };
                apply_repack(prep, claims, pod_bucket, y, &repack);
                for (c, _) in &repack {
                    if *c != y {
                        sizes[*c] = size(prep, look, &claims[*c]);
                    }
                }
                sizes[y] = if claims[y].pods.is_empty() {
                    None
                } else {
                    size(prep, look, &claims[y])
                };
                total = room_of(sizes);
                break;
            }
        }
    }
}

/// Cheaper types a claim could drop to by scattering pods: the `SCATTER_TARGETS` needing least
/// moved out, cheapest first; each with its capacity.
fn scatter_targets(prep: &Prepared, look: &Lookups, c: &Claim, s: &Size) -> Vec<(usize, Resources)> {
    let mut found = cheaper_types(prep, look, c, s, None);
    found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    found.truncate(SCATTER_TARGETS);
    found.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)));
    found
        .into_iter()
        .map(|(_, _, t)| (t, prep.capacity(c.pool, t)))
        .collect()
}

/// The types of the claim cheaper than its own (no accelerated or metal type), each as (excess
/// of the claim's load over it as shares of the current type, price, index). With `largest`, only
/// those whose excess one pod that large could carry out.
fn cheaper_types(
    prep: &Prepared,
    look: &Lookups,
    c: &Claim,
    s: &Size,
    largest: Option<&Resources>,
) -> Vec<(f64, f64, usize)> {
    let pv = &prep.pools[c.pool];
    let types = prep.input.instance_types;
    let current = prep.capacity(c.pool, s.t);
    let mut found: Vec<(f64, f64, usize)> = Vec::new();
    for &(floor, t) in look.by_price(prep, c.pool) {
        if floor >= s.price {
            break;
        }
        if !c.types.contains(t) || types[t].accelerated || types[t].bare_metal {
            continue;
        }
        // The excess over the type (fixed resources; moves check all of them).
        let (alloc, ds) = (pv.allocatable(types, t).fixed(), pv.ds_overhead[t].fixed());
        let mut score = 0.0;
        let mut coverable = true;
        for r in 0..FIXED {
            let excess = (c.load.fixed()[r] + ds[r]).saturating_sub(alloc[r]);
            if largest.is_some_and(|l| excess > l.fixed()[r]) {
                coverable = false;
                break;
            }
            score += excess as f64 / current.fixed()[r].max(1) as f64;
        }
        if !coverable {
            continue;
        }
        if let Some((price, _, _)) = prep.best_offer(t, c.zones, c.cts)
            && price < s.price
        {
            found.push((score, price, t));
        }
    }
    found
}

/// Claim `y`'s pods and those of the partners with most room for what must leave it, packed again
/// onto the partners at their own types and, when `target` is given, `y` at that type (its index
/// and capacity); None when they do not all fit. Pods go largest first, each bucket a share at a
/// time, to the bin whose room best matches them (the largest dot product of request and room,
/// each resource weighed by how scarce it is in the bins), which keeps every bin's mix balanced
/// where best fit on one resource strands the other. Returns each bin's pods per bucket:
/// (claim, [(bucket, pods)]).
#[allow(clippy::too_many_arguments)]
fn plan_repack(
    prep: &Prepared,
    claims: &[Claim],
    sizes: &[Option<Size>],
    pod_bucket: &[usize],
    members: &[usize],
    y: usize,
    target: Option<&(usize, Resources)>,
    group_room: &Resources,
    work: &mut u64,
) -> Option<Repack> {
    let cy = &claims[y];
    let mut excess = cy.load.clone();
    if let Some((_, cap)) = target {
        excess.saturating_sub(cap);
    }
    let want: Vec<u64> = excess
        .fixed()
        .iter()
        .map(|v| (*v as f64 * REPACK_SLACK) as u64)
        .collect();
    let enough = |room: &Resources| (0..FIXED).all(|r| room.fixed()[r] >= want[r]);
    // The whole group's room first (one comparison; most claims stop here).
    if !enough(group_room) {
        return None;
    }
    // What a partner's room covers of the excess (shares, CPU and memory).
    let dims = [0usize, 1];
    let covers = |room: &Resources| -> f64 {
        dims.iter()
            .filter(|r| excess.fixed()[**r] > 0)
            .map(|r| room.fixed()[*r].min(excess.fixed()[*r]) as f64 / excess.fixed()[*r] as f64)
            .sum()
    };
    let mut candidates: Vec<(f64, usize)> = Vec::new();
    for z in members {
        *work += 1;
        if *z == y || claims[*z].pods.is_empty() {
            continue;
        }
        if let Some(s) = sizes[*z].as_ref() {
            let c = covers(&s.room);
            if c > 0.0 {
                candidates.push((c, *z));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    // Partners until their room holds the excess with some to spare, at most REPACK_PARTNERS.
    let mut room = Resources::new();
    let mut bins: Vec<Bin> = Vec::new();
    for (_, z) in candidates {
        if enough(&room) || bins.len() >= REPACK_PARTNERS {
            break;
        }
        let s = sizes[z].as_ref()?;
        room.add(&s.room);
        bins.push(Bin::new(z, s.t, prep.capacity(claims[z].pool, s.t)));
    }
    if !enough(&room) {
        return None;
    }
    if let Some((t, cap)) = target {
        bins.push(Bin::new(y, *t, cap.clone()));
    }
    // Every pod of the claims, by bucket.
    let mut items: Vec<(usize, u64)> = Vec::new();
    for z in std::iter::once(y).chain(bins.iter().map(|bin| bin.claim).filter(|z| *z != y)) {
        for p in &claims[z].pods {
            let b = pod_bucket[*p];
            if b == usize::MAX {
                return None;
            }
            match items.iter_mut().find(|(x, _)| *x == b) {
                Some((_, n)) => *n += 1,
                None => items.push((b, 1)),
            }
            *work += 1;
        }
    }
    // Each resource as shares of the bins' capacity, weighed by how scarce it is there (demand
    // over capacity), so that the tight one leads both the order of pods and the choice of bin.
    let mut demand = [0f64; FIXED];
    let mut capacity = [0f64; FIXED];
    for (b, n) in &items {
        for (r, d) in demand.iter_mut().enumerate() {
            *d += prep.buckets[*b].req.fixed()[r] as f64 * *n as f64;
        }
    }
    for bin in &bins {
        for (r, c) in capacity.iter_mut().enumerate() {
            *c += bin.left.fixed()[r] as f64;
        }
    }
    let weight: Vec<f64> = (0..FIXED)
        .map(|r| {
            if capacity[r] > 0.0 {
                demand[r] / capacity[r] / (capacity[r] * capacity[r])
            } else {
                0.0
            }
        })
        .collect();
    let weighed = |q: &Resources| -> f64 { (0..FIXED).map(|r| q.fixed()[r] as f64 * weight[r]).sum() };
    let share = |b: usize| weighed(&prep.buckets[b].req);
    items.sort_by(|a, b| share(b.0).total_cmp(&share(a.0)).then(a.0.cmp(&b.0)));
    for (b, mut n) in items {
        let bucket = &prep.buckets[b];
        let q = &bucket.req;
        while n > 0 {
            // The bin whose room best matches the pod (largest weighed dot product of the two), a
            // share of the bucket at a time so that every bin gets a mix.
            let chunk = n.div_ceil(bins.len() as u64).max(1);
            let mut best: Option<(f64, usize, u64)> = None;
            for (i, bin) in bins.iter().enumerate() {
                *work += 1;
                let left = &bin.left;
                if !q.fits_in(left) || !compatible(prep, b, claims[bin.claim].pool, bin.t) {
                    continue;
                }
                let tight: f64 = (0..FIXED)
                    .map(|r| q.fixed()[r] as f64 * left.fixed()[r] as f64 * weight[r])
                    .sum();
                if best.is_some_and(|(c, _, _)| c >= tight) {
                    continue;
                }
                let k = (0..FIXED)
                    .filter(|r| q.fixed()[*r] > 0)
                    .map(|r| left.fixed()[r] / q.fixed()[r])
                    .fold(chunk, u64::min);
                let k = bin.host.max_add(bucket, k);
                if k > 0 {
                    best = Some((tight, i, k));
                }
            }
            let (_, i, k) = best?;
            let bin = &mut bins[i];
            for _ in 0..k {
                bin.left.saturating_sub(q);
            }
            bin.host.add(bucket, k as u32);
            bin.held.push((b, k));
            n -= k;
        }
    }
    Some(bins.into_iter().map(|bin| (bin.claim, bin.held)).collect())
}

/// Moves pods between claims so that each holds what `repack` assigned it (and `y`, when not a
/// bin, none).
fn apply_repack(prep: &Prepared, claims: &mut [Claim], pod_bucket: &[usize], y: usize, repack: &Repack) {
    // Per bucket: claims that must give pods and claims that must take them.
    let mut target: BTreeMap<(usize, usize), i64> = BTreeMap::new();
    for (z, held) in repack {
        for (b, k) in held {
            *target.entry((*b, *z)).or_default() += *k as i64;
        }
    }
    let mut involved: Vec<usize> = repack.iter().map(|(z, _)| *z).collect();
    if !involved.contains(&y) {
        involved.push(y);
    }
    let mut delta: BTreeMap<(usize, usize), i64> = target;
    for z in &involved {
        for p in &claims[*z].pods {
            *delta.entry((pod_bucket[*p], *z)).or_default() -= 1;
        }
    }
    let mut by_bucket: BTreeMap<usize, Shifts> = BTreeMap::new();
    for ((b, z), d) in delta {
        let e = by_bucket.entry(b).or_default();
        if d < 0 {
            e.0.push((z, -d));
        } else if d > 0 {
            e.1.push((z, d));
        }
    }
    for (b, (mut give, mut take)) in by_bucket {
        while let (Some(g), Some(t)) = (give.last_mut(), take.last_mut()) {
            move_pod(prep, claims, pod_bucket, b, g.0, t.0);
            g.1 -= 1;
            t.1 -= 1;
            if g.1 == 0 {
                give.pop();
            }
            if t.1 == 0 {
                take.pop();
            }
        }
    }
}

/// Merges: every pod of one claim moves to another of its group when one type that holds both
/// costs less than the two. Greedy packing fills the first node with the largest pod's cheapest
/// type and opens a second for a small pod that no longer fits, where one size up would have held
/// both for less (3 CPU and 250m on a c5.xlarge and a c5.large, $0.255/h, against one m5.xlarge,
/// $0.192/h). Cheapest claims give their pods first; each tries the partners of its group in
/// order, at most `MERGE_PARTNERS`, in groups of at most `MERGE_MAX_GROUP` claims.
fn merge(
    prep: &Prepared,
    look: &Lookups,
    claims: &mut [Claim],
    pod_bucket: &[usize],
    groups: &BTreeMap<Group, Vec<usize>>,
    sizes: &mut [Option<Size>],
) {
    for members in groups.values().filter(|m| m.len() <= MERGE_MAX_GROUP) {
        let mut donors: Vec<usize> = members.clone();
        donors.sort_by(|a, b| {
            let price = |i: &usize| sizes[*i].as_ref().map_or(f64::INFINITY, |s| s.price);
            price(a).total_cmp(&price(b)).then(a.cmp(b))
        });
        for &d in &donors {
            let Some(sd) = sizes[d].as_ref().map(|s| s.price) else {
                continue;
            };
            if claims[d].pods.is_empty() {
                continue;
            }
            let mut best: Option<(f64, usize)> = None;
            for &r in members.iter().filter(|&&r| r != d).take(MERGE_PARTNERS) {
                let Some(sr) = sizes[r].as_ref().map(|s| s.price) else {
                    continue;
                };
                if claims[r].pods.is_empty() {
                    continue;
                }
                let (cd, cr) = (&claims[d], &claims[r]);
                let mut load = cr.load.clone();
                load.add(&cd.load);
                let mut types = cr.types.clone();
                types.intersect_with(&cd.types);
                let Some((price, _)) = cheapest_fit(prep, look, cr.pool, &types, &load, cr.zones, cr.cts) else {
                    continue;
                };
                let saving = sr + sd - price;
                if saving <= 1e-9 || best.is_some_and(|(s, _)| s >= saving) {
                    continue;
                }
                // Hostname constraints: each of the donor's pods joins in turn.
                let mut host = cr.host.clone();
                let fits = cd.pods.iter().all(|p| {
                    let b = pod_bucket[*p];
                    b != usize::MAX && host_allows(prep, &host, None, b) && {
                        host.add(&prep.buckets[b], 1);
                        true
                    }
                });
                if fits {
                    best = Some((saving, r));
                }
            }
            if let Some((_, r)) = best {
                let moving: Vec<usize> = claims[d].pods.iter().map(|p| pod_bucket[*p]).collect();
                for b in moving {
                    move_pod(prep, claims, pod_bucket, b, d, r);
                }
                sizes[r] = size(prep, look, &claims[r]);
                sizes[d] = None;
            }
        }
    }
}

/// Whether the exchange pass may touch a claim: no limits (a new type could count differently), no
/// minValues (fewer types could fit), no accelerators, no pods that must share their node.
pub(super) fn eligible(prep: &Prepared, c: &Claim) -> bool {
    c.reserved.is_none()
        && !c.joins.iter().any(|(b, _)| prep.buckets[*b].gang.is_some())
        && c.load.accelerators() == 0
        && !prep.pools[c.pool]
            .pool
            .requirements
            .iter()
            .any(|r| r.min_values.is_some())
}

/// The claim's cheapest fitting type (as `finish` prices it: no accelerated or metal type).
fn size(prep: &Prepared, look: &Lookups, c: &Claim) -> Option<Size> {
    if !eligible(prep, c) {
        return None;
    }
    let (price, t) = cheapest_fit(prep, look, c.pool, &c.types, &c.load, c.zones, c.cts)?;
    let mut room = prep.capacity(c.pool, t);
    room.saturating_sub(&c.load);
    Some(Size { t, price, room })
}

/// The cheapest type of `types` (no accelerated or metal type) that holds `load` on a node of
/// pool `pool`, offered in the zones and capacity types: its price and index.
pub(super) fn cheapest_fit(
    prep: &Prepared,
    look: &Lookups,
    pool: usize,
    types: &super::typeset::TypeSet,
    load: &Resources,
    zones: u64,
    cts: u8,
) -> Option<(f64, usize)> {
    let pv = &prep.pools[pool];
    let all = prep.input.instance_types;
    let mut best: Option<(f64, usize)> = None;
    for &(floor, t) in look.by_price(prep, pool) {
        if best.is_some_and(|(bp, _)| floor >= bp) {
            // Types come cheapest first at the pool's prices, a floor on the claim's.
            break;
        }
        if !types.contains(t) || all[t].accelerated || all[t].bare_metal {
            continue;
        }
        if !load.fits_in_with(&pv.ds_overhead[t], pv.allocatable(all, t)) {
            continue;
        }
        if let Some((p, _, _)) = prep.best_offer(t, zones, cts)
            && best.is_none_or(|(bp, _)| p < bp)
        {
            best = Some((p, t));
        }
    }
    best
}

/// Cheaper types the claim could shrink to by moving one pod out: those where the excess over the
/// type's capacity is smallest (as shares of the current type), at most `TARGETS`, each with its
/// capacity.
fn targets(prep: &Prepared, look: &Lookups, c: &Claim, s: &Size, largest: &Resources) -> Vec<(usize, Resources)> {
    let mut found = cheaper_types(prep, look, c, s, Some(largest));
    found.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    found.truncate(TARGETS);
    found
        .into_iter()
        .map(|(_, _, t)| (t, prep.capacity(c.pool, t)))
        .collect()
}

/// The claim's best way down by one leaving pod (see `targets`), if any.
fn down(prep: &Prepared, look: &Lookups, c: &Claim, s: Option<&Size>, held: &[usize]) -> Option<Down> {
    let s = s?;
    let mut largest = Resources::new();
    for b in held {
        largest.max_with(&prep.buckets[*b].req);
    }
    // The first target one of the claim's pods can cover alone.
    let (t, excess) = targets(prep, look, c, s, &largest).into_iter().find_map(|(t, cap)| {
        let mut excess = c.load.clone();
        excess.saturating_sub(&cap);
        held.iter()
            .any(|b| excess.fits_in(&prep.buckets[*b].req))
            .then_some((t, excess))
    })?;
    let price = prep.best_offer(t, c.zones, c.cts)?.0;
    Some(Down { price, excess })
}

/// For a claim with much idle room: a larger type for it and one pod from each of several claims
/// of its group, each of which then drops to its cheaper type, when the drops save more than the
/// growth costs. Returns the moves (bucket, from claim).
#[allow(clippy::too_many_arguments)]
fn find_absorb(
    prep: &Prepared,
    look: &Lookups,
    claims: &[Claim],
    sizes: &[Option<Size>],
    held: &[Vec<usize>],
    downs: &[Option<Down>],
    y: usize,
    donors: &[(usize, usize)],
) -> Option<Vec<(usize, usize)>> {
    let sy = sizes[y].as_ref()?;
    let cy = &claims[y];
    let cap = {
        let mut c = sy.room.clone();
        c.add(&cy.load);
        c
    };
    let idle = |r: fn(&Resources) -> u64| r(&sy.room) as f64 / r(&cap).max(1) as f64;
    if idle(Resources::cpu_milli).max(idle(Resources::memory)) < ABSORB_IDLE {
        return None;
    }
    let types = prep.input.instance_types;
    let pv = &prep.pools[cy.pool];
    // The cheapest types above the claim's own (they fit its load: they are larger).
    let mut grow: Vec<(f64, usize)> = Vec::new();
    for &(_, t) in look.by_price(prep, cy.pool) {
        if grow.len() >= GROW_TARGETS * 4 {
            break;
        }
        if t == sy.t || !cy.types.contains(t) || types[t].accelerated || types[t].bare_metal {
            continue;
        }
        if !cy.load.fits_in_with(&pv.ds_overhead[t], pv.allocatable(types, t)) {
            continue;
        }
        if let Some((p, _, _)) = prep.best_offer(t, cy.zones, cy.cts)
            && p > sy.price
        {
            grow.push((p, t));
        }
    }
    grow.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    grow.truncate(GROW_TARGETS);
    for (price, t) in grow {
        let extra = price - sy.price;
        let mut room = prep.capacity(cy.pool, t);
        room.saturating_sub(&cy.load);
        // Every pod that would let its claim drop a size, those taking the least of the room (their
        // largest share of any resource) first; each donor gives at most one.
        let share = |p: &Resources| {
            (0..FIXED)
                .filter(|r| p.fixed()[*r] > 0)
                .map(|r| p.fixed()[r] as f64 / room.fixed()[r].max(1) as f64)
                .fold(0.0, f64::max)
        };
        let mut offers: Vec<(f64, usize, usize)> = Vec::new();
        for &(z, bp) in donors {
            if z == y {
                continue;
            }
            let p = &prep.buckets[bp].req;
            // CPU and memory by comparison first: most offers fail there.
            if p.cpu_milli() > room.cpu_milli() || p.memory() > room.memory() {
                continue;
            }
            if !p.fits_in(&room) || !compatible(prep, bp, cy.pool, t) {
                continue;
            }
            if downs[z].as_ref().is_some_and(|d| d.excess.fits_in(p)) && held[z].contains(&bp) {
                offers.push((share(p), z, bp));
            }
        }
        offers.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut host = cy.host.clone();
        let mut saved = 0.0;
        let mut moves: Vec<(usize, usize)> = Vec::new();
        for (_, z, bp) in offers {
            let bucket = &prep.buckets[bp];
            if moves.iter().any(|(_, from)| *from == z) {
                continue;
            }
            if !bucket.req.fits_in(&room) || host.max_add(bucket, 1) != 1 {
                continue;
            }
            host.add(bucket, 1);
            room.saturating_sub(&bucket.req);
            saved += sizes[z].as_ref().map_or(0.0, |s| s.price) - downs[z].as_ref().map_or(0.0, |d| d.price);
            moves.push((bp, z));
        }
        if saved > extra + 1e-9 {
            return Some(moves);
        }
    }
    None
}

/// The distinct buckets among a claim's pods, in the order first held.
fn buckets_of(c: &Claim, pod_bucket: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for p in &c.pods {
        let b = pod_bucket[*p];
        if b != usize::MAX && !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

/// Whether a pod of `b` may sit on a claim of pool `pool` sized to `t`.
fn compatible(prep: &Prepared, b: usize, pool: usize, t: usize) -> bool {
    prep.sigs[prep.buckets[b].sig].compat[pool]
        .as_ref()
        .is_ok_and(|c| c.types.contains(t))
}

/// Whether, after one pod of `leaving` goes, one pod of `joining` may come (hostname constraints).
fn host_allows(prep: &Prepared, host: &HostCounts, leaving: Option<usize>, joining: usize) -> bool {
    host.max_add_after(leaving.map(|b| &prep.buckets[b]), &prep.buckets[joining], 1) == 1
}

fn find_trade(
    prep: &Prepared,
    look: &Lookups,
    claims: &[Claim],
    sizes: &[Option<Size>],
    held: &[Vec<usize>],
    y: usize,
    partners: &ByRoom,
) -> Option<Trade> {
    let sy = sizes[y].as_ref()?;
    let cy = &claims[y];
    let own = &held[y];
    let mut largest = Resources::new();
    for b in own {
        largest.max_with(&prep.buckets[*b].req);
    }
    for (t, cap) in targets(prep, look, cy, sy, &largest) {
        let mut excess = cy.load.clone();
        excess.saturating_sub(&cap);
        for &bq in own {
            let q = &prep.buckets[bq].req;
            if !excess.fits_in(q) {
                continue;
            }
            // What may come back: the target's capacity after the pod leaves.
            let mut slack = cap.clone();
            let mut rest = cy.load.clone();
            rest.saturating_sub(q);
            slack.saturating_sub(&rest);
            // Scan partners by the room the pod needs most of, beyond what could come back.
            let need = |r: RoomOf| r(q).saturating_sub(r(&slack));
            let (order, key): (&[(u64, usize)], RoomOf) = if need(Resources::memory) as f64
                / cy.load.memory().max(1) as f64
                > need(Resources::cpu_milli) as f64 / cy.load.cpu_milli().max(1) as f64
            {
                (&partners[1], Resources::memory)
            } else {
                (&partners[0], Resources::cpu_milli)
            };
            for &(room, z) in order.iter().take(PARTNERS) {
                if room < need(key) {
                    break;
                }
                if z == y {
                    continue;
                }
                let Some(sz) = sizes[z].as_ref() else { continue };
                // Room plus what could come back must hold the pod (CPU and memory first).
                if sz.room.cpu_milli() + slack.cpu_milli() < q.cpu_milli()
                    || sz.room.memory() + slack.memory() < q.memory()
                {
                    continue;
                }
                if !compatible(prep, bq, claims[z].pool, sz.t) {
                    continue;
                }
                if q.fits_in(&sz.room) && host_allows(prep, &claims[z].host, None, bq) {
                    return Some(Trade {
                        out: bq,
                        back: None,
                        partner: z,
                    });
                }
                for &bp in &held[z] {
                    let p = &prep.buckets[bp].req;
                    if bp == bq || !p.fits_in(&slack) || !fits_with_back(q, &sz.room, p) {
                        continue;
                    }
                    if compatible(prep, bp, cy.pool, t)
                        && host_allows(prep, &claims[z].host, Some(bp), bq)
                        && host_allows(prep, &cy.host, Some(bq), bp)
                    {
                        return Some(Trade {
                            out: bq,
                            back: Some(bp),
                            partner: z,
                        });
                    }
                }
            }
        }
    }
    None
}

/// Whether `q` fits in `room` once `back` has left it (no sum is built: this runs per partner pod).
fn fits_with_back(q: &Resources, room: &Resources, back: &Resources) -> bool {
    (0..FIXED).all(|r| q.fixed()[r] <= room.fixed()[r] + back.fixed()[r])
        && q.extended()
            .iter()
            .all(|(k, v)| *v <= room.get_named(k) + back.get_named(k))
}

/// Moves one pod of bucket `b` from claim `from` to claim `to`.
fn move_pod(prep: &Prepared, claims: &mut [Claim], pod_bucket: &[usize], b: usize, from: usize, to: usize) {
    let Some(pos) = claims[from].pods.iter().rposition(|p| pod_bucket[*p] == b) else {
        return;
    };
    let pod = claims[from].pods.remove(pos);
    let bucket = &prep.buckets[b];
    claims[from].load.saturating_sub(&bucket.req);
    claims[from].host.remove(bucket, 1);
    let c = &mut claims[to];
    c.pods.push(pod);
    c.load.add(&bucket.req);
    c.host.add(bucket, 1);
    if let Ok(compat) = prep.sigs[bucket.sig].compat[c.pool].as_ref() {
        c.types.intersect_with(&compat.types);
    }
}

fn apply(prep: &Prepared, claims: &mut [Claim], pod_bucket: &[usize], y: usize, trade: &Trade) {
    move_pod(prep, claims, pod_bucket, trade.out, y, trade.partner);
    if let Some(bp) = trade.back {
        move_pod(prep, claims, pod_bucket, bp, trade.partner, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::fake::benchmark_types;
    use crate::model::Pod;
    use crate::nodepool::NodePool;
    use crate::scheduler::Input;
    use crate::scheduler::claim::{join, new_claim};

    /// The bucket holding pods of this request.
    fn bucket(prep: &Prepared, cpu: u64, mib: u64) -> usize {
        prep.buckets
            .iter()
            .position(|b| b.req.cpu_milli() == cpu && b.req.memory() == mib << 20)
            .expect("a bucket of that request")
    }

    /// A claim of type `t` holding `k` pods of each bucket given, as the packer would build it.
    fn claim(prep: &mut Prepared, t: usize, pods: &[(usize, u64)]) -> Claim {
        let (_, zones, cts) = prep.seed_types(&prep.buckets[pods[0].0], 0).unwrap();
        let mut c = new_claim(prep, pods[0].0, 0, t, zones, cts).unwrap();
        for (b, k) in pods {
            assert_eq!(join(prep, &mut c, *b, *k), *k);
        }
        c
    }

    fn price(prep: &Prepared, look: &Lookups, claims: &[Claim]) -> f64 {
        claims
            .iter()
            .filter(|c| !c.pods.is_empty())
            .map(|c| size(prep, look, c).unwrap().price)
            .sum()
    }

    #[test]
    fn an_idle_claim_grows_to_take_a_pod_from_each_of_two_that_shrink() {
        // Benchmark types: type i has i+1 vCPU and 2(i+1) GiB at a price linear in size.
        let types = benchmark_types(8);
        let pools = vec![NodePool::new("default")];
        let mut pods = vec![Pod::new("memory-heavy", 100, 3900 << 20)];
        pods.extend((0..4).map(|i| Pod::new(&format!("cpu-{i}"), 1000, 512 << 20)));
        let input = Input::new_nodes_only(&pods, &pools, &types);
        let mut prep = Prepared::new(&input);
        let (memory, cpu) = (bucket(&prep, 100, 3900), bucket(&prep, 1000, 512));
        // Three 2-vCPU nodes: one with its memory full and 95% of its CPU idle, two CPU-full.
        let mut claims = vec![
            claim(&mut prep, 1, &[(memory, 1)]),
            claim(&mut prep, 1, &[(cpu, 2)]),
            claim(&mut prep, 1, &[(cpu, 2)]),
        ];
        let look = Lookups::new(&prep);
        let before = price(&prep, &look, &claims);
        run(&prep, &look, &mut claims);
        let after = price(&prep, &look, &claims);
        // The idle node grows to 3 vCPU and takes one CPU pod from each, which drop to 1 vCPU.
        let sized: Vec<(usize, usize)> = claims
            .iter()
            .map(|c| (size(&prep, &look, c).unwrap().t, c.pods.len()))
            .collect();
        assert_eq!(sized, vec![(2, 3), (0, 1), (0, 1)]);
        assert!(after < before - 0.3, "{after} vs {before}");
        let mut placed: Vec<usize> = claims.iter().flat_map(|c| c.pods.clone()).collect();
        placed.sort_unstable();
        assert_eq!(placed, (0..pods.len()).collect::<Vec<_>>(), "no pod lost or doubled");
    }

    /// Two 2-vCPU claims: A memory-bound with CPU idle, B CPU-bound with memory idle.
    fn two_claims(a: [(u64, u64); 2], b: [(u64, u64); 2]) -> Vec<Pod> {
        a.iter()
            .chain(&b)
            .enumerate()
            .map(|(i, (cpu, mib))| Pod::new(&format!("p{i}"), *cpu, mib << 20))
            .collect()
    }

    /// Runs the pass over claims A (pods 0, 1) and B (pods 2, 3), each on the 2-vCPU type; returns
    /// (pods, type) per claim after, and the prices before and after.
    fn exchange_two(pods: &[Pod]) -> (Vec<(Vec<usize>, usize)>, f64, f64) {
        let types = benchmark_types(8);
        let pools = vec![NodePool::new("default")];
        let input = Input::new_nodes_only(pods, &pools, &types);
        let mut prep = Prepared::new(&input);
        let of = |prep: &Prepared, p: &Pod| bucket(prep, p.requests.cpu_milli(), p.requests.memory() >> 20);
        let (a0, a1, b0, b1) = (
            of(&prep, &pods[0]),
            of(&prep, &pods[1]),
            of(&prep, &pods[2]),
            of(&prep, &pods[3]),
        );
        let mut claims = vec![
            claim(&mut prep, 1, &[(a0, 1), (a1, 1)]),
            claim(&mut prep, 1, &[(b0, 1), (b1, 1)]),
        ];
        let look = Lookups::new(&prep);
        let before = price(&prep, &look, &claims);
        run(&prep, &look, &mut claims);
        let after = price(&prep, &look, &claims);
        let out = claims
            .iter()
            .map(|c| {
                let mut p = c.pods.clone();
                p.sort_unstable();
                (p, size(&prep, &look, c).unwrap().t)
            })
            .collect();
        (out, before, after)
    }

    #[test]
    fn a_claim_shrinks_by_handing_a_pod_to_spare_room() {
        // B has 100m CPU and 3.8 GiB free: one of A's pods (the first that covers A's excess, 2 GiB)
        // moves there and A drops to 1 vCPU.
        let pods = two_claims([(100, 2048), (100, 1536)], [(1500, 100), (400, 100)]);
        let (claims, before, after) = exchange_two(&pods);
        assert_eq!(claims, vec![(vec![1], 0), (vec![0, 2, 3], 1)]);
        assert!(after < before - 0.3, "{after} vs {before}");
    }

    #[test]
    fn a_claim_shrinks_by_trading_a_pod_for_a_smaller_one() {
        // B has no CPU free: A's (600m, 1.5 GiB) pod goes there only in exchange for B's 700m pod,
        // which fits what A keeps on 1 vCPU; B still fits 2 vCPU.
        let pods = two_claims([(100, 1800), (600, 1536)], [(1300, 100), (700, 100)]);
        let (claims, before, after) = exchange_two(&pods);
        assert_eq!(claims, vec![(vec![0, 3], 0), (vec![1, 2], 1)]);
        assert!(after < before - 0.3, "{after} vs {before}");
    }

    #[test]
    fn nothing_moves_when_no_trade_saves() {
        // Both nodes balanced and full: any move would need a larger type somewhere.
        let pods = two_claims([(1000, 2048), (1000, 2048)], [(1000, 2048), (1000, 2048)]);
        let (claims, before, after) = exchange_two(&pods);
        assert_eq!(claims, vec![(vec![0, 1], 1), (vec![2, 3], 1)]);
        assert_eq!(before, after);
    }

    #[test]
    fn a_tail_claim_empties_into_room_only_a_repacking_makes() {
        // Two 4-vCPU claims with 750m free each and a 1-vCPU claim holding a 1000m pod: the pod
        // fits neither as they stand, but packed again one takes 1500m, 1500m and 1000m and the
        // other the rest, and the third node goes.
        let types = benchmark_types(8);
        let pools = vec![NodePool::new("default")];
        let mut pods: Vec<Pod> = (0..4).map(|i| Pod::new(&format!("big-{i}"), 1500, 100 << 20)).collect();
        pods.extend((0..2).map(|i| Pod::new(&format!("small-{i}"), 250, 100 << 20)));
        pods.push(Pod::new("tail", 1000, 100 << 20));
        let input = Input::new_nodes_only(&pods, &pools, &types);
        let mut prep = Prepared::new(&input);
        let (big, small, tail) = (
            bucket(&prep, 1500, 100),
            bucket(&prep, 250, 100),
            bucket(&prep, 1000, 100),
        );
        let mut claims = vec![
            claim(&mut prep, 3, &[(big, 2), (small, 1)]),
            claim(&mut prep, 3, &[(big, 2), (small, 1)]),
            claim(&mut prep, 0, &[(tail, 1)]),
        ];
        let look = Lookups::new(&prep);
        let before = price(&prep, &look, &claims);
        // The scatter alone: the trades of `run` would first shrink a 4-vCPU claim.
        let mut pod_bucket = vec![usize::MAX; pods.len()];
        for (b, bucket) in prep.buckets.iter().enumerate() {
            for p in &bucket.pods[..bucket.next] {
                pod_bucket[*p] = b;
            }
        }
        let mut sizes: Vec<Option<Size>> = claims.iter().map(|c| size(&prep, &look, c)).collect();
        let mut groups: BTreeMap<Group, Vec<usize>> = BTreeMap::new();
        for (i, c) in claims.iter().enumerate() {
            groups.entry((c.pool, c.zones, c.cts)).or_default().push(i);
        }
        scatter(&prep, &look, &mut claims, &pod_bucket, &groups, &mut sizes);
        assert!(
            claims[2].pods.is_empty(),
            "the tail claim empties: {:?}",
            claims[2].pods
        );
        let after = price(&prep, &look, &claims);
        assert!(
            (before - after - 0.1 - 0.2 * 1.073741824).abs() < 1e-6,
            "{after} vs {before}"
        );
        for c in &claims[..2] {
            assert_eq!(size(&prep, &look, c).unwrap().t, 3, "each partner keeps its type");
            assert!(c.load.cpu_milli() <= 4000);
        }
        let mut placed: Vec<usize> = claims.iter().flat_map(|c| c.pods.clone()).collect();
        placed.sort_unstable();
        assert_eq!(placed, (0..pods.len()).collect::<Vec<_>>(), "no pod lost or doubled");
    }
}
