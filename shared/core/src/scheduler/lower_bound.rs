//! A lower bound on the cost of a batch, for judging packings, and the relaxed optimum the packer
//! rounds for large batches.
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
//! Types dominated by another type (it hosts every shape the first does and offers at least as much
//! of every resource per dollar) are removed first; that cannot raise the optimum.
//!
//! For large batches the packer also uses the optimum itself: how many nodes of each type and
//! which pods on them (`Relaxation::solve`), rounded down to whole nodes.

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

/// The relaxation's optimum: cost, fractional nodes per instance type index, and per shape the
/// pods on each eligible position in the relaxation's type list.
pub(super) struct Optimum {
    pub cost: f64,
    pub nodes: Vec<(usize, f64)>,
    /// Per shape of the relaxation: (instance type index, pods).
    pub pods: Vec<Vec<(usize, f64)>>,
}

/// One pool's relaxation: candidate types, pod shapes and the resources any shape uses.
pub(super) struct Relaxation {
    /// (instance type index, price, allocatable after daemonsets).
    pub types: Vec<(usize, f64, Resources)>,
    /// (requests, pods, eligible positions in `types`).
    pub shapes: Vec<(Resources, u64, Vec<usize>)>,
    used: Vec<usize>,
}

/// Solver units: CPU in cores and memory/storage in GiB keep the coefficients well scaled.
fn scale(r: usize) -> f64 {
    match r {
        0 => 1e-3,
        1 | 3 => 1.0 / (1u64 << 30) as f64,
        _ => 1.0,
    }
}

impl Relaxation {
    /// `groups` lists each pod group as (requests, pods, the instance types its requirements allow).
    pub(super) fn new<'g>(
        prep: &Prepared,
        pi: usize,
        groups: impl Iterator<Item = (&'g Resources, u64, &'g super::typeset::TypeSet)>,
    ) -> Relaxation {
        Relaxation::across(prep, &[pi], groups.map(|(r, n, t)| (r, n, vec![Some(t)])), true)
    }

    /// One relaxation over several pools: a node is a (pool, type) pair, priced at the type's
    /// cheapest offering the pool allows and sized by the pool's allocatable after daemonsets.
    /// `groups` lists each pod group as (requests, pods, per pool of `pools` the types its
    /// requirements allow there, or None when the pool cannot take it). With `metal_last`,
    /// bare-metal types are eligible only when some pod fits nothing else (the packer's policy
    /// for single pods; a claim whose combined load fits only metal may still use it, so a
    /// bound that must hold for every plan passes false).
    pub(super) fn across<'g>(
        prep: &Prepared,
        pools: &[usize],
        groups: impl Iterator<Item = (&'g Resources, u64, Vec<Option<&'g super::typeset::TypeSet>>)>,
        metal_last: bool,
    ) -> Relaxation {
        let it = prep.input.instance_types;
        // (instance type index, price, allocatable after daemonsets), and which pool's position.
        let mut types: Vec<(usize, f64, Resources)> = Vec::new();
        let mut pool_of: Vec<usize> = Vec::new();
        for (k, &pi) in pools.iter().enumerate() {
            let pv = &prep.pools[pi];
            for t in pv.types.iter() {
                if let Some((p, _, _)) = best_price(prep, t, pv.zones, pv.cts)
                    && p > 0.0
                {
                    types.push((t, p, prep.capacity(pi, t)));
                    pool_of.push(k);
                }
            }
        }
        // Shapes: the same requests and the same eligible types make one shape.
        let mut shapes: BTreeMap<(Resources, Vec<usize>, Vec<usize>), u64> = BTreeMap::new();
        let mut metal_needed = false;
        for (req, n, allowed) in groups {
            if n == 0 {
                continue;
            }
            let fits: Vec<usize> = types
                .iter()
                .enumerate()
                .filter(|(k, (t, _, a))| allowed[pool_of[*k]].is_some_and(|s| s.contains(*t)) && req.fits_in(a))
                .map(|(k, _)| k)
                .collect();
            if fits.is_empty() {
                continue;
            }
            // The scheduler never puts a pod on a bare-metal type unless nothing else fits it; any
            // pod may fill spare room on an accelerated node, so those stay eligible.
            let plain: Vec<usize> = fits.iter().copied().filter(|k| !it[types[*k].0].bare_metal).collect();
            metal_needed |= plain.is_empty();
            *shapes.entry((req.clone(), fits, plain)).or_default() += n;
        }
        // If some pod only fits bare metal, a metal node exists and anything may share it.
        let shapes: Vec<(Resources, u64, Vec<usize>)> = shapes
            .into_iter()
            .map(|((r, all, plain), n)| (r, n, if metal_needed || !metal_last { all } else { plain }))
            .collect();
        let used: Vec<usize> = (0..FIXED)
            .filter(|r| shapes.iter().any(|(s, _, _)| s.fixed()[*r] > 0))
            .collect();
        let mut relaxation = Relaxation { types, shapes, used };
        relaxation.prune();
        relaxation
    }

    fn pods(&self) -> u64 {
        self.shapes.iter().map(|s| s.1).sum()
    }

    /// Removes dominated types and renumbers the shapes' eligible lists.
    fn prune(&mut self) {
        let (types, used) = (&self.types, &self.used);
        let eligible_by_type: Vec<Vec<usize>> = (0..types.len())
            .map(|k| {
                (0..self.shapes.len())
                    .filter(|s| self.shapes[*s].2.contains(&k))
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
        let remap: BTreeMap<usize, usize> = (0..types.len())
            .filter(|k| alive[*k])
            .enumerate()
            .map(|(new, old)| (old, new))
            .collect();
        self.types = remap.keys().map(|k| self.types[*k].clone()).collect();
        for shape in &mut self.shapes {
            shape.2 = shape.2.iter().filter_map(|k| remap.get(k).copied()).collect();
        }
    }

    /// The relaxation's optimum.
    pub(super) fn solve(&self) -> Result<Optimum, String> {
        let mut lp = Problem::new(OptimizationDirection::Minimize);
        let x: Vec<_> = self
            .types
            .iter()
            .map(|(_, p, _)| lp.add_var(*p, (0.0, f64::INFINITY)))
            .collect();
        let mut rows: Vec<Vec<Vec<(microlp::Variable, f64)>>> =
            vec![vec![Vec::new(); self.used.len()]; self.types.len()];
        let mut ys = Vec::with_capacity(self.shapes.len());
        for (s, n, elig) in &self.shapes {
            if elig.is_empty() {
                return Err("a shape lost every eligible type in pruning".into());
            }
            let mut vars = Vec::new();
            for &t in elig {
                let y = lp.add_var(0.0, (0.0, f64::INFINITY));
                vars.push((y, 1.0));
                for (ri, r) in self.used.iter().enumerate() {
                    let v = s.fixed()[*r] as f64 * scale(*r);
                    if v > 0.0 {
                        rows[t][ri].push((y, v));
                    }
                }
            }
            lp.add_constraint(vars.as_slice(), ComparisonOp::Eq, *n as f64);
            ys.push(vars);
        }
        for (t, per_r) in rows.into_iter().enumerate() {
            for (ri, mut terms) in per_r.into_iter().enumerate() {
                if terms.is_empty() {
                    continue;
                }
                let r = self.used[ri];
                terms.push((x[t], -(self.types[t].2.fixed()[r] as f64 * scale(r))));
                lp.add_constraint(terms.as_slice(), ComparisonOp::Le, 0.0);
            }
        }
        let outcome = lp.solve().map_err(|e| format!("LP failed: {e}"))?;
        let sol = outcome.solution().ok_or("LP interrupted")?;
        Ok(Optimum {
            cost: sol.objective(),
            nodes: self
                .types
                .iter()
                .zip(&x)
                .map(|((t, _, _), v)| (*t, sol.var_value(*v)))
                .collect(),
            pods: self
                .shapes
                .iter()
                .zip(&ys)
                .map(|((_, _, elig), vars)| {
                    elig.iter()
                        .zip(vars)
                        .map(|(t, (v, _))| (self.types[*t].0, sol.var_value(*v)))
                        .collect()
                })
                .collect(),
        })
    }
}

/// The least the pods placed on new claims (`pods`, indices into the input) could cost on new
/// nodes: one relaxation over every pool, each pod held in each pool to the instance types its
/// requirements allow there, as the packer held it. None when the program cannot be solved.
pub(super) fn claims_bound(prep: &Prepared, pods: &[usize]) -> Option<f64> {
    let mut counts: BTreeMap<(usize, &Resources), u64> = BTreeMap::new();
    for &p in pods {
        *counts.entry((prep.pod_sig[p], &prep.input.pods[p].requests)).or_default() += 1;
    }
    let pools: Vec<usize> = (0..prep.pools.len()).collect();
    let groups = counts.iter().map(|((sig, req), n)| {
        let allowed = pools
            .iter()
            .map(|pi| prep.sigs[*sig].compat[*pi].as_ref().ok().map(|c| &c.types))
            .collect();
        (*req, *n, allowed)
    });
    let relaxation = Relaxation::across(prep, &pools, groups, false);
    if relaxation.shapes.is_empty() {
        return Some(0.0);
    }
    relaxation.solve().ok().map(|o| o.cost)
}

/// The bound for the pods of `input` that the highest-weight pool can host.
pub fn lower_bound(input: &Input<'_>) -> Result<LowerBound, String> {
    let prep = Prepared::new(input);
    if prep.pools.is_empty() {
        return Err("no NodePool".into());
    }
    let pi = 0;
    // Pods with the same signature and requests are one group.
    let mut counts: BTreeMap<(usize, &Resources), u64> = BTreeMap::new();
    for (i, p) in input.pods.iter().enumerate() {
        *counts.entry((prep.pod_sig[i], &p.requests)).or_default() += 1;
    }
    let groups = counts.iter().filter_map(|((sig, req), n)| {
        let c = prep.sigs[*sig].compat[pi].as_ref().ok()?;
        Some((*req, *n, &c.types))
    });
    let relaxation = Relaxation::new(&prep, pi, groups);
    let optimum = relaxation.solve()?;
    if std::env::var_os("NODEWRIGHT_DEBUG_LP").is_some() {
        for (t, n) in optimum.nodes.iter().filter(|(_, n)| *n > 1e-6) {
            eprintln!("lp: {} x {n:.2}", input.instance_types[*t].name);
        }
    }
    Ok(LowerBound {
        cost: optimum.cost,
        pods: relaxation.pods() as usize,
        shapes: relaxation.shapes.len(),
        types: relaxation.types.len(),
    })
}
