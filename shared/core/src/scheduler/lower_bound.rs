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
use super::claim::best_price;
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
    /// Per shape, at most this many of its pods share one node (its own constraints), when
    /// whole-node caps are on (see `across`); empty when off.
    per_node: Vec<u64>,
}

/// A relaxation shape: requests, eligible type positions (all, and without bare metal), per-node
/// cap, and the group it stays apart for (usize::MAX: merged with its like).
type ShapeKey = (Resources, Vec<usize>, Vec<usize>, u64, usize);

/// At most this many capped pod groups keep their whole-node caps in a plan's bound.
const CAPPED_SHAPES_MAX: usize = 16;

/// A shape without whole-node caps.
const CAP_NONE: u64 = 0;

/// A shape's whole-node cap enters the program only when this small: larger caps barely tighten
/// the bound and each costs one row per eligible type.
const CAP_ROWS_MAX: u64 = 16;

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
        Relaxation::across(
            prep,
            &[pi],
            groups.map(|(r, n, t)| (r, n, vec![Some(t)], u64::MAX)),
            true,
            false,
        )
    }

    /// One relaxation over several pools: a node is a (pool, type) pair, priced at the type's
    /// cheapest offering the pool allows and sized by the pool's allocatable after daemonsets.
    /// `groups` lists each pod group as (requests, pods, per pool of `pools` the types its
    /// requirements allow there, or None when the pool cannot take it, and how many of the
    /// group's pods one node may hold by their own constraints). With `metal_last`, bare-metal
    /// types are eligible only when some pod fits nothing else (the packer's policy for single
    /// pods; a claim whose combined load fits only metal may still use it, so a bound that must
    /// hold for every plan passes false). With `whole_nodes`, a node of a type holds at most as
    /// many pods of a shape as fit it whole and as the shape's per-node limit allows (valid for
    /// any integral packing; it tightens the bound where few pods fill a node, e.g. GPUs).
    pub(super) fn across<'g>(
        prep: &Prepared,
        pools: &[usize],
        groups: impl Iterator<Item = (&'g Resources, u64, Vec<Option<&'g super::typeset::TypeSet>>, u64)>,
        metal_last: bool,
        whole_nodes: bool,
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
        // A per-node limit binds one group's pods only: capped groups never merge.
        let mut shapes: BTreeMap<ShapeKey, u64> = BTreeMap::new();
        let mut metal_needed = false;
        for (g, (req, n, allowed, per_node)) in groups.enumerate() {
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
            // Whole-node caps for the shapes where rounding to whole nodes matters most and
            // costs few rows: pods limited per node, and pods asking for extended resources
            // (GPUs: a node holds few). Other shapes stay purely fractional.
            let capped = whole_nodes && (per_node != u64::MAX || req.extended().values().any(|v| *v > 0));
            let per_node = if capped { per_node } else { CAP_NONE };
            let group = if per_node == CAP_NONE || per_node == u64::MAX {
                usize::MAX
            } else {
                g
            };
            *shapes.entry((req.clone(), fits, plain, per_node, group)).or_default() += n;
        }
        // If some pod only fits bare metal, a metal node exists and anything may share it.
        let per_node: Vec<u64> = if whole_nodes {
            // CAP_NONE (0) marks shapes without caps; u64::MAX a capped shape with no own limit.
            shapes.keys().map(|k| k.3).collect()
        } else {
            Vec::new()
        };
        let shapes: Vec<(Resources, u64, Vec<usize>)> = shapes
            .into_iter()
            .map(|((r, all, plain, _, _), n)| (r, n, if metal_needed || !metal_last { all } else { plain }))
            .collect();
        let used: Vec<usize> = (0..FIXED)
            .filter(|r| shapes.iter().any(|(s, _, _)| s.fixed()[*r] > 0))
            .collect();
        let mut relaxation = Relaxation {
            types,
            shapes,
            used,
            per_node,
        };
        relaxation.prune();
        relaxation
    }

    /// How many pods of shape `s` one node of type position `k` holds, when whole-node caps are
    /// on and the cap is small enough to enter the program as a row (None otherwise).
    fn cap(&self, s: usize, k: usize) -> Option<u64> {
        let limit = *self.per_node.get(s)?;
        if limit == CAP_NONE {
            return None;
        }
        let cap = limit.min(self.types[k].2.times_fits(&self.shapes[s].0));
        (cap <= CAP_ROWS_MAX).then_some(cap)
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
                // With whole-node caps, b must also hold at least as many pods per dollar of
                // every shape a holds (a per-node limit can make the smaller type cheaper).
                let caps_ok = per_dollar_ok
                    && hosts
                    && eligible_by_type[a]
                        .iter()
                        .all(|&s| match (self.cap(s, a), self.cap(s, b)) {
                            (_, None) => true,
                            (Some(ca), Some(cb)) => ca as f64 / pa <= cb as f64 / pb,
                            (None, Some(_)) => false,
                        });
                if per_dollar_ok && strictly && hosts && caps_ok {
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
        for (si, (s, n, elig)) in self.shapes.iter().enumerate() {
            if elig.is_empty() {
                return Err("a shape lost every eligible type in pruning".into());
            }
            let mut vars = Vec::new();
            for &t in elig {
                let y = lp.add_var(0.0, (0.0, f64::INFINITY));
                vars.push((y, 1.0));
                if let Some(cap) = self.cap(si, t) {
                    lp.add_constraint([(y, 1.0), (x[t], -(cap as f64))], ComparisonOp::Le, 0.0);
                }
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
/// requirements allow there, as the packer held it; exact (whole nodes) for small batches. With
/// whether it is exact; None when the program cannot be solved.
pub(super) fn claims_bound(prep: &Prepared, pods: &[usize]) -> Option<(f64, bool)> {
    // Each pod's bucket carries its per-node limit; pods of one bucket share requests and sig.
    let mut bucket_of = vec![usize::MAX; prep.input.pods.len()];
    for (b, bucket) in prep.buckets.iter().enumerate() {
        for &p in &bucket.pods {
            bucket_of[p] = b;
        }
    }
    // Pods of buckets with a per-node limit stay apart by bucket (the limit binds each bucket).
    let mut counts: BTreeMap<(usize, &Resources, u64, usize), u64> = BTreeMap::new();
    for &p in pods {
        let b = bucket_of[p];
        let per_node = prep.buckets.get(b).map_or(u64::MAX, |b| b.per_node.max(1));
        let apart = if per_node == u64::MAX { usize::MAX } else { b };
        *counts
            .entry((prep.base_sig[p], &prep.input.pods[p].requests, per_node, apart))
            .or_default() += 1;
    }
    let pools: Vec<usize> = (0..prep.pools.len()).collect();
    let groups = counts.iter().map(|((sig, req, per_node, _), n)| {
        let allowed = pools
            .iter()
            .map(|pi| prep.sigs[*sig].compat[*pi].as_ref().ok().map(|c| &c.types))
            .collect();
        (*req, *n, allowed, *per_node)
    });
    // Whole-node caps only while few groups carry them: each capped group is its own shape with
    // a row per eligible type, and a 20k-pod batch would spend seconds on them.
    let capped = counts
        .keys()
        .filter(|(_, req, per_node, _)| *per_node != u64::MAX || req.extended().values().any(|v| *v > 0))
        .count();
    let small: Vec<super::exact::Group> = counts
        .iter()
        .map(|((sig, req, per_node, _), n)| super::exact::Group {
            req,
            pods: *n,
            per_node: *per_node,
            pools: pools
                .iter()
                .map(|pi| {
                    let c = prep.sigs[*sig].compat[*pi].as_ref().ok()?;
                    Some((&c.types, c.zones, c.cts))
                })
                .collect(),
        })
        .collect();
    if let Some((exact, _)) = super::exact::optimum(prep, &small) {
        return Some((exact, true));
    }

    // Column generation's whole-node bound where the batch is small enough, else (or when
    // looser) the relaxation's. Limits only raise the optimum, so the bound holds with them; the
    // search (`pack::exact_plan`) shares the run.
    let patterns = super::patterns::bound(prep, &small);
    let relaxation = Relaxation::across(prep, &pools, groups, false, capped <= CAPPED_SHAPES_MAX);
    let relaxed = if relaxation.shapes.is_empty() {
        Some(0.0)
    } else {
        relaxation.solve().ok().map(|o| o.cost)
    };
    match (patterns, relaxed) {
        (Some(p), Some(r)) => Some((p.max(r), false)),
        (p, r) => p.or(r).map(|b| (b, false)),
    }
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
        *counts.entry((prep.base_sig[i], &p.requests)).or_default() += 1;
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
