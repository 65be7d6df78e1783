//! A new node claim while it is filled, and the steps both packers build claims with: placing
//! buckets on existing and in-flight nodes, opening an empty claim, joining pods to it within
//! its offerings, hostname limits and minValues, and keeping pools within their limits.

use super::prepare::{HostCounts, Prepared};
use super::typeset::TypeSet;
use crate::catalogue::CapacityType;
use crate::nodepool::Limits;
use crate::resources::Resources;

/// A new node claim while it is being filled.
#[derive(Clone)]
pub(super) struct Claim {
    pub pool: usize,
    /// The type the claim was sized for; its capacity bounds the load.
    pub target: usize,
    pub types: TypeSet,
    pub zones: u64,
    pub cts: u8,
    pub load: Resources,
    pub cap: Resources,
    pub pods: Vec<usize>,
    pub host: HostCounts,
    /// What the claim counts against its pool's limits (None when the pool has no limits).
    pub reserved: Option<Resources>,
    /// Whether the claim is first filled with a slice of every bucket (see `seed_and_fill`).
    pub sliced: bool,
    /// (bucket, pods) of every join, in order: what a tentative claim gives back.
    pub joins: Vec<(usize, u64)>,
}

/// Best-fit of each bucket onto existing and in-flight nodes.
pub(super) fn place_on_existing(prep: &mut Prepared, bindings: &mut Vec<(usize, usize)>) {
    if prep.nodes.is_empty() {
        return;
    }
    for b in 0..prep.buckets.len() {
        // Pods that must share a node are placed with their group (`topology::colocation`).
        if prep.buckets[b].gang.is_some() {
            continue;
        }
        // Fullest node first (least free CPU), so spare room concentrates on fewer nodes.
        let mut candidates: Vec<usize> = (0..prep.nodes.len())
            .filter(|n| prep.fits_node(&prep.buckets[b], &prep.nodes[*n]))
            .collect();
        candidates.sort_by_key(|n| (prep.nodes[*n].in_flight, prep.nodes[*n].free.cpu_milli(), *n));
        for n in candidates {
            let bucket = &prep.buckets[b];
            if bucket.remaining() == 0 {
                break;
            }
            let node = &prep.nodes[n];
            let k = node.free.times_fits(&bucket.req).min(bucket.remaining() as u64);
            let k = node.host.max_add(bucket, k);
            if k == 0 {
                continue;
            }
            let pods: Vec<usize> = bucket.pods[bucket.next..bucket.next + k as usize].to_vec();
            let req = bucket.req.clone();
            let node = &mut prep.nodes[n];
            let mut add = Resources::new();
            add.add_times(&req, k);
            node.free.saturating_sub(&add);
            node.host.add(&prep.buckets[b], k as u32);
            prep.buckets[b].next += k as usize;
            bindings.extend(pods.into_iter().map(|p| (p, n)));
        }
    }
}

/// How many pods of bucket `b` may join claim `c` (at most `want`), and the narrowed offering set.
pub(super) fn join_capacity(prep: &Prepared, c: &Claim, b: usize, want: u64) -> Option<(u64, u64, u8)> {
    let bucket = &prep.buckets[b];
    // Most claims are full for most buckets: that check first, without allocating.
    let room = c.cap.times_fits_after(&c.load, &bucket.req);
    if room == 0 {
        return None;
    }
    let compat = prep.sigs[bucket.sig].compat[c.pool].as_ref().ok()?;
    if !compat.types.contains(c.target) {
        return None;
    }
    let zones = c.zones & compat.zones & bucket.zones;
    let cts = c.cts & compat.cts & bucket.cts;
    if zones == 0 || cts == 0 {
        return None;
    }
    if (zones != c.zones || cts != c.cts) && !prep.offered(c.target, zones, cts) {
        return None;
    }
    let k = room.min(want).min(bucket.remaining() as u64);
    let k = c.host.max_add(bucket, k);
    let k = min_values_cap(prep, c, b, k, compat);
    (k > 0).then_some((k, zones, cts))
}

/// Reduces `k` until the claim keeps every pool requirement's minValues.
fn min_values_cap(prep: &Prepared, c: &Claim, b: usize, mut k: u64, compat: &super::prepare::Compat) -> u64 {
    let pool = prep.pools[c.pool].pool;
    let mins: Vec<_> = pool.requirements.iter().filter(|r| r.min_values.is_some()).collect();
    if mins.is_empty() || k == 0 {
        return k;
    }
    let types = prep.input.instance_types;
    let mut set = c.types.clone();
    set.intersect_with(&compat.types);
    let ok = |k: u64| {
        let mut load = c.load.clone();
        load.add_times(&prep.buckets[b].req, k);
        mins.iter().all(|r| {
            let mut values: Vec<&str> = set
                .iter()
                .filter(|t| {
                    let mut need = load.clone();
                    let pv = &prep.pools[c.pool];
                    need.add(&pv.ds_overhead[*t]);
                    need.fits_in(pv.allocatable(types, *t))
                })
                .flat_map(|t| super::prepare::type_values(&types[t], r))
                .collect();
            values.sort_unstable();
            values.dedup();
            values.len() >= r.min_values.unwrap_or(0) as usize
        })
    };
    while k > 0 && !ok(k) {
        k /= 2;
    }
    k
}

pub(super) fn join(prep: &mut Prepared, c: &mut Claim, b: usize, want: u64) -> u64 {
    let Some((k, zones, cts)) = join_capacity(prep, c, b, want) else {
        return 0;
    };
    if let Ok(compat) = prep.sigs[prep.buckets[b].sig].compat[c.pool].as_ref() {
        c.types.intersect_with(&compat.types);
    }
    c.zones = zones;
    c.cts = cts;
    let bucket = &mut prep.buckets[b];
    c.load.add_times(&bucket.req, k);
    c.pods
        .extend_from_slice(&bucket.pods[bucket.next..bucket.next + k as usize]);
    bucket.next += k as usize;
    c.host.add(&prep.buckets[b], k as u32);
    c.joins.push((b, k));
    k
}

/// Pool limits left after existing nodes and this plan's claims.
pub(super) fn headroom<'c>(
    prep: &Prepared,
    claims: impl Iterator<Item = &'c Claim>,
    pi: usize,
) -> Option<(Resources, Option<u64>)> {
    let pv = &prep.pools[pi];
    let limits: &Limits = &pv.pool.limits;
    if limits.is_empty() {
        return None;
    }
    let mut used = pv.used.clone();
    let mut nodes = pv.used_nodes;
    // The claims of every view of the pool count against its limits.
    for c in claims.filter(|c| std::ptr::eq(prep.pools[c.pool].pool, pv.pool)) {
        if let Some(r) = &c.reserved {
            used.add(r);
        }
        nodes += 1;
    }
    let mut room = limits.resources.clone();
    for (name, v) in limits.entries() {
        room.set_named(&name, v.saturating_sub(used.get_named(&name)));
    }
    Some((room, limits.nodes.map(|n| n.saturating_sub(nodes))))
}

/// Whether a type's capacity stays within the pool's remaining limits.
pub(super) fn within_limits(limits: &Limits, room: &(Resources, Option<u64>), cap: &Resources) -> bool {
    if room.1 == Some(0) {
        return false;
    }
    limits
        .entries()
        .iter()
        .all(|(name, _)| cap.get_named(name) <= room.0.get_named(name))
}

/// Removes the types that would push pool `pi` past its remaining limits; an error names the limit
/// when none is left.
pub(super) fn apply_limits(
    prep: &Prepared,
    pi: usize,
    room: Option<&(Resources, Option<u64>)>,
    set: &mut TypeSet,
) -> Result<(), String> {
    let Some(room) = room else { return Ok(()) };
    let before = set.clone();
    for t in before.iter() {
        if !within_limits(
            &prep.pools[pi].pool.limits,
            room,
            &prep.input.instance_types[t].capacity,
        ) {
            set.remove(t);
        }
    }
    if set.is_empty() {
        return Err(limit_reason(prep, pi, room, &before));
    }
    Ok(())
}

pub(super) fn limit_reason(prep: &Prepared, pi: usize, room: &(Resources, Option<u64>), set: &TypeSet) -> String {
    let pv = &prep.pools[pi];
    if room.1 == Some(0) {
        return format!(
            "pool {}: limit nodes={} would be exceeded",
            pv.pool.name,
            pv.pool.limits.nodes.unwrap_or(0)
        );
    }
    let types = prep.input.instance_types;
    for (name, limit) in pv.pool.limits.entries() {
        let smallest = set
            .iter()
            .map(|t| types[t].capacity.get_named(&name))
            .min()
            .unwrap_or(0);
        if smallest > room.0.get_named(&name) {
            return format!(
                "pool {}: limit {name}={} would be exceeded",
                pv.pool.name,
                Resources::format_amount(&name, limit)
            );
        }
    }
    format!("pool {}: limits would be exceeded", pv.pool.name)
}

/// Price of the cheapest available offering of `t` within zones/capacity types.
pub(super) fn best_price(prep: &Prepared, t: usize, zones: u64, cts: u8) -> Option<(f64, CapacityType, usize)> {
    prep.best_offer(t, zones, cts)
}

/// An empty claim of type `t` in pool `pi` for bucket `b`'s pods.
pub(super) fn new_claim(prep: &Prepared, b: usize, pi: usize, t: usize, zones: u64, cts: u8) -> Result<Claim, String> {
    prep.sigs[prep.buckets[b].sig].compat[pi]
        .as_ref()
        .map_err(Clone::clone)?;
    let has_limits = !prep.pools[pi].pool.limits.is_empty();
    Ok(Claim {
        pool: pi,
        target: t,
        // Every type of the pool, narrowed by each bucket that joins: the seed may not join
        // (a relaxed claim's seed need not host its target), and its types alone could then
        // leave the claim with none that the pods that did join can use.
        types: prep.pools[pi].types.clone(),
        zones,
        cts,
        load: Resources::new(),
        cap: prep.capacity(pi, t),
        pods: Vec::new(),
        host: HostCounts::default(),
        reserved: has_limits.then(|| prep.input.instance_types[t].capacity.clone()),
        sliced: false,
        joins: Vec::new(),
    })
}
