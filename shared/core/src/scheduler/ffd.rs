//! Karpenter's provisioning algorithm as its documentation describes it, kept as the benchmark
//! baseline: pods sorted by CPU then memory, descending; each pod tries existing nodes, then the
//! claims of this batch with the fewest pods first, then opens a claim in the highest-weight pool.
//! A claim keeps every instance type that still fits all its pods plus daemonsets, and a pod joins
//! while at least one does; the claim launches as the cheapest type left. Limits count the largest
//! type a claim may become.

use super::claim::{Claim, apply_limits, headroom, place_on_existing};
use super::finish::finish;
use super::prepare::{HostCounts, Prepared};

use super::{Options, Plan};
use crate::resources::Resources;

struct FfdClaim {
    claim: Claim,
    /// Element-wise largest capacity among the remaining types: a quick reject.
    max_cap: Resources,
}

pub(super) fn run(mut prep: Prepared, opts: &Options) -> Plan {
    let mut bindings = Vec::new();
    place_on_existing(&mut prep, &mut bindings);
    let mut failed = std::mem::take(&mut prep.unschedulable);
    let mut order: Vec<usize> = (0..prep.buckets.len()).collect();
    order.sort_by(|a, b| {
        let (x, y) = (&prep.buckets[*a].req, &prep.buckets[*b].req);
        y.cpu_milli()
            .cmp(&x.cpu_milli())
            .then(y.memory().cmp(&x.memory()))
            .then(a.cmp(b))
    });
    let mut claims: Vec<FfdClaim> = super::topology::colocation::place(&mut prep, &[], &mut bindings, &mut failed)
        .into_iter()
        .map(|claim| FfdClaim {
            max_cap: claim.cap.clone(),
            claim,
        })
        .collect();
    let types = prep.input.instance_types;
    for b in order {
        while prep.buckets[b].remaining() > 0 {
            // Existing claims, fewest pods first.
            let mut idx: Vec<usize> = (0..claims.len()).collect();
            idx.sort_by_key(|c| (claims[*c].claim.pods.len(), *c));
            let mut placed = false;
            for ci in idx {
                if try_join(&mut prep, &mut claims[ci], b) {
                    placed = true;
                    break;
                }
            }
            if placed {
                continue;
            }
            match open(&prep, &claims, b) {
                Ok(mut c) => {
                    if !try_join(&mut prep, &mut c, b) {
                        let bucket = &mut prep.buckets[b];
                        failed.push((bucket.pods[bucket.next], "no instance type fits the pod".into()));
                        bucket.next += 1;
                    }
                    claims.push(c);
                }
                Err(reason) => prep.buckets[b].fail_rest(&reason, &mut failed),
            }
        }
    }
    let _ = types;
    let claims = claims.into_iter().map(|c| c.claim).collect();
    finish(&prep, claims, bindings, failed, opts)
}

/// Adds one pod of bucket `b` if some remaining type still fits everything.
fn try_join(prep: &mut Prepared, fc: &mut FfdClaim, b: usize) -> bool {
    let bucket = &prep.buckets[b];
    let c = &fc.claim;
    let mut need = c.load.clone();
    need.add(&bucket.req);
    if !need.fits_in(&fc.max_cap) {
        return false;
    }
    let Ok(compat) = prep.sigs[bucket.sig].compat[c.pool].as_ref() else {
        return false;
    };
    let zones = c.zones & compat.zones & bucket.zones;
    let cts = c.cts & compat.cts & bucket.cts;
    if zones == 0 || cts == 0 || c.host.max_add(bucket, 1) == 0 {
        return false;
    }
    let types = prep.input.instance_types;
    let pv = &prep.pools[c.pool];
    let mut set = c.types.clone();
    set.intersect_with(&compat.types);
    let mut max_cap = Resources::new();
    for t in set.clone().iter() {
        let mut n = need.clone();
        n.add(&pv.ds_overhead[t]);
        if n.fits_in(pv.allocatable(types, t)) && prep.offered(t, zones, cts) {
            max_cap.max_with(&prep.capacity(c.pool, t));
        } else {
            set.remove(t);
        }
    }
    if set.is_empty() {
        return false;
    }
    let c = &mut fc.claim;
    c.types = set;
    c.zones = zones;
    c.cts = cts;
    c.load = need;
    let bucket = &mut prep.buckets[b];
    c.pods.push(bucket.pods[bucket.next]);
    bucket.next += 1;
    c.host.add(&prep.buckets[b], 1);
    fc.max_cap = max_cap;
    true
}

fn open(prep: &Prepared, claims: &[FfdClaim], b: usize) -> Result<FfdClaim, String> {
    let bucket = &prep.buckets[b];
    if let Some(r) = prep.sig_reason(bucket.sig) {
        return Err(r);
    }
    let types = prep.input.instance_types;
    let mut reasons = Vec::new();
    for pi in 0..prep.pools.len() {
        let (mut set, zones, cts) = match prep.seed_types(bucket, pi) {
            Ok(x) => x,
            Err(e) => {
                reasons.push(e);
                continue;
            }
        };
        let mut reserved = None;
        let room = headroom(prep, claims.iter().map(|c| &c.claim), pi);
        if let Err(reason) = apply_limits(prep, pi, room.as_ref(), &mut set) {
            reasons.push(reason);
            continue;
        }
        if room.is_some() {
            // Pessimistic: the claim may become its largest type.
            let mut largest = Resources::new();
            for t in set.iter() {
                largest.max_with(&types[t].capacity);
            }
            reserved = Some(largest);
        }
        let mut max_cap = Resources::new();
        for t in set.iter() {
            max_cap.max_with(&prep.capacity(pi, t));
        }
        let target = set.iter().next().unwrap_or(0);
        return Ok(FfdClaim {
            claim: Claim {
                pool: pi,
                target,
                types: set,
                zones,
                cts,
                load: Resources::new(),
                cap: max_cap.clone(),
                pods: Vec::new(),
                host: HostCounts::default(),
                reserved,
                sliced: false,
                joins: Vec::new(),
            },
            max_cap,
        });
    }
    if reasons.is_empty() {
        reasons.push("no NodePool is configured".into());
    }
    Err(reasons.join("; "))
}
