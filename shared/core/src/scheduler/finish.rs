//! Turns packed claims into the plan: options right-sized and ordered, ids, labels, reasons,
//! the spread skew re-checked, and the plan's cost against its lower bound.

use super::claim::{Claim, best_price};
use super::prepare::{Prepared, ct_bit, cts_of};
use super::typeset::TypeSet;
use super::{Binding, ClaimPlan, InstanceOption, Options, Plan, Unschedulable};
use crate::catalogue::CapacityType;
use crate::labels;

/// Turns claims into the plan: options right-sized and ordered, ids, labels, reasons.
pub(super) fn finish(
    prep: &Prepared,
    mut claims: Vec<Claim>,
    mut bindings: Vec<(usize, usize)>,
    mut failed: Vec<(usize, String)>,
    opts: &Options,
) -> Plan {
    super::topology::spread::enforce(prep, &mut claims, &mut bindings, &mut failed);
    // Claims the exchange pass or the skew check emptied launch nothing.
    claims.retain(|c| !c.pods.is_empty());

    let pods = prep.input.pods;
    let types = prep.input.instance_types;
    let mut plan = Plan::default();
    let mut on_claims: Vec<usize> = Vec::new();
    for (p, n) in bindings {
        plan.bindings.push(Binding {
            pod: pods[p].uid.clone(),
            node: prep.nodes[n].name.clone(),
            in_flight: prep.nodes[n].in_flight,
        });
    }
    // Options order by price, then name (compared only on a tie in price).
    let cheapest_first = |a: &(f64, usize, CapacityType, usize), b: &(f64, usize, CapacityType, usize)| {
        a.0.total_cmp(&b.0).then_with(|| types[a.1].name.cmp(&types[b.1].name))
    };
    for c in claims {
        let pv = &prep.pools[c.pool];
        let mut options: Vec<(f64, usize, CapacityType, usize)> = Vec::new();
        for t in c.types.iter() {
            let mut need = c.load.clone();
            need.add(&pv.ds_overhead[t]);
            if !need.fits_in(pv.allocatable(types, t)) {
                continue;
            }
            if let Some(r) = &c.reserved
                && !types[t].capacity.fits_in(r)
                && !r.is_zero()
            {
                // Limits were counted with the seed's capacity: never plan a larger type.
                let fixed_ok = pv
                    .pool
                    .limits
                    .entries()
                    .iter()
                    .all(|(name, _)| types[t].capacity.get_named(name) <= r.get_named(name));
                if !fixed_ok {
                    continue;
                }
            }
            if let Some((price, ct, zi)) = best_price(prep, t, c.zones, c.cts) {
                options.push((price, t, ct, zi));
            }
        }
        // Accelerated and metal types only when the pods need them, nothing else fits, or the
        // pool's minValues needs them.
        if c.load.accelerators() == 0 {
            let plain: Vec<_> = options
                .iter()
                .filter(|o| !(types[o.1].accelerated || types[o.1].bare_metal))
                .cloned()
                .collect();
            let set_of = |options: &[(f64, usize, CapacityType, usize)]| {
                let mut set = TypeSet::empty(types.len());
                for o in options {
                    set.insert(o.1);
                }
                set
            };
            let no_gpu: Vec<_> = options.iter().filter(|o| !types[o.1].accelerated).cloned().collect();
            if !plain.is_empty() && prep.min_values_shortfall(c.pool, &set_of(&plain)).is_none() {
                options = plain;
            } else if !no_gpu.is_empty() && prep.min_values_shortfall(c.pool, &set_of(&no_gpu)).is_none() {
                options = no_gpu;
            }
        }
        // Spot offerings pricier than the cheapest on-demand option are dropped.
        if c.cts & ct_bit(CapacityType::Spot) != 0 && c.cts & ct_bit(CapacityType::OnDemand) != 0 {
            let min_od = options
                .iter()
                .filter_map(|(_, t, _, _)| best_price(prep, *t, c.zones, ct_bit(CapacityType::OnDemand)).map(|x| x.0))
                .min_by(f64::total_cmp);
            if let Some(min_od) = min_od {
                for o in options.iter_mut() {
                    if o.2 == CapacityType::Spot
                        && o.0 > min_od
                        && let Some((p, ct, zi)) = best_price(prep, o.1, c.zones, ct_bit(CapacityType::OnDemand))
                    {
                        *o = (p, o.1, ct, zi);
                    }
                }
            }
        }
        let kept = cheapest_options(prep, c.pool, options, opts.max_instance_types, cheapest_first);
        if kept.is_empty() {
            // Cannot happen while the target fits its own load; keep the pods visible if it does.
            for p in c.pods {
                failed.push((p, format!("pool {}: no instance type fits the claim", pv.pool.name)));
            }
            continue;
        }
        let cheapest = kept[0].1;
        on_claims.extend(&c.pods);
        let claim_id = format!("claim-{}", plan.claims.len() + 1);
        for &p in &c.pods {
            let relaxations = prep.relaxations(p, c.pool);
            if !relaxations.is_empty() {
                plan.relaxed.push(super::Relaxed {
                    pod: pods[p].uid.clone(),
                    name: pods[p].key(),
                    claim: claim_id.clone(),
                    relaxations,
                });
            }
        }
        let mut labels = (*pv.labels).clone();
        labels.retain(|k, _| k != labels::NODEPOOL);
        labels.insert(labels::NODEPOOL.into(), pv.pool.name.clone());
        plan.claims.push(ClaimPlan {
            id: claim_id,
            pool: pv.pool.name.clone(),
            price: kept[0].0,
            instance_types: kept
                .iter()
                .map(|(price, t, ct, zi)| InstanceOption {
                    name: types[*t].name.clone(),
                    capacity_type: *ct,
                    zone: prep.zones[*zi].clone(),
                    price: *price,
                })
                .collect(),
            capacity_types: cts_of(c.cts),
            zones: (0..prep.zones.len())
                .filter(|z| c.zones & (1 << z) != 0)
                .map(|z| prep.zones[z].clone())
                .collect(),
            pods: c.pods.iter().map(|p| pods[*p].uid.clone()).collect(),
            requests: c.load.clone(),
            daemonset_overhead: pv.ds_overhead[cheapest].clone(),
            labels,
        });
    }
    failed.sort_by_key(|(p, _)| *p);
    for (p, reason) in failed {
        plan.unschedulable.push(Unschedulable {
            pod: pods[p].uid.clone(),
            name: pods[p].key(),
            reason,
        });
    }
    if opts.report_bound && !plan.claims.is_empty() {
        plan.cost = super::lower_bound::claims_bound(prep, &on_claims)
            .map(|(bound, exact)| super::PlanCost::new(plan.total_price(), bound, exact));
    }
    plan
}

/// The cheapest `max` options in order, extended so that each minValues
/// requirement keeps enough distinct values. Without minValues the cheapest are selected before
/// they are sorted: a claim on a broad pool has hundreds of options, a large plan thousands of
/// claims.
fn cheapest_options(
    prep: &Prepared,
    pi: usize,
    mut options: Vec<(f64, usize, CapacityType, usize)>,
    max: usize,
    order: impl Fn(&(f64, usize, CapacityType, usize), &(f64, usize, CapacityType, usize)) -> std::cmp::Ordering + Copy,
) -> Vec<(f64, usize, CapacityType, usize)> {
    let min_values = prep.pools[pi].pool.requirements.iter().any(|r| r.min_values.is_some());
    if !min_values && max > 0 && options.len() > max {
        options.select_nth_unstable_by(max - 1, order);
        options.truncate(max);
    }
    options.sort_by(order);
    let mut kept: Vec<_> = options.iter().take(max).cloned().collect();
    let types = prep.input.instance_types;
    for r in prep.pools[pi]
        .pool
        .requirements
        .iter()
        .filter(|r| r.min_values.is_some())
    {
        let mut have: Vec<&str> = kept
            .iter()
            .flat_map(|o| super::prepare::type_values(&types[o.1], r))
            .collect();
        have.sort_unstable();
        have.dedup();
        for o in options.iter().skip(max) {
            if have.len() >= r.min_values.unwrap_or(0) as usize {
                break;
            }
            let new: Vec<&str> = super::prepare::type_values(&types[o.1], r)
                .into_iter()
                .filter(|v| !have.contains(v))
                .collect();
            if !new.is_empty() {
                have.extend(new);
                have.sort_unstable();
                have.dedup();
                kept.push(*o);
            }
        }
    }
    // Extensions for a second requirement may come before those for the first.
    kept.sort_by(order);
    kept
}
