//! Column generation over node patterns: the search for batches too large for the exact dynamic
//! programme (`exact`) yet small enough to solve as a set cover of whole nodes (issue #23; up to
//! [`PODS_MAX`] pods in at most 64 groups).
//!
//! A pattern is one node: a candidate (pool, instance type and one offering class, the zone and
//! capacity type its groups share) and how many pods of each group it holds. The master programme
//! covers every pod with patterns at least cost. Its linear relaxation is solved by column
//! generation: the restricted master (one row per group, one column per pattern found so far) by
//! its own dense simplex (`master`), which gives one price per group, then each round prices
//! every candidate exactly by branch and bound over its pod counts. The relaxation's
//! optimum is a lower bound on every whole-node packing of the batch, and Farley's bound keeps a
//! true bound at every round, so a search cut short by its budget still reports one. The plan is
//! the cheapest of three integer plans: the restricted master solved in integers over the
//! patterns generated (trimmed of pods covered twice), a sequential fill at the relaxation's
//! prices, and dives. A dive buys the nodes the relaxation uses whole, solves the relaxation of
//! the pods left again (column generation warm-started from the columns so far, cut to what is
//! left) and repeats; its last nodes move to the cheapest type holding their pods. The first dive
//! follows the relaxation; the others start from each of the columns it uses most. Dives reach
//! the integer optimum where the master over the first relaxation's columns cannot: the
//! relaxation is indifferent between a type and one twice its size at twice the price, and the
//! integer plan is not. Last, a large-neighbourhood step keeps the chosen plan's dearest node and
//! searches the pods left again from nothing ([`AROUND_WORK`] steps of pricing, the integer master
//! and the fill over their own columns).
//!
//! The search is anytime and bounded in steps: [`WORK_MAX`] steps of pricing over at most 25
//! rounds, at most 60 branch-and-bound nodes of the integer master, then dives of two short
//! pricing rounds per node bought, [`DIVES_WORK`] steps in all (about 20-40 ms at 40-60 pods on
//! one core on c5/m5/r5, `nodewright bench`'s small-batch table; 70-85 ms p50 on the broad
//! pools of `examples/nodepools.yaml`, `bench-handler`). Pricing tries a short dive per
//! candidate first and the full search only when the dives find nothing; the candidate's price
//! is the search's first incumbent, so candidates that price out are dismissed quickly. Past the
//! budget the bound is Farley's at the last round, weaker but still a bound.
//!
//! As in `exact`, topology across nodes and pool limits are outside the model: the packer replays
//! the nodes through its own joins and keeps them only when every constraint held. All work is
//! counted in steps (never wall time), so a batch gets the same answer on any machine.

mod master;

use microlp::{ComparisonOp, OptimizationDirection, Problem, SolveOptions, Variable};

use super::exact::{Group, Node};
use super::prepare::Prepared;
use crate::resources::FIXED;

/// Batches of more pods are left to the packer.
pub const PODS_MAX: u64 = 64;
/// At most this many steps (branch-and-bound nodes and candidates priced) per batch.
pub const WORK_MAX: u64 = 80_000;
/// One candidate's pricing stops after this many steps (its bound then stands for its value).
const PRICING_WORK_MAX: u64 = 20_000;
/// One candidate's short pricing dive, tried before the full search.
const HEURISTIC_WORK: u64 = 48;
/// One candidate's search per node of the sequential fill.
const FILL_WORK: u64 = 192;
/// Rounds of column generation.
const ROUNDS_MAX: usize = 25;
/// The most violated patterns added per round.
const COLUMNS_PER_ROUND: usize = 24;
/// Steps of pricing of all the dives of a batch together (each round of a dive buys at least one
/// node).
pub const DIVES_WORK: u64 = 16_000;
/// Dives started from a column the relaxation uses, besides the relaxation's own dive.
const DIVE_STARTS: usize = 8;
/// Pricing rounds of column generation per round of a dive (short dives only: a dive needs
/// good columns, not a proof).
const DIVE_PRICING_ROUNDS: usize = 2;
/// Steps of pricing of the search around the plan's dearest node ([`around_dearest`]).
const AROUND_WORK: u64 = 10_000;
/// Branch-and-bound nodes of the integer master (deterministic, unlike a time limit).
const MIP_NODES: u64 = 60;
/// Resources (dimensions) the model holds on the stack; batches asking for more are left to the
/// packer.
const DIMS_MAX: usize = 8;
/// Relative tolerance of "this pattern prices out".
const EPS: f64 = 1e-7;

/// The search's result: a plan's nodes and cost.
#[derive(Debug, Clone)]
pub(super) struct Solution {
    pub cost: f64,
    pub nodes: Vec<Node>,
}

/// One node offer: a (pool, type) at the cheapest offering of one class, its capacity in the
/// model's dimensions (cut at the batch's total demand: room beyond it never matters) and the
/// groups it may host.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    price: f64,
    pool: usize,
    instance_type: usize,
    cap: Vec<u64>,
    hosts: u64,
}

/// The batch as vectors: groups' requests in the dimensions any group uses, how many of each
/// group one node may hold, and the candidates after dominance pruning.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    req: Vec<Vec<u64>>,
    demand: Vec<u64>,
    limit: Vec<u64>,
    candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq)]
struct Column {
    candidate: usize,
    pods: Vec<u64>,
}

impl Model {
    fn new(prep: &Prepared, groups: &[&Group]) -> Option<Model> {
        if groups.is_empty() || groups.len() > 64 {
            return None;
        }
        let fixed: Vec<usize> = (0..FIXED)
            .filter(|r| groups.iter().any(|g| g.req.fixed()[*r] > 0))
            .collect();
        let mut extended: Vec<&str> = groups
            .iter()
            .flat_map(|g| {
                g.req
                    .extended()
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, _)| k.as_str())
            })
            .collect();
        extended.sort_unstable();
        extended.dedup();
        let vector = |r: &crate::resources::Resources| -> Vec<u64> {
            fixed
                .iter()
                .map(|i| r.fixed()[*i])
                .chain(extended.iter().map(|k| r.get_named(k)))
                .collect()
        };
        if fixed.len() + extended.len() > DIMS_MAX {
            return None;
        }
        let req: Vec<Vec<u64>> = groups.iter().map(|g| vector(g.req)).collect();
        let demand: Vec<u64> = groups.iter().map(|g| g.pods).collect();
        let limit: Vec<u64> = groups.iter().map(|g| g.pods.min(g.per_node.max(1))).collect();
        let total: Vec<u64> = (0..req.first().map_or(0, Vec::len))
            .map(|d| req.iter().zip(&demand).map(|(r, n)| r[d].saturating_mul(*n)).sum())
            .collect();

        let mut candidates = Vec::new();
        for (pi, pv) in prep.pools.iter().enumerate() {
            for t in pv.types.iter() {
                let cap = prep.capacity(pi, t);
                let base = groups.iter().enumerate().fold(0u64, |m, (g, grp)| {
                    let ok = grp.pools[pi].is_some_and(|(types, _, _)| types.contains(t)) && grp.req.fits_in(&cap);
                    if ok { m | (1 << g) } else { m }
                });
                if base == 0 {
                    continue;
                }
                let cap: Vec<u64> = vector(&cap).iter().zip(&total).map(|(c, n)| (*c).min(*n)).collect();
                // Offers come cheapest first: the first of each host set is its price.
                let mut seen: Vec<u64> = Vec::new();
                for &(price, ct, zone) in &prep.offers[t] {
                    if price <= 0.0 || pv.zones & (1 << zone) == 0 || pv.cts & ct == 0 {
                        continue;
                    }
                    let hosts = groups.iter().enumerate().fold(0u64, |m, (g, grp)| match grp.pools[pi] {
                        Some((_, z, c)) if base & (1 << g) != 0 && z & (1 << zone) != 0 && c & ct != 0 => m | (1 << g),
                        _ => m,
                    });
                    if hosts != 0 && !seen.contains(&hosts) {
                        seen.push(hosts);
                        candidates.push(Candidate {
                            price,
                            pool: pi,
                            instance_type: t,
                            cap: cap.clone(),
                            hosts,
                        });
                    }
                }
            }
        }
        // A candidate is dominated by a cheaper one that hosts every group it does with at least
        // its room: no optimum needs it.
        candidates.sort_by(|a, b| a.price.total_cmp(&b.price).then(a.instance_type.cmp(&b.instance_type)));
        let mut kept: Vec<Candidate> = Vec::new();
        for c in candidates {
            let dominated = kept
                .iter()
                .any(|k| k.hosts & c.hosts == c.hosts && k.cap.iter().zip(&c.cap).all(|(a, b)| a >= b));
            if !dominated {
                kept.push(c);
            }
        }
        Some(Model {
            req,
            demand,
            limit,
            candidates: kept,
        })
    }

    /// The same model for the pods `left`.
    fn residual(&self, left: &[u64]) -> Model {
        Model {
            req: self.req.clone(),
            demand: left.to_vec(),
            limit: self.limit.iter().zip(left).map(|(l, k)| (*l).min(*k)).collect(),
            candidates: self.candidates.clone(),
        }
    }

    /// How many pods of group `g` one node of candidate `c` holds alone.
    fn fits(&self, c: &Candidate, g: usize) -> u64 {
        if c.hosts & (1 << g) == 0 {
            return 0;
        }
        let mut n = self.limit[g];
        for (cap, r) in c.cap.iter().zip(&self.req[g]) {
            if let Some(k) = cap.checked_div(*r) {
                n = n.min(k);
            }
        }
        n
    }

    /// The cheapest candidate holding `pods`, if any.
    fn cheapest_holding(&self, pods: &[u64]) -> Option<usize> {
        let mask = pods
            .iter()
            .enumerate()
            .fold(0u64, |m, (g, k)| if *k > 0 { m | (1 << g) } else { m });
        let dims = self.req.first().map_or(0, Vec::len);
        let need: Vec<u64> = (0..dims)
            .map(|d| pods.iter().zip(&self.req).map(|(k, r)| k * r[d]).sum())
            .collect();
        // Candidates are sorted cheapest first.
        self.candidates.iter().position(|c| {
            c.hosts & mask == mask
                && need.iter().zip(&c.cap).all(|(n, cap)| n <= cap)
                && pods.iter().zip(&self.limit).all(|(k, l)| k <= l)
        })
    }
}

/// The most valuable pattern of one candidate at dual prices `y` with at most `left` pods of each
/// group, by branch and bound: its value (an upper bound on it: the root's bound when the search
/// ran out of `budget`) and the best pod counts found. Patterns worth no more than `floor` do not
/// count: pricing passes the node's price, so a candidate that prices out returns it and no pods.
fn price_candidate(
    model: &Model,
    c: &Candidate,
    y: &[f64],
    left: &[u64],
    floor: f64,
    budget: u64,
    work: &mut u64,
) -> (f64, Vec<u64>) {
    // Items: groups the node may host at a positive price, densest first (price per largest
    // share of the node), so that the first dives find good patterns.
    let mut items: Vec<(usize, u64)> = (0..y.len())
        .filter(|g| y[*g] > 1e-12)
        .map(|g| (g, model.fits(c, g).min(left[g])))
        .filter(|(_, k)| *k > 0)
        .collect();
    let share = |g: usize| -> f64 {
        model.req[g]
            .iter()
            .zip(&c.cap)
            .map(|(r, cap)| if *cap == 0 { 0.0 } else { *r as f64 / *cap as f64 })
            .fold(1e-12, f64::max)
    };
    items.sort_by(|a, b| {
        (y[b.0] / share(b.0))
            .total_cmp(&(y[a.0] / share(a.0)))
            .then(a.0.cmp(&b.0))
    });
    let surrogates = Surrogate::all(model, c, y, &items);
    let mut search = Search {
        model,
        y,
        items: &items,
        surrogates: &surrogates,
        cap: &c.cap,
        // In pricing only patterns worth more than the node matter: the price is the first
        // incumbent, which prunes most of the search of a candidate that prices out.
        best: floor,
        best_pods: vec![0; y.len()],
        pods: vec![0; y.len()],
        steps: 0,
        budget,
        last_pruned: 0,
    };
    let root = search.upper_bound(0, &c.cap, f64::NEG_INFINITY);
    search.dive(0, &c.cap, 0.0);
    *work += search.steps;
    let finished = search.steps <= budget;
    let value = if finished { search.best } else { root.max(search.best) };
    (value, search.best_pods)
}

/// One surrogate constraint: the node's dimensions summed with weights (as shares of the
/// node), which every pattern obeys; its fractional knapsack bounds what the items add. The
/// least over a few weightings comes close to the linear relaxation's bound, which any single
/// dimension alone (the unit weightings) misses when two resources bind together.
struct Surrogate {
    weights: Vec<f64>,
    /// Each item's size under the weights (indexed as the items).
    sizes: Vec<f64>,
    /// Item indices, densest (price per size) first.
    order: Vec<usize>,
}

impl Surrogate {
    fn all(model: &Model, c: &Candidate, y: &[f64], items: &[(usize, u64)]) -> Vec<Surrogate> {
        let dims = c.cap.len();
        // A dimension that every item together fits never binds, here or deeper in the search
        // (the room left always holds the items left). A weighting with weight on it bounds no
        // lower than the one without it, so only the binding dimensions are weighted: the same
        // bounds, in a third of the work on c5/m5/r5, where the pods dimension rarely binds.
        let binding: Vec<usize> = (0..dims)
            .filter(|d| {
                let total: u64 = items
                    .iter()
                    .map(|(g, k)| model.req[*g][*d].saturating_mul(*k))
                    .fold(0, u64::saturating_add);
                total > c.cap[*d]
            })
            .collect();
        let mut weightings: Vec<Vec<f64>> = Vec::new();
        for &d in &binding {
            let mut w = vec![0.0; dims];
            w[d] = 1.0;
            weightings.push(w);
        }
        for (i, &a) in binding.iter().enumerate() {
            for &b in &binding[i + 1..] {
                for share in [0.25, 0.5, 0.75] {
                    let mut w = vec![0.0; dims];
                    w[a] = share;
                    w[b] = 1.0 - share;
                    weightings.push(w);
                }
            }
        }
        if binding.len() > 2 {
            let mut w = vec![0.0; dims];
            for &d in &binding {
                w[d] = 1.0 / binding.len() as f64;
            }
            weightings.push(w);
        }
        if weightings.is_empty() {
            // Nothing binds: every item fits, and the zero weighting bounds by their sum.
            weightings.push(vec![0.0; dims]);
        }
        weightings
            .into_iter()
            .map(|weights| {
                let sizes: Vec<f64> = items
                    .iter()
                    .map(|(g, _)| {
                        model.req[*g]
                            .iter()
                            .zip(&c.cap)
                            .zip(&weights)
                            .map(|((r, cap), w)| if *cap == 0 { 0.0 } else { w * *r as f64 / *cap as f64 })
                            .sum()
                    })
                    .collect();
                let mut order: Vec<usize> = (0..items.len()).collect();
                let density = |i: usize| {
                    if sizes[i] <= 0.0 {
                        f64::INFINITY
                    } else {
                        y[items[i].0] / sizes[i]
                    }
                };
                order.sort_by(|a, b| density(*b).total_cmp(&density(*a)).then(a.cmp(b)));
                Surrogate { weights, sizes, order }
            })
            .collect()
    }
}

struct Search<'a> {
    model: &'a Model,
    y: &'a [f64],
    items: &'a [(usize, u64)],
    surrogates: &'a [Surrogate],
    cap: &'a [u64],
    best: f64,
    best_pods: Vec<u64>,
    pods: Vec<u64>,
    steps: u64,
    budget: u64,
    /// The surrogate that pruned last (tried first).
    last_pruned: usize,
}

impl Search<'_> {
    /// A bound on what items `i..` add within `room`: the least of the surrogates' fractional
    /// knapsacks. It stops at the first surrogate at or below `enough` (the caller prunes on it),
    /// trying first the one that pruned last.
    fn upper_bound(&mut self, i: usize, room: &[u64], enough: f64) -> f64 {
        if room.is_empty() {
            return self.items[i..].iter().map(|(g, k)| self.y[*g] * *k as f64).sum();
        }
        let mut shares = [0.0f64; DIMS_MAX];
        for ((share, r), cap) in shares.iter_mut().zip(room).zip(self.cap) {
            *share = if *cap == 0 { 0.0 } else { *r as f64 / *cap as f64 };
        }
        let mut bound = f64::INFINITY;
        let count = self.surrogates.len();
        for step in 0..count {
            let si = (self.last_pruned + step) % count;
            let s = &self.surrogates[si];
            let mut left: f64 = shares.iter().zip(&s.weights).map(|(r, w)| w * r).sum();
            let mut value = 0.0;
            for &j in &s.order {
                if j < i {
                    continue;
                }
                let (g, k) = self.items[j];
                let size = s.sizes[j];
                let take = if size <= 0.0 {
                    k as f64
                } else {
                    (left / size).min(k as f64)
                };
                value += take * self.y[g];
                left -= take * size;
                if left <= 0.0 && size > 0.0 {
                    break;
                }
            }
            bound = bound.min(value);
            if bound <= enough {
                self.last_pruned = si;
                break;
            }
        }
        bound
    }

    fn dive(&mut self, i: usize, room: &[u64], value: f64) {
        self.steps += 1;
        if value > self.best {
            self.best = value;
            self.best_pods.clone_from(&self.pods);
        }
        if i == self.items.len() || self.steps > self.budget {
            return;
        }
        let enough = self.best * (1.0 + 1e-12) - value;
        if self.upper_bound(i, room, enough) <= enough {
            return;
        }
        let (g, k) = self.items[i];
        let most = room
            .iter()
            .zip(&self.model.req[g])
            .filter_map(|(free, r)| free.checked_div(*r))
            .fold(k, u64::min);
        for n in (0..=most).rev() {
            let mut rest = [0u64; DIMS_MAX];
            for ((left, f), r) in rest.iter_mut().zip(room).zip(&self.model.req[g]) {
                *left = f - r * n;
            }
            self.pods[g] = n;
            self.dive(i + 1, &rest[..room.len()], value + n as f64 * self.y[g]);
            self.pods[g] = 0;
            if self.steps > self.budget {
                return;
            }
        }
    }
}

/// The cheapest whole-node packing the patterns found allow, and the bound; None when some
/// group fits no candidate or the batch is over the model's limits.
pub(super) fn solve(prep: &Prepared, groups: &[Group]) -> Option<Solution> {
    if groups.iter().map(|g| g.pods).sum::<u64>() > PODS_MAX {
        return None;
    }
    let order = canonical(groups);
    let sorted: Vec<&Group> = order.iter().map(|g| &groups[*g]).collect();
    let model = Model::new(prep, &sorted)?;
    let (_, mut columns, worth) = generate_once(&model)?;
    let mut plans = master_and_fill(&model, &mut columns, &worth).to_vec();
    // Dives: the relaxation's own, then one from each of the columns it uses most, while the
    // dives' steps last.
    let mut budget = DIVES_WORK;
    plans.push(dive(&model, &columns, None, &mut budget));
    if let Some(x) = primal(&model, &columns) {
        let mut used: Vec<usize> = (0..x.len()).filter(|j| x[*j] > 1e-6).collect();
        used.sort_by(|a, b| x[*b].total_cmp(&x[*a]).then(a.cmp(b)));
        for j in used.into_iter().take(DIVE_STARTS) {
            if budget == 0 {
                break;
            }
            plans.push(dive(&model, &columns, Some(j), &mut budget));
        }
    }
    let (mut cost, mut nodes) = plans
        .into_iter()
        .flatten()
        .reduce(|a, b| if b.0 < a.0 - 1e-9 { b } else { a })?;
    if let Some((c, n)) = around_dearest(&model, &nodes).filter(|(c, _)| *c < cost - 1e-9) {
        (cost, nodes) = (c, n);
    }
    // Back to the caller's group order.
    for node in &mut nodes {
        let mut pods = vec![0; groups.len()];
        for (k, g) in order.iter().enumerate() {
            pods[*g] = node.pods[k];
        }
        node.pods = pods;
    }
    Some(Solution { cost, nodes })
}

/// A large-neighbourhood step: the plan's dearest node kept, the rest of the batch searched again
/// from nothing (column generation within [`AROUND_WORK`] steps, then the integer master and the
/// sequential fill over its columns). The first search's columns are those of the whole batch's
/// relaxation; once the node the plan is surest of is fixed, the pods left have a relaxation of
/// their own, whose columns hold the split between families that the first one missed.
fn around_dearest(model: &Model, nodes: &[Node]) -> Option<(f64, Vec<Node>)> {
    let (keep, price) = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, model.candidates[model.cheapest_holding(&n.pods)?].price)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
    let mut left = model.demand.clone();
    take(&mut left, &nodes[keep].pods);
    if left.iter().all(|k| *k == 0) {
        return None;
    }
    let residual = model.residual(&left);
    let searches = [HEURISTIC_WORK, PRICING_WORK_MAX];
    let (_, mut columns, worth) = generate(&residual, Vec::new(), AROUND_WORK, &searches, ROUNDS_MAX, &mut 0)?;
    let (cost, mut rest) = master_and_fill(&residual, &mut columns, &worth)
        .into_iter()
        .flatten()
        .reduce(|a, b| if b.0 < a.0 - 1e-9 { b } else { a })?;
    rest.push(nodes[keep].clone());
    Some((cost + price, rest))
}

/// Two integer plans over column generation's outcome: the sequential fill at the groups' `worth`
/// (whose nodes then join `columns`) and the master in integers over the columns.
fn master_and_fill(model: &Model, columns: &mut Vec<Column>, worth: &[f64]) -> [Option<(f64, Vec<Node>)>; 2] {
    let filled = sequential_fill(model, worth);
    let fill_plan = filled
        .as_ref()
        .and_then(|cols| nodes_of(model, cols.iter().map(|c| c.pods.clone()).collect()));
    for col in filled.into_iter().flatten() {
        if !columns.contains(&col) {
            columns.push(col);
        }
    }
    [integer_plan(model, columns), fill_plan]
}

/// Only the bound (for the plan's reported gap).
pub(super) fn bound(prep: &Prepared, groups: &[Group]) -> Option<f64> {
    if groups.iter().map(|g| g.pods).sum::<u64>() > PODS_MAX {
        return None;
    }
    let order = canonical(groups);
    let sorted: Vec<&Group> = order.iter().map(|g| &groups[*g]).collect();
    let model = Model::new(prep, &sorted)?;
    generate_once(&model).map(|(b, _, _)| b)
}

/// The groups' indices in an order that depends only on what they ask for, so that the bound and
/// the search, which list the same batch's groups in different orders, build one model.
fn canonical(groups: &[Group]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|a, b| {
        let (ga, gb) = (&groups[*a], &groups[*b]);
        ga.req
            .fixed()
            .cmp(gb.req.fixed())
            .then_with(|| ga.req.extended().iter().cmp(gb.req.extended().iter()))
            .then(ga.pods.cmp(&gb.pods))
            .then(ga.per_node.cmp(&gb.per_node))
    });
    order
}

thread_local! {
    /// The last batches' columns: one plan asks for them up to three times (the greedy plan's
    /// bound, the search, the search's plan's bound). The bound's model spans every pool a group
    /// may use and the search's only the pools of its best rank, so the two can differ and both
    /// are kept.
    static RECENT: std::cell::RefCell<Vec<(Model, Generated)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Models remembered (the bound's and the search's).
const REMEMBERED: usize = 2;

/// Column generation's outcome: its bound, the patterns found and each group's worth at the last
/// round (None: no relaxation).
type Generated = Option<(f64, Vec<Column>, Vec<f64>)>;

/// [`generate`], remembered for the models last asked about.
fn generate_once(model: &Model) -> Generated {
    if let Some(hit) = RECENT.with_borrow(|recent| {
        recent
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, result)| result.clone())
    }) {
        return hit;
    }
    let result = generate(
        model,
        Vec::new(),
        WORK_MAX,
        &[HEURISTIC_WORK, PRICING_WORK_MAX],
        ROUNDS_MAX,
        &mut 0,
    );
    RECENT.with_borrow_mut(|recent| {
        if recent.len() >= REMEMBERED {
            recent.remove(0);
        }
        recent.push((model.clone(), result.clone()));
    });
    result
}

/// Column generation from `initial` columns (besides each group's densest node), within `budget`
/// steps counted in `work` (which starts at 0): the patterns found and a lower bound on the
/// master's linear optimum.
fn generate(
    model: &Model,
    initial: Vec<Column>,
    budget: u64,
    searches: &[u64],
    rounds: usize,
    work: &mut u64,
) -> Generated {
    let n = model.demand.len();
    let mut columns: Vec<Column> = initial;
    // A group's dual price never exceeds its cheapest single-pod node; its densest node alone
    // starts the columns.
    let mut ceiling = vec![f64::INFINITY; n];
    for g in 0..n {
        let mut densest: Option<(f64, usize, u64)> = None;
        for (ci, c) in model.candidates.iter().enumerate() {
            let k = model.fits(c, g);
            if k == 0 {
                continue;
            }
            ceiling[g] = ceiling[g].min(c.price);
            if densest.is_none_or(|(r, _, _)| c.price / (k as f64) < r) {
                densest = Some((c.price / k as f64, ci, k));
            }
        }
        if model.demand[g] == 0 {
            continue;
        }
        let (_, ci, k) = densest?;
        let mut pods = vec![0; n];
        pods[g] = k;
        let col = Column { candidate: ci, pods };
        if !columns.contains(&col) {
            columns.push(col);
        }
    }
    let mut bound = 0.0f64;
    let mut last = Vec::new();
    for _ in 0..rounds {
        let (objective, y) = dual(model, &columns, &ceiling)?;
        last.clone_from(&y);
        // Cheap pricing first: a short dive per candidate finds most improving patterns, and the
        // root's surrogate bound caps each candidate's value for Farley's bound. Only when the
        // short dives find nothing does every candidate get the full search, which proves the
        // relaxation solved (or finds what the short dives missed).
        let mut found: Vec<(f64, Column)> = Vec::new();
        let mut ratio = 1.0f64;
        let total = budget;
        for &budget in searches {
            ratio = 1.0;
            for (ci, c) in model.candidates.iter().enumerate() {
                *work += 1;
                // Quick reject: every group at its most on this node is not worth the price.
                let most: f64 = (0..n).map(|g| y[g] * model.fits(c, g) as f64).sum();
                if most <= c.price * (1.0 + EPS) {
                    continue;
                }
                // The batch's budget bounds the full search too (its bound then stands in).
                let budget = budget.min(total.saturating_sub(*work).max(HEURISTIC_WORK));
                let floor = c.price * (1.0 + EPS);
                let (value, pods) = price_candidate(model, c, &y, &model.demand, floor, budget, work);
                ratio = ratio.max(value / c.price);
                let real: f64 = pods.iter().zip(&y).map(|(k, y)| *k as f64 * y).sum();
                if real > c.price * (1.0 + EPS) {
                    found.push((real / c.price, Column { candidate: ci, pods }));
                }
            }
            if !found.is_empty() {
                break;
            }
        }
        bound = bound.max(objective / ratio * (1.0 - 1e-9));
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        let before = columns.len();
        for (_, col) in found.into_iter().take(COLUMNS_PER_ROUND) {
            if !columns.contains(&col) {
                columns.push(col);
            }
        }
        if columns.len() == before || *work > total || bound >= objective * (1.0 - 1e-6) {
            break;
        }
    }
    // Every group keeps some worth for the sequential fill, even one the relaxation covers twice.
    let worth = last.iter().zip(&ceiling).map(|(y, c)| y.max(1e-3 * c)).collect();
    Some((bound, columns, worth))
}

/// Whole nodes one at a time, each the candidate and pattern of most worth per price among the
/// pods left (the relaxation's prices as worth): a cover the restricted master's columns may lack,
/// since the columns optimal for the relaxation are not always those of a good integer plan.
/// Gives up (None) past [`WORK_MAX`] steps.
fn sequential_fill(model: &Model, worth: &[f64]) -> Option<Vec<Column>> {
    let mut left = model.demand.clone();
    let mut out = Vec::new();
    let mut work = 0u64;
    while left.iter().any(|k| *k > 0) {
        if work > WORK_MAX {
            return None;
        }
        let mut best: Option<(f64, Column)> = None;
        for (ci, c) in model.candidates.iter().enumerate() {
            let (_, pods) = price_candidate(model, c, worth, &left, 0.0, FILL_WORK, &mut work);
            let value: f64 = pods.iter().zip(worth).map(|(k, w)| *k as f64 * w).sum();
            if value > 0.0 && best.as_ref().is_none_or(|(r, _)| value / c.price > *r) {
                best = Some((value / c.price, Column { candidate: ci, pods }));
            }
        }
        let (_, col) = best?;
        for (l, k) in left.iter_mut().zip(&col.pods) {
            *l -= k;
        }
        out.push(col);
    }
    Some(out)
}

/// A dive: column generation on the pods left, then the column the relaxation uses most is
/// bought as whole nodes (every column it uses at least once, that many times; else the one it
/// uses most, once) and the rest is solved again, until no pod is left. Each round's columns
/// start the next (cut to the pods left), so a round costs a few pricing rounds. The last nodes
/// are cut to their pods and moved to the cheapest type holding them: the integer plan over the
/// first relaxation's columns alone misses these tails, since the relaxation is indifferent
/// between a type and one twice its size at twice its price, and a plan is not.
fn dive(model: &Model, start: &[Column], first: Option<usize>, budget: &mut u64) -> Option<(f64, Vec<Node>)> {
    let mut left = model.demand.clone();
    let mut pool: Vec<Column> = start.to_vec();
    let mut bought: Vec<Vec<u64>> = Vec::new();
    if let Some(j) = first {
        bought.push(take(&mut left, &start[j].pods));
    }
    while *budget > 0 {
        if left.iter().all(|k| *k == 0) {
            break;
        }
        let residual = model.residual(&left);
        let mut seed: Vec<Column> = Vec::new();
        for col in &pool {
            let cut = Column {
                candidate: col.candidate,
                pods: col.pods.iter().zip(&left).map(|(k, l)| (*k).min(*l)).collect(),
            };
            if cut.pods.iter().any(|k| *k > 0) && !seed.contains(&cut) {
                seed.push(cut);
            }
        }
        let mut spent = 0;
        let generated = generate(
            &residual,
            seed,
            *budget,
            &[HEURISTIC_WORK],
            DIVE_PRICING_ROUNDS,
            &mut spent,
        );
        *budget = budget.saturating_sub(spent.max(1));
        let (_, columns, _) = generated?;
        let x = primal(&residual, &columns)?;
        let whole: Vec<(usize, u64)> = x
            .iter()
            .enumerate()
            .filter(|(_, v)| **v >= 1.0 - 1e-6)
            .map(|(j, v)| (j, (v + 1e-6).floor() as u64))
            .collect();
        let picks = if whole.is_empty() {
            let most = (0..x.len()).max_by(|a, b| x[*a].total_cmp(&x[*b]).then(b.cmp(a)))?;
            vec![(most, 1)]
        } else {
            whole
        };
        for (j, times) in picks {
            for _ in 0..times {
                let pods = take(&mut left, &columns[j].pods);
                if pods.iter().all(|k| *k == 0) {
                    break;
                }
                bought.push(pods);
            }
        }
        pool = columns;
    }
    if left.iter().any(|k| *k > 0) {
        return None;
    }
    nodes_of(model, bought)
}

/// The pods of `pattern` still in `left`, taken out of it.
fn take(left: &mut [u64], pattern: &[u64]) -> Vec<u64> {
    left.iter_mut()
        .zip(pattern)
        .map(|(l, k)| {
            let n = (*k).min(*l);
            *l -= n;
            n
        })
        .collect()
}

/// The master's rows: every pod of each group left covered by the columns (`x`: their counts).
fn cover(lp: &mut Problem, model: &Model, columns: &[Column], x: &[Variable]) {
    for (g, d) in model.demand.iter().enumerate() {
        if *d == 0 {
            continue;
        }
        let terms: Vec<(Variable, f64)> = columns
            .iter()
            .zip(x)
            .filter(|(col, _)| col.pods[g] > 0)
            .map(|(col, v)| (*v, col.pods[g] as f64))
            .collect();
        lp.add_constraint(terms.as_slice(), ComparisonOp::Ge, *d as f64);
    }
}

/// The masters' linear programmes, solved without presolve: their rows (one per group or per
/// column) are neither redundant nor fixable, so presolve only ever cost time (about a tenth of
/// the solver's share of a 60-pod decision).
fn lp_options() -> SolveOptions {
    let mut options = SolveOptions::default();
    options.presolve = false;
    options
}

/// The restricted master's linear optimum: each column's count.
fn primal(model: &Model, columns: &[Column]) -> Option<Vec<f64>> {
    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let x: Vec<Variable> = columns
        .iter()
        .map(|col| lp.add_var(model.candidates[col.candidate].price, (0.0, f64::INFINITY)))
        .collect();
    cover(&mut lp, model, columns, &x);
    let outcome = lp.solve_with(lp_options()).ok()?;
    let sol = outcome.solution()?;
    Some(x.iter().map(|v| sol.var_value(*v).max(0.0)).collect())
}

/// The restricted master's dual: its optimum and the groups' prices. Solved on the master's
/// own small basis (`master`), or by the general solver on the dual should that not finish.
fn dual(model: &Model, columns: &[Column], ceiling: &[f64]) -> Option<(f64, Vec<f64>)> {
    let patterns: Vec<(f64, &[u64])> = columns
        .iter()
        .map(|col| (model.candidates[col.candidate].price, col.pods.as_slice()))
        .collect();
    if let Some(p) = master::solve(&model.demand, ceiling, &patterns) {
        return Some((p.objective, p.y));
    }
    dual_by_microlp(model, columns, ceiling)
}

/// [`dual`] by the general solver, one row per column.
fn dual_by_microlp(model: &Model, columns: &[Column], ceiling: &[f64]) -> Option<(f64, Vec<f64>)> {
    let mut lp = Problem::new(OptimizationDirection::Maximize);
    let y: Vec<Variable> = model
        .demand
        .iter()
        .zip(ceiling)
        .map(|(d, c)| lp.add_var(*d as f64, (0.0, *c)))
        .collect();
    for col in columns {
        let terms: Vec<(Variable, f64)> = col
            .pods
            .iter()
            .enumerate()
            .filter(|(_, k)| **k > 0)
            .map(|(g, k)| (y[g], *k as f64))
            .collect();
        lp.add_constraint(
            terms.as_slice(),
            ComparisonOp::Le,
            model.candidates[col.candidate].price,
        );
    }
    let outcome = lp.solve_with(lp_options()).ok()?;
    let sol = outcome.solution()?;
    Some((sol.objective(), y.iter().map(|v| sol.var_value(*v).max(0.0)).collect()))
}

/// The master in integers over `columns`, then trimmed: pods covered twice leave their nodes and
/// each node moves to the cheapest candidate that holds what is left.
fn integer_plan(model: &Model, columns: &[Column]) -> Option<(f64, Vec<Node>)> {
    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let x: Vec<Variable> = columns
        .iter()
        .map(|col| {
            let most = col
                .pods
                .iter()
                .zip(&model.demand)
                .filter(|(k, _)| **k > 0)
                .map(|(k, d)| d.div_ceil(*k))
                .max()
                .unwrap_or(0);
            lp.add_integer_var(
                model.candidates[col.candidate].price,
                (0, i32::try_from(most).unwrap_or(i32::MAX)),
            )
        })
        .collect();
    cover(&mut lp, model, columns, &x);
    let mut options = SolveOptions::default();
    options.node_limit = Some(MIP_NODES);
    let outcome = lp.solve_with(options).ok()?;
    let sol = outcome.solution()?;
    let mut patterns: Vec<Vec<u64>> = Vec::new();
    for (col, v) in columns.iter().zip(&x) {
        for _ in 0..sol.var_value(*v).round().max(0.0) as u64 {
            patterns.push(col.pods.clone());
        }
    }
    nodes_of(model, patterns)
}

/// Patterns covering every pod at least once as nodes: pods covered more than once leave the
/// patterns listed last, and each node is the cheapest candidate holding what it keeps.
fn nodes_of(model: &Model, mut patterns: Vec<Vec<u64>>) -> Option<(f64, Vec<Node>)> {
    for (g, d) in model.demand.iter().enumerate() {
        let mut over = patterns.iter().map(|p| p[g]).sum::<u64>().checked_sub(*d)?;
        for p in patterns.iter_mut().rev() {
            let k = p[g].min(over);
            p[g] -= k;
            over -= k;
        }
    }
    patterns.retain(|p| p.iter().any(|k| *k > 0));
    let mut cost = 0.0;
    let mut nodes = Vec::with_capacity(patterns.len());
    for pods in patterns {
        let c = &model.candidates[model.cheapest_holding(&pods)?];
        cost += c.price;
        nodes.push(Node {
            pool: c.pool,
            instance_type: c.instance_type,
            pods,
        });
    }
    Some((cost, nodes))
}
