//! A lower bound on the cost of a batch, for judging packings.
//!
//! Linear relaxation: nodes are divisible, but each pod shape may only be assigned to instance types
//! that can host one such pod whole. Variables: `y[s][t]` pods of shape `s` on type `t`, and `x[t]`
//! (fractional) nodes of type `t`. Minimise `sum price[t] x[t]` subject to `sum_t y[s][t] = n[s]`
//! and, for every type and resource, `sum_s req[s][r] y[s][t] <= alloc[t][r] x[t]`. Topology
//! constraints are ignored, so the bound is valid (never above the true optimum) for any packing.
//!
//! Eligibility follows the scheduler's policy: bare-metal types are only eligible when some pod
//! fits nothing else (the scheduler never picks metal otherwise). Accelerated types stay eligible
//! for every pod, because any pod may fill spare room on a GPU node.
//!
//! Eligibility follows the scheduler's policy: bare-metal types are only eligible when some pod
//! fits nothing else (the scheduler never picks metal otherwise). Accelerated types stay eligible
//! for every pod, because any pod may fill spare room on a GPU node.
//!
//! Types dominated by another type (it hosts every shape the first does and offers at least as much
//! of every resource per dollar) are removed first; that cannot raise the optimum.

use std::collections::BTreeMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem};

use super::Input;
use super::pack::best_price;
use super::prepare::Prepared;
use crate::resources::{FIXED, Resources};

#[derive(Debug, Clone, PartialEq)]
pub struct LowerBound {
    /// USD per hour.
    pub cost: f64,
    /// Pods included (compatible with the first pool and fitting some type).
    pub pods: usize,
    pub shapes: usize,
    /// Instance types left after dominance pruning.
    pub types: usize,
}

/// The bound for the pods of `input` that the highest-weight pool can host.
pub fn lower_bound(input: &Input<'_>) -> Result<LowerBound, String> {
    let prep = Prepared::new(input);
    if prep.pools.is_empty() {
        return Err("no NodePool".into());
    }
    let pi = 0;
    let pv = &prep.pools[pi];
    // Candidate types: price of the cheapest allowed offering, allocatable after daemonsets.
    let mut types: Vec<(usize, f64, Resources)> = pv
        .types
        .iter()
        .filter_map(|t| best_price(&prep, t, pv.zones, pv.cts).map(|(p, _, _)| (t, p, prep.capacity(pi, t))))
        .filter(|(_, p, _)| *p > 0.0)
        .collect();
    // Shapes.
    let mut shapes: BTreeMap<Resources, (u64, Vec<usize>, Vec<usize>)> = BTreeMap::new();
    let mut metal_needed = false;
    let mut pods = 0usize;
    for (i, p) in input.pods.iter().enumerate() {
        let Ok(c) = &prep.sigs[prep.pod_sig[i]].compat[pi] else {
            continue;
        };
        let e = shapes
            .entry(p.requests.clone())
            .or_insert_with(|| (0, Vec::new(), Vec::new()));
        if e.0 == 0 {
            let fits: Vec<usize> = types
                .iter()
                .enumerate()
                .filter(|(_, (t, _, a))| c.types.contains(*t) && p.requests.fits_in(a))
                .map(|(k, _)| k)
                .collect();
            // The scheduler never puts a pod on a bare-metal type unless nothing else fits it; any
            // pod may fill spare room on an accelerated node, so those stay eligible.
            let it = input.instance_types;
            let plain: Vec<usize> = fits.iter().copied().filter(|k| !it[types[*k].0].bare_metal).collect();
            if plain.is_empty() {
                metal_needed = true;
            }
            e.1 = fits;
            e.2 = plain;
        }
        if !e.1.is_empty() {
            e.0 += 1;
            pods += 1;
        }
    }
    shapes.retain(|_, (n, _, _)| *n > 0);
    // If some pod only fits bare metal, a metal node exists and anything may share it.
    let shape_list: Vec<(Resources, u64, Vec<usize>)> = shapes
        .into_iter()
        .map(|(r, (n, all, plain))| (r, n, if metal_needed { all } else { plain }))
        .collect();
    // Resources any shape uses.
    let used: Vec<usize> = (0..FIXED)
        .filter(|r| shape_list.iter().any(|(s, _, _)| s.fixed()[*r] > 0))
        .collect();
    let scale = |r: usize| -> f64 {
        match r {
            0 => 1e-3,
            1 | 3 => 1.0 / (1u64 << 30) as f64,
            _ => 1.0,
        }
    };
    // Dominance pruning.
    let eligible_by_type: Vec<Vec<usize>> = (0..types.len())
        .map(|k| {
            (0..shape_list.len())
                .filter(|s| shape_list[*s].2.contains(&k))
                .collect()
        })
        .collect();
    let mut alive = vec![true; types.len()];
    for a in 0..types.len() {
        for b in 0..types.len() {
            if a == b || !alive[b] || !alive[a] {
                continue;
            }
            let (pa, ra) = (types[a].1, &types[a].2);
            let (pb, rb) = (types[b].1, &types[b].2);
            let per_dollar_ok = used
                .iter()
                .all(|r| ra.fixed()[*r] as f64 / pa <= rb.fixed()[*r] as f64 / pb);
            let strictly = used
                .iter()
                .any(|r| ra.fixed()[*r] as f64 / pa < rb.fixed()[*r] as f64 / pb)
                || b < a;
            let hosts = eligible_by_type[a].iter().all(|s| eligible_by_type[b].contains(s));
            if per_dollar_ok && strictly && hosts {
                alive[a] = false;
            }
        }
    }
    let keep: Vec<usize> = (0..types.len()).filter(|k| alive[*k]).collect();
    let remap: BTreeMap<usize, usize> = keep.iter().enumerate().map(|(new, old)| (*old, new)).collect();
    types = keep.iter().map(|k| types[*k].clone()).collect();

    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let x: Vec<_> = types
        .iter()
        .map(|(_, p, _)| lp.add_var(*p, (0.0, f64::INFINITY)))
        .collect();
    let mut rows: Vec<Vec<Vec<(microlp::Variable, f64)>>> = vec![vec![Vec::new(); used.len()]; types.len()];
    for (s, n, elig) in &shape_list {
        let mut vars = Vec::new();
        for old in elig {
            let Some(&t) = remap.get(old) else { continue };
            let y = lp.add_var(0.0, (0.0, f64::INFINITY));
            vars.push((y, 1.0));
            for (ri, r) in used.iter().enumerate() {
                let v = s.fixed()[*r] as f64 * scale(*r);
                if v > 0.0 {
                    rows[t][ri].push((y, v));
                }
            }
        }
        if vars.is_empty() {
            return Err("a shape lost every eligible type in pruning".into());
        }
        lp.add_constraint(vars.as_slice(), ComparisonOp::Eq, *n as f64);
    }
    for (t, per_r) in rows.into_iter().enumerate() {
        for (ri, mut terms) in per_r.into_iter().enumerate() {
            if terms.is_empty() {
                continue;
            }
            let r = used[ri];
            terms.push((x[t], -(types[t].2.fixed()[r] as f64 * scale(r))));
            lp.add_constraint(terms.as_slice(), ComparisonOp::Le, 0.0);
        }
    }
    let outcome = lp.solve().map_err(|e| format!("LP failed: {e}"))?;
    let sol = outcome.solution().ok_or("LP interrupted")?;
    if std::env::var_os("NODEWRIGHT_DEBUG_LP").is_some() {
        for (t, v) in x.iter().enumerate() {
            let n = sol.var_value(*v);
            if n > 1e-6 {
                eprintln!(
                    "lp: {} x {:.2} at {:.4}/h",
                    input.instance_types[types[t].0].name, n, types[t].1
                );
            }
        }
    }
    Ok(LowerBound {
        cost: sol.objective(),
        pods,
        shapes: shape_list.len(),
        types: types.len(),
    })
}
