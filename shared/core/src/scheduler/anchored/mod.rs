//! Anchored nodes planned as one linear programme over node patterns (issue #23).
//!
//! A hostname anti-affinity group (or any hostname constraint its own pods carry with limit 1)
//! forces one node per pod: those *anchors* fix how many nodes a claim group has, and what is
//! left to choose is what shares each anchor's node. Node by node that choice strands memory on
//! CPU-full nodes and CPU on memory-full ones (the diverse mix sat 4-5 % above its bound). Here
//! it is made for all anchored nodes of a claim group (pool, zones, capacity types) at once:
//!
//! - a *pattern* is one node: an anchor class (request and signature), a type, and how many pods
//!   of each other request ("filler shape") sit beside the anchor;
//! - the master covers every anchor and every filler at least cost, fillers left over going to a
//!   *reservoir* of large nodes priced by the relaxation (capacity of fractional nodes of the
//!   pool's undominated types covering their CPU, memory and pods); fillers under a hostname
//!   limit of their own may not pile onto the reservoir and escape it at the price of a node of
//!   their own;
//! - columns come from an exact pricing (`grid`) with the master's prices as values;
//! - the optimum is rounded down per pattern, the anchors left take their class's pattern the
//!   optimum used most, and each pattern becomes pods of concrete buckets whose hostname counts
//!   and types allow them; the leftovers fill balanced nodes of the reservoir type worth most at
//!   the master's resource prices.
//!
//! The group keeps the result only if it is cheaper than what the packer made. Research
//! prototype and figures: `scripts/research/anchor-patterns.py`, docs/scheduler.md.

mod grid;

use std::collections::{BTreeMap, HashMap};

use microlp::{ComparisonOp, OptimizationDirection, Problem, Variable};

use super::claim::{Claim, new_claim};
use super::exchange::{cheapest_fit, eligible};
use super::pack::Lookups;
use super::prepare::{HostCounts, Prepared};
use crate::resources::{FIXED, Resources};
use grid::{Grid, Item};

/// Groups with fewer anchored claims are left as packed (the exchange pass serves them).
const MIN_ANCHORED: usize = 64;
/// Node types a pattern may use per anchor class: the cheapest that hold the anchor.
const SIZES: usize = 4;
/// Rounds of column generation at most.
const ROUNDS: usize = 60;
/// Column generation stops once the master is within this share of Farley's bound.
const CONVERGED: f64 = 0.002;
/// Filler shapes at most (the grid's work grows with them).
const MAX_SHAPES: usize = 96;
/// Anchor classes at most (the master's columns; each round adds up to one row per class).
const MAX_CLASSES: usize = 96;
const GIB: f64 = (1u64 << 30) as f64;

/// Pods of one request: the (bucket, pods) holding them and how many.
struct Shape {
    req: Resources,
    held: Vec<(usize, Vec<usize>)>,
    supply: u64,
    /// Whether any of its pods carries a hostname limit (it may not pile onto large nodes).
    limited: bool,
}

/// Anchors of one request and signature: their claims, and the types a pattern may use.
struct Class {
    req: Resources,
    claims: Vec<usize>,
    /// (type, price, capacity left beside the anchor).
    sizes: Vec<(usize, f64, Resources)>,
}

/// A node pattern: class, index into its sizes, count of each shape.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Pattern {
    class: usize,
    size: usize,
    counts: Vec<u64>,
}

pub(super) fn run(prep: &Prepared, look: &Lookups, claims: &mut Vec<Claim>) {
    let mut pod_bucket = vec![usize::MAX; prep.input.pods.len()];
    for (b, bucket) in prep.buckets.iter().enumerate() {
        for p in &bucket.pods[..bucket.next] {
            pod_bucket[*p] = b;
        }
    }
    let mut groups: BTreeMap<(usize, u64, u8), Vec<usize>> = BTreeMap::new();
    for (i, c) in claims.iter().enumerate() {
        if !c.pods.is_empty() && eligible(prep, c) {
            groups.entry((c.pool, c.zones, c.cts)).or_default().push(i);
        }
    }
    for ((pool, zones, cts), members) in groups {
        if members.len() < MIN_ANCHORED {
            continue;
        }
        if members
            .iter()
            .any(|c| claims[*c].pods.iter().any(|p| pod_bucket[*p] == usize::MAX))
        {
            continue;
        }
        let Some(anchor) = anchor_constraint(prep, claims, &members, &pod_bucket) else {
            continue;
        };
        let old: Option<f64> = members.iter().map(|c| claim_price(prep, look, &claims[*c])).sum();
        let Some(old) = old else { continue };
        let snapshot: Vec<Claim> = members.iter().map(|c| claims[*c].clone()).collect();
        let before = claims.len();
        let group = Group {
            prep,
            look,
            pool,
            zones,
            cts,
            anchor,
            budget: old,
        };
        let new = group.plan(claims, &members, &pod_bucket);
        if new.is_some_and(|n| n < old - 1e-9) {
            continue;
        }
        claims.truncate(before);
        for (c, saved) in members.iter().zip(snapshot) {
            claims[*c] = saved;
        }
    }
    // Claims whose pods all went elsewhere (indices above stay valid until here).
    claims.retain(|c| !c.pods.is_empty());
}

/// Whether bucket `b` holds anchors of constraint `c`: it counts for it and carries it with a
/// limit of at most one per node.
fn anchors_of(prep: &Prepared, b: usize, c: u16) -> bool {
    let bucket = &prep.buckets[b];
    bucket.members.contains(&c) && bucket.carries.iter().any(|(x, l)| *x == c && *l <= 1)
}

/// The hostname constraint with the most anchors in the group, if it has enough to matter.
fn anchor_constraint(prep: &Prepared, claims: &[Claim], members: &[usize], pod_bucket: &[usize]) -> Option<u16> {
    let mut count: BTreeMap<u16, usize> = BTreeMap::new();
    for &c in members {
        for p in &claims[c].pods {
            let bucket = &prep.buckets[pod_bucket[*p]];
            for (x, l) in &bucket.carries {
                if *l <= 1 && bucket.members.contains(x) {
                    *count.entry(*x).or_default() += 1;
                }
            }
        }
    }
    let (c, n) = count.into_iter().max_by_key(|(c, n)| (*n, std::cmp::Reverse(*c)))?;
    (n >= MIN_ANCHORED).then_some(c)
}

/// What a claim costs as `finish` will size it (None: no type holds it).
fn claim_price(prep: &Prepared, look: &Lookups, c: &Claim) -> Option<f64> {
    if c.pods.is_empty() {
        return Some(0.0);
    }
    cheapest_fit(prep, look, c.pool, &c.types, &c.load, c.zones, c.cts).map(|(p, _)| p)
}

struct Group<'a, 'p> {
    prep: &'a Prepared<'p>,
    look: &'a Lookups,
    pool: usize,
    zones: u64,
    cts: u8,
    anchor: u16,
    /// What the packer's claims of the group cost.
    budget: f64,
}

/// What the master is built from: the anchor classes, the filler shapes, the reservoir's types
/// ((type, price, [vCPU, GiB, pods])) and each shape's escape price (a node of its own).
#[derive(Clone, Copy)]
struct Model<'m> {
    classes: &'m [Class],
    shapes: &'m [Shape],
    reservoir: &'m [(usize, f64, [f64; 3])],
    escape: &'m [f64],
}

/// The master's solution: resource prices (per vCPU, GiB, pod) and each pattern's count.
struct Master {
    resource_prices: [f64; 3],
    x: Vec<f64>,
}

impl Group<'_, '_> {
    fn plan(&self, claims: &mut Vec<Claim>, members: &[usize], pod_bucket: &[usize]) -> Option<f64> {
        let prep = self.prep;
        let types = prep.input.instance_types;
        // Strip every claim to its anchor; everything else becomes filler shapes.
        let mut shapes: Vec<Shape> = Vec::new();
        let mut shape_of: HashMap<[u64; FIXED], usize> = HashMap::new();
        let mut class_of: BTreeMap<([u64; FIXED], usize), usize> = BTreeMap::new();
        let mut classes: Vec<Class> = Vec::new();
        for &c in members {
            let pods = std::mem::take(&mut claims[c].pods);
            let claim = &mut claims[c];
            claim.load = Resources::new();
            claim.host = HostCounts::default();
            claim.types = prep.pools[self.pool].types.clone();
            claim.joins.clear();
            let mut anchored = false;
            for p in pods {
                let b = pod_bucket[p];
                let bucket = &prep.buckets[b];
                if !bucket.req.extended().is_empty() {
                    return None;
                }
                if !anchored && anchors_of(prep, b, self.anchor) {
                    anchored = true;
                    join(prep, claim, b, p);
                    let key = (*bucket.req.fixed(), bucket.sig);
                    let next = classes.len();
                    let k = *class_of.entry(key).or_insert(next);
                    if k == next {
                        classes.push(Class {
                            req: bucket.req.clone(),
                            claims: Vec::new(),
                            sizes: Vec::new(),
                        });
                    }
                    classes[k].claims.push(c);
                    continue;
                }
                let next = shapes.len();
                let s = *shape_of.entry(*bucket.req.fixed()).or_insert(next);
                if s == next {
                    shapes.push(Shape {
                        req: bucket.req.clone(),
                        held: Vec::new(),
                        supply: 0,
                        limited: false,
                    });
                }
                let shape = &mut shapes[s];
                shape.supply += 1;
                shape.limited |= !bucket.carries.is_empty();
                match shape.held.iter_mut().find(|(x, _)| *x == b) {
                    Some((_, v)) => v.push(p),
                    None => shape.held.push((b, vec![p])),
                }
            }
        }
        if shapes.len() > MAX_SHAPES || classes.len() > MAX_CLASSES || classes.is_empty() {
            return None;
        }
        // Each class's sizes: the cheapest types its anchor may use that hold it, each kept
        // only if no cheaper one kept has as much room of every kind (it could not do better).
        for class in &mut classes {
            let claim = &claims[class.claims[0]];
            for &(_, t) in self.look.by_price(prep, self.pool) {
                if class.sizes.len() >= SIZES {
                    break;
                }
                if !claim.types.contains(t) || types[t].accelerated || types[t].bare_metal {
                    continue;
                }
                let cap = prep.capacity(self.pool, t);
                let Some((price, _, _)) = prep.best_offer(t, self.zones, self.cts) else {
                    continue;
                };
                if !class.req.fits_in(&cap) {
                    continue;
                }
                let mut room = cap;
                room.saturating_sub(&class.req);
                if class.sizes.iter().any(|(_, p, r)| *p <= price && room.fits_in(r)) {
                    continue;
                }
                class.sizes.push((t, price, room));
            }
            if class.sizes.is_empty() {
                return None;
            }
        }
        let reservoir = self.reservoir_types();
        if reservoir.is_empty() {
            return None;
        }
        let escape: Vec<f64> = shapes.iter().map(|s| self.escape_price(&s.req)).collect();
        if escape.iter().any(|e| !e.is_finite()) {
            return None;
        }
        let model = Model {
            classes: &classes,
            shapes: &shapes,
            reservoir: &reservoir,
            escape: &escape,
        };
        let (patterns, master) = self.generate(&model)?;
        let chosen = self.round(&classes, &shapes, &patterns, &master);
        // Realise the patterns as pods of concrete buckets.
        for (c, p) in chosen {
            let pattern = &patterns[p];
            let (t, _, _) = classes[pattern.class].sizes[pattern.size];
            let claim = &mut claims[c];
            claim.target = t;
            claim.cap = prep.capacity(self.pool, t);
            for (s, n) in pattern.counts.iter().enumerate() {
                for _ in 0..*n {
                    let shape = &mut shapes[s];
                    let found = shape.held.iter().position(|(b, pods)| {
                        let bucket = &prep.buckets[*b];
                        !pods.is_empty()
                            && claim.host.max_add(bucket, 1) == 1
                            && prep.sigs[bucket.sig].compat[self.pool]
                                .as_ref()
                                .is_ok_and(|x| x.types.contains(t))
                            && bucket.req.fits_in_with(&claim.load, &claim.cap)
                    });
                    let Some(i) = found else { break };
                    let (b, pods) = &mut shape.held[i];
                    let b = *b;
                    let Some(pod) = pods.pop() else { break };
                    shape.supply -= 1;
                    join(prep, claim, b, pod);
                }
            }
        }
        let best = reservoir
            .iter()
            .max_by(|a, b| {
                let worth =
                    |r: &(usize, f64, [f64; 3])| (0..3).map(|i| r.2[i] * master.resource_prices[i]).sum::<f64>() / r.1;
                worth(a).total_cmp(&worth(b)).then(b.2[0].total_cmp(&a.2[0]))
            })
            .map(|r| r.0)?;
        let opened = self.fill_reservoir(claims, &mut shapes, best)?;
        let mut cost = 0.0;
        for c in members.iter().copied().chain(opened) {
            cost += claim_price(prep, self.look, &claims[c])?;
        }
        Some(cost)
    }

    /// The pool's non-accelerated, non-metal types offered here that no other type beats on
    /// CPU, memory and pods per dollar all at once: (type, price, [vCPU, GiB, pods]).
    fn reservoir_types(&self) -> Vec<(usize, f64, [f64; 3])> {
        let prep = self.prep;
        let types = prep.input.instance_types;
        let mut all: Vec<(usize, f64, [f64; 3])> = self
            .look
            .by_price(prep, self.pool)
            .iter()
            .filter(|(_, t)| !types[*t].accelerated && !types[*t].bare_metal)
            .filter_map(|&(price, t)| {
                prep.best_offer(t, self.zones, self.cts)?;
                let cap = prep.capacity(self.pool, t);
                let v = [
                    cap.cpu_milli() as f64 / 1000.0,
                    cap.memory() as f64 / GIB,
                    cap.get(crate::resources::Resource::Pods) as f64,
                ];
                (price > 0.0 && v.iter().all(|x| *x > 0.0)).then_some((t, price, v))
            })
            .collect();
        // Largest first, so that among types alike per dollar the largest stays.
        all.sort_by(|a, b| b.2[0].total_cmp(&a.2[0]).then(a.0.cmp(&b.0)));
        let mut kept: Vec<(usize, f64, [f64; 3])> = Vec::new();
        for r in all {
            let dominated = kept
                .iter()
                .any(|k| (0..3).all(|i| k.2[i] / k.1 >= r.2[i] / r.1 * (1.0 - 1e-9)));
            if !dominated {
                kept.push(r);
            }
        }
        kept
    }

    /// A node of its own for one pod: the cheapest type that holds it.
    fn escape_price(&self, req: &Resources) -> f64 {
        let prep = self.prep;
        let types = prep.input.instance_types;
        self.look
            .by_price(prep, self.pool)
            .iter()
            .find(|(_, t)| {
                !types[*t].accelerated
                    && !types[*t].bare_metal
                    && prep.best_offer(*t, self.zones, self.cts).is_some()
                    && req.fits_in(&prep.capacity(self.pool, *t))
            })
            .map_or(f64::INFINITY, |(p, _)| *p)
    }

    /// Column generation: the patterns found and the master's optimum over them.
    fn generate(&self, model: &Model) -> Option<(Vec<Pattern>, Master)> {
        let Model {
            classes,
            shapes,
            reservoir,
            ..
        } = *model;
        let mut patterns: Vec<Pattern> = (0..classes.len())
            .map(|class| Pattern {
                class,
                size: 0,
                counts: vec![0; shapes.len()],
            })
            .collect();
        let max_cpu = classes.iter().flat_map(|c| &c.sizes).map(|s| s.2.cpu_milli()).max()?;
        let max_memory = classes.iter().flat_map(|c| &c.sizes).map(|s| s.2.memory()).max()?;
        // A start near the answer: each class and size filled with fillers valued at what the
        // reservoir would charge for them, resources priced in proportion to the fillers' need.
        let start = start_prices(shapes, reservoir);
        let items: Vec<Item> = shapes
            .iter()
            .map(|s| Item {
                cpu: s.req.cpu_milli(),
                memory: s.req.memory(),
                value: resource_vector(&s.req).iter().zip(&start).map(|(a, b)| a * b).sum(),
                copies: if s.limited { s.supply.min(1) } else { s.supply },
            })
            .collect();
        let grid = Grid::build(&items, max_cpu, max_memory);
        for (k, class) in classes.iter().enumerate() {
            for (i, (_, _, room)) in class.sizes.iter().enumerate() {
                let counts = grid.counts(room.cpu_milli(), room.memory(), shapes.len());
                if load_of(shapes, &counts).fits_in(room) && counts.iter().any(|n| *n > 0) {
                    patterns.push(Pattern {
                        class: k,
                        size: i,
                        counts,
                    });
                }
            }
        }
        let mut seen: std::collections::HashSet<Pattern> = patterns.iter().cloned().collect();
        patterns = {
            let mut unique = std::collections::HashSet::new();
            patterns.into_iter().filter(|p| unique.insert(p.clone())).collect()
        };
        let mut dual = Self::dual(model, &patterns)?;
        for _ in 0..ROUNDS {
            let class_value: Vec<f64> = dual.ya.iter().map(|v| dual.solution.var_value(*v)).collect();
            let shape_value: Vec<f64> = dual.yf.iter().map(|v| dual.solution.var_value(*v).max(0.0)).collect();
            let items: Vec<Item> = shapes
                .iter()
                .zip(&shape_value)
                .map(|(s, v)| Item {
                    cpu: s.req.cpu_milli(),
                    memory: s.req.memory(),
                    value: *v,
                    copies: if s.limited { s.supply.min(1) } else { s.supply },
                })
                .collect();
            let grid = Grid::build(&items, max_cpu, max_memory);
            // Farley's bound: the master's optimum less, per anchor, the most any pattern of
            // its class could still save; close enough and the columns are enough.
            let objective = dual.solution.objective();
            let mut lower = objective;
            for (k, class) in classes.iter().enumerate() {
                let least = class
                    .sizes
                    .iter()
                    .map(|(_, price, room)| price - class_value[k] - grid.best(room.cpu_milli(), room.memory()))
                    .fold(0.0f64, f64::min);
                lower += least * class.claims.len() as f64;
            }
            if objective - lower <= CONVERGED * objective {
                break;
            }
            // No plan of this model can beat the packer's: not worth going on.
            if lower >= self.budget {
                return None;
            }
            // Per class, the size whose best pattern saves most (one row per class and round:
            // the master's time grows with its rows).
            let mut added = 0;
            for (k, class) in classes.iter().enumerate() {
                let mut best: Option<(f64, usize)> = None;
                for (i, (_, price, room)) in class.sizes.iter().enumerate() {
                    let reduced = price - class_value[k] - grid.best(room.cpu_milli(), room.memory());
                    if reduced < -1e-7 * price.max(1.0) && best.is_none_or(|(r, _)| reduced < r) {
                        best = Some((reduced, i));
                    }
                }
                let Some((_, i)) = best else { continue };
                let room = &class.sizes[i].2;
                let counts = grid.counts(room.cpu_milli(), room.memory(), shapes.len());
                if load_of(shapes, &counts).fits_in(room) {
                    let p = Pattern {
                        class: k,
                        size: i,
                        counts,
                    };
                    if seen.insert(p.clone()) {
                        patterns.push(p);
                        added += 1;
                    }
                }
            }
            if added == 0 {
                break;
            }
            for p in &patterns[patterns.len() - added..] {
                let terms = row(&dual.ya, &dual.yf, p);
                let price = classes[p.class].sizes[p.size].1;
                dual.solution = dual
                    .solution
                    .add_constraint(terms.as_slice(), ComparisonOp::Le, price)
                    .ok()?
                    .into_solution()
                    .ok()?;
            }
        }
        let master = Self::primal(model, &patterns)?;
        Some((patterns, master))
    }

    /// The master's dual over the first patterns, solved: its variables are the value of each
    /// anchor class and of each filler shape, then the three resource prices. Later patterns are
    /// added as rows of the solved programme (`Solution::add_constraint`), which the solver
    /// re-optimises from where it stood.
    fn dual(model: &Model, patterns: &[Pattern]) -> Option<Dual> {
        let Model {
            classes,
            shapes,
            reservoir,
            escape,
        } = *model;
        let mut lp = Problem::new(OptimizationDirection::Maximize);
        let ya: Vec<Variable> = classes
            .iter()
            .map(|c| lp.add_var(c.claims.len() as f64, (0.0, f64::INFINITY)))
            .collect();
        let yf: Vec<Variable> = shapes
            .iter()
            .zip(escape)
            .map(|(s, e)| lp.add_var(s.supply as f64, (0.0, *e)))
            .collect();
        let mu: Vec<Variable> = (0..3).map(|_| lp.add_var(0.0, (0.0, f64::INFINITY))).collect();
        for p in patterns {
            lp.add_constraint(
                row(&ya, &yf, p).as_slice(),
                ComparisonOp::Le,
                classes[p.class].sizes[p.size].1,
            );
        }
        for (s, shape) in shapes.iter().enumerate() {
            if shape.limited {
                continue;
            }
            let r = resource_vector(&shape.req);
            let terms = [(yf[s], 1.0), (mu[0], -r[0]), (mu[1], -r[1]), (mu[2], -r[2])];
            lp.add_constraint(terms.as_slice(), ComparisonOp::Le, 0.0);
        }
        for (_, price, cap) in reservoir {
            let terms = [(mu[0], cap[0]), (mu[1], cap[1]), (mu[2], cap[2])];
            lp.add_constraint(terms.as_slice(), ComparisonOp::Le, *price);
        }
        let solution = lp.solve().ok()?.into_solution().ok()?;
        Some(Dual { solution, ya, yf })
    }

    /// The master itself: each pattern's count and the reservoir's resource prices (read back
    /// as the value per dollar of the reservoir types the optimum uses).
    fn primal(model: &Model, patterns: &[Pattern]) -> Option<Master> {
        let Model {
            classes,
            shapes,
            reservoir,
            escape,
        } = *model;
        let mut lp = Problem::new(OptimizationDirection::Minimize);
        let x: Vec<Variable> = patterns
            .iter()
            .map(|p| lp.add_var(classes[p.class].sizes[p.size].1, (0.0, f64::INFINITY)))
            .collect();
        let z: Vec<Variable> = shapes
            .iter()
            .zip(escape)
            .map(|(s, e)| lp.add_var(if s.limited { *e } else { 0.0 }, (0.0, f64::INFINITY)))
            .collect();
        let w: Vec<Variable> = reservoir
            .iter()
            .map(|r| lp.add_var(r.1, (0.0, f64::INFINITY)))
            .collect();
        for (k, class) in classes.iter().enumerate() {
            let terms: Vec<(Variable, f64)> = patterns
                .iter()
                .zip(&x)
                .filter(|(p, _)| p.class == k)
                .map(|(_, v)| (*v, 1.0))
                .collect();
            lp.add_constraint(terms.as_slice(), ComparisonOp::Ge, class.claims.len() as f64);
        }
        for (s, shape) in shapes.iter().enumerate() {
            let mut terms: Vec<(Variable, f64)> = patterns
                .iter()
                .zip(&x)
                .filter(|(p, _)| p.counts[s] > 0)
                .map(|(p, v)| (*v, p.counts[s] as f64))
                .collect();
            terms.push((z[s], 1.0));
            lp.add_constraint(terms.as_slice(), ComparisonOp::Ge, shape.supply as f64);
        }
        for r in 0..3 {
            let mut terms: Vec<(Variable, f64)> = reservoir.iter().zip(&w).map(|(t, v)| (*v, t.2[r])).collect();
            for (s, shape) in shapes.iter().enumerate() {
                if !shape.limited {
                    terms.push((z[s], -resource_vector(&shape.req)[r]));
                }
            }
            lp.add_constraint(terms.as_slice(), ComparisonOp::Ge, 0.0);
        }
        let solved = lp.solve().ok()?;
        let sol = solved.solution()?;
        // The reservoir's prices: for the type the optimum uses most, its price spread over its
        // resources in proportion to what the reservoir needs of each.
        let used = reservoir
            .iter()
            .zip(&w)
            .max_by(|a, b| sol.var_value(*a.1).total_cmp(&sol.var_value(*b.1)))?;
        let mut need = [0.0f64; 3];
        for (s, shape) in shapes.iter().enumerate() {
            if !shape.limited {
                let r = resource_vector(&shape.req);
                for i in 0..3 {
                    need[i] += r[i] * sol.var_value(z[s]).max(0.0);
                }
            }
        }
        let shares: Vec<f64> = (0..3).map(|i| need[i] / used.0.2[i]).collect();
        let total: f64 = shares.iter().sum::<f64>().max(1e-12);
        let mut resource_prices = [0.0; 3];
        for i in 0..3 {
            resource_prices[i] = used.0.1 * shares[i] / total / used.0.2[i];
        }
        Some(Master {
            resource_prices,
            x: x.iter().map(|v| sol.var_value(*v).max(0.0)).collect(),
        })
    }

    /// Each anchored claim's pattern: every pattern's count rounded down, then each anchor
    /// left takes its class's pattern with the largest remainder that the supply still holds.
    fn round(&self, classes: &[Class], shapes: &[Shape], patterns: &[Pattern], master: &Master) -> Vec<(usize, usize)> {
        let mut supply: Vec<u64> = shapes.iter().map(|s| s.supply).collect();
        let mut out = Vec::new();
        let mut next: Vec<usize> = vec![0; classes.len()];
        let mut order: Vec<usize> = (0..patterns.len()).collect();
        order.sort_by(|a, b| master.x[*b].total_cmp(&master.x[*a]).then(a.cmp(b)));
        for &p in &order {
            let pattern = &patterns[p];
            let class = &classes[pattern.class];
            let mut n = (master.x[p] + 1e-9).floor() as usize;
            while n > 0 && next[pattern.class] < class.claims.len() {
                if pattern.counts.iter().zip(&supply).any(|(c, s)| c > s) {
                    break;
                }
                for (s, c) in supply.iter_mut().zip(&pattern.counts) {
                    *s -= c;
                }
                out.push((class.claims[next[pattern.class]], p));
                next[pattern.class] += 1;
                n -= 1;
            }
        }
        // The anchors left: by remainder, then the anchor's smallest pattern (always fits).
        for (k, class) in classes.iter().enumerate() {
            while next[k] < class.claims.len() {
                let best = order
                    .iter()
                    .copied()
                    .filter(|p| patterns[*p].class == k)
                    .filter(|p| patterns[*p].counts.iter().zip(&supply).all(|(c, s)| c <= s))
                    .max_by(|a, b| {
                        let frac = |p: usize| master.x[p] - master.x[p].floor();
                        frac(*a).total_cmp(&frac(*b)).then(b.cmp(a))
                    })
                    .unwrap_or(k);
                for (s, c) in supply.iter_mut().zip(&patterns[best].counts) {
                    *s = s.saturating_sub(*c);
                }
                out.push((class.claims[next[k]], best));
                next[k] += 1;
            }
        }
        out
    }

    /// The fillers left, onto new claims of type `t`, each kept balanced: a claim that has used
    /// more of its CPU than of its memory takes the most memory-heavy pod left that fits, and the
    /// other way round. Returns the claims opened.
    fn fill_reservoir(&self, claims: &mut Vec<Claim>, shapes: &mut [Shape], t: usize) -> Option<Vec<usize>> {
        let prep = self.prep;
        let cap = prep.capacity(self.pool, t);
        let lean = |q: &Resources| {
            q.memory() as f64 / cap.memory().max(1) as f64 - q.cpu_milli() as f64 / cap.cpu_milli().max(1) as f64
        };
        let mut left: Vec<(usize, usize)> = Vec::new();
        for shape in shapes.iter_mut() {
            for (b, pods) in &mut shape.held {
                left.extend(pods.drain(..).map(|p| (*b, p)));
            }
            shape.supply = 0;
        }
        left.sort_by(|x, y| {
            lean(&prep.buckets[x.0].req)
                .total_cmp(&lean(&prep.buckets[y.0].req))
                .then(x.cmp(y))
        });
        let mut left: std::collections::VecDeque<(usize, usize)> = left.into();
        let mut opened: Vec<usize> = Vec::new();
        let mut current: Option<usize> = None;
        while !left.is_empty() {
            let c = match current {
                Some(c) => c,
                None => {
                    let mut claim = new_claim(prep, left[0].0, self.pool, t, self.zones, self.cts).ok()?;
                    claim.cap = cap.clone();
                    claims.push(claim);
                    opened.push(claims.len() - 1);
                    current = Some(claims.len() - 1);
                    claims.len() - 1
                }
            };
            let claim = &claims[c];
            let memory_heavy = lean(&claim.load) < 0.0;
            let fits = |i: usize| {
                let bucket = &prep.buckets[left[i].0];
                bucket.req.fits_in_with(&claim.load, &cap)
                    && claim.host.max_add(bucket, 1) == 1
                    && prep.sigs[bucket.sig].compat[self.pool]
                        .as_ref()
                        .is_ok_and(|x| x.types.contains(t))
            };
            let n = left.len();
            let found = if memory_heavy {
                (0..n).rev().take(256).find(|i| fits(*i))
            } else {
                (0..n).take(256).find(|i| fits(*i))
            }
            .or_else(|| (0..n).find(|i| fits(*i)));
            let Some(i) = found else {
                if claims[c].pods.is_empty() {
                    return None;
                }
                current = None;
                continue;
            };
            let (b, p) = left.remove(i)?;
            join(prep, &mut claims[c], b, p);
        }
        Some(opened)
    }
}

/// The master's dual, solved, and its variables.
struct Dual {
    solution: microlp::Solution,
    ya: Vec<Variable>,
    yf: Vec<Variable>,
}

/// A pattern's row in the dual: its class's value and each filler's, times the count.
fn row(ya: &[Variable], yf: &[Variable], p: &Pattern) -> Vec<(Variable, f64)> {
    let mut terms = vec![(ya[p.class], 1.0)];
    terms.extend(
        p.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (yf[s], *n as f64)),
    );
    terms
}

/// A pod of bucket `b` joins the claim: load, hostname counts, the types it allows.
fn join(prep: &Prepared, claim: &mut Claim, b: usize, pod: usize) {
    let bucket = &prep.buckets[b];
    claim.pods.push(pod);
    claim.load.add(&bucket.req);
    claim.host.add(bucket, 1);
    claim.joins.push((b, 1));
    if let Ok(compat) = prep.sigs[bucket.sig].compat[claim.pool].as_ref() {
        claim.types.intersect_with(&compat.types);
    }
}

/// The load of `counts` pods of each shape.
fn load_of(shapes: &[Shape], counts: &[u64]) -> Resources {
    let mut load = Resources::new();
    for (s, n) in shapes.iter().zip(counts) {
        load.add_times(&s.req, *n);
    }
    load
}

/// Starting resource prices (per vCPU, GiB, pod): the largest reservoir type's price, spread
/// over its resources in proportion to how much of each the fillers need of it.
fn start_prices(shapes: &[Shape], reservoir: &[(usize, f64, [f64; 3])]) -> [f64; 3] {
    let Some((_, price, cap)) = reservoir.first() else {
        return [0.0; 3];
    };
    let mut need = [0.0f64; 3];
    for s in shapes {
        let r = resource_vector(&s.req);
        for i in 0..3 {
            need[i] += r[i] * s.supply as f64 / cap[i];
        }
    }
    // Pods rarely bind; CPU and memory share the price.
    need[2] = 0.0;
    let total: f64 = need.iter().sum::<f64>().max(1e-12);
    let mut out = [0.0; 3];
    for i in 0..3 {
        out[i] = price * need[i] / total / cap[i];
    }
    out
}

/// A request as the master counts it: vCPU, GiB, pods.
fn resource_vector(req: &Resources) -> [f64; 3] {
    [
        req.cpu_milli() as f64 / 1000.0,
        req.memory() as f64 / GIB,
        req.get(crate::resources::Resource::Pods).max(1) as f64,
    ]
}
