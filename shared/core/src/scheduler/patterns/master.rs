//! The restricted master's linear programme, solved where column generation needs it thousands
//! of times a second: a dense revised simplex on the primal, whose rows are the groups (a small
//! batch has at most 64, usually about 12) and whose columns are the patterns found so far.
//!
//! The master covers each group's pods (`Σ pods·x ≥ demand`) at least cost. Each group also has
//! an *escape* column: one pod covered at the group's ceiling (its cheapest single-pod node, the
//! most a group's price can be). The escapes make the all-escape basis feasible from the start
//! (no first phase) and bound the prices: the dual of this programme is exactly the programme
//! `max Σ demand·y, Σ pods·y ≤ price per pattern, 0 ≤ y ≤ ceiling` that column generation
//! prices candidates with, and the prices are read from the optimal basis (`y = c_B B⁻¹`).
//!
//! A general solver answering that dual directly (one row per pattern, hundreds of them) took
//! about 0.4 ms per solve at 100-200 patterns and a third of a 60-pod decision; here the basis
//! is as small as the number of groups. Should the simplex not finish (its pivots are capped),
//! the caller falls back to the general solver.

/// Reduced costs and pivot elements smaller than this are zero.
const TOL: f64 = 1e-9;
/// Pivots after which the basis inverse is computed again from its columns.
const REFACTOR_EVERY: usize = 32;
/// Pivots without progress after which entering and leaving follow Bland's rule (no cycling).
const STALL: usize = 24;

/// The master's optimum: its cost and each group's price (0 for groups with no demand).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Prices {
    pub objective: f64,
    pub y: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Var {
    /// A pattern (its index among the columns).
    Pattern(usize),
    /// A row's escape: one pod of the row's group at the group's ceiling.
    Escape(usize),
    /// A row's surplus: pods covered beyond the demand.
    Surplus(usize),
}

/// `min Σ price·x + Σ ceiling·e` subject to `Σ pods·x + e − s = demand` over the groups with
/// demand, every variable non-negative. `patterns`: (price, pods per group). `ceiling`: per group.
/// None when the pivots run out (or the data are not finite).
pub(super) fn solve(demand: &[u64], ceiling: &[f64], patterns: &[(f64, &[u64])]) -> Option<Prices> {
    let rows: Vec<usize> = (0..demand.len()).filter(|g| demand[*g] > 0).collect();
    let m = rows.len();
    let mut y = vec![0.0; demand.len()];
    if m == 0 {
        return Some(Prices { objective: 0.0, y });
    }
    if rows.iter().any(|g| !ceiling[*g].is_finite()) || patterns.iter().any(|(p, _)| !p.is_finite()) {
        return None;
    }
    let column = |v: Var, out: &mut [f64]| {
        out.iter_mut().for_each(|x| *x = 0.0);
        match v {
            Var::Pattern(j) => {
                for (i, g) in rows.iter().enumerate() {
                    out[i] = patterns[j].1[*g] as f64;
                }
            }
            Var::Escape(i) => out[i] = 1.0,
            Var::Surplus(i) => out[i] = -1.0,
        }
    };
    let cost = |v: Var| match v {
        Var::Pattern(j) => patterns[j].0,
        Var::Escape(i) => ceiling[rows[i]],
        Var::Surplus(_) => 0.0,
    };
    let b: Vec<f64> = rows.iter().map(|g| demand[*g] as f64).collect();

    let mut basis: Vec<Var> = (0..m).map(Var::Escape).collect();
    // Dense inverse of the basis, row-major.
    let mut inv = vec![0.0; m * m];
    for i in 0..m {
        inv[i * m + i] = 1.0;
    }
    let mut xb = b.clone();
    let mut duals = vec![0.0; m];
    let mut a = vec![0.0; m];
    let mut u = vec![0.0; m];
    let mut since_refactor = 0usize;
    let mut stalled = 0usize;
    let mut best = f64::INFINITY;
    let max_pivots = 50 * (m + patterns.len()) + 1_000;
    for _ in 0..max_pivots {
        // Prices of the rows: y = c_B B⁻¹.
        for (k, d) in duals.iter_mut().enumerate() {
            *d = (0..m).map(|i| cost(basis[i]) * inv[i * m + k]).sum();
        }
        let objective: f64 = (0..m).map(|i| cost(basis[i]) * xb[i]).sum();
        if objective < best - 1e-12 {
            best = objective;
            stalled = 0;
        } else {
            stalled += 1;
        }
        let bland = stalled > STALL;
        // Entering: the most negative reduced cost per unit length of the pattern's column (a
        // pattern of many pods is not preferred for its size alone), or under Bland's rule the
        // first negative. The master is degenerate (many optimal prices), and which optimal
        // prices column generation sees decides which patterns it finds: with the plain most
        // negative reduced cost, 2 of the small-batch table's twenty 40-pod batches ended over 1 %
        // of CP-SAT's plans, with this rule none (and 60-pod seed 2 stays within 1 %).
        let mut entering: Option<(f64, Var)> = None;
        let candidates = (0..patterns.len())
            .map(Var::Pattern)
            .chain((0..m).map(Var::Escape))
            .chain((0..m).map(Var::Surplus));
        for v in candidates {
            if basis.contains(&v) {
                continue;
            }
            let reduced = match v {
                Var::Pattern(j) => {
                    patterns[j].0
                        - rows
                            .iter()
                            .enumerate()
                            .map(|(i, g)| duals[i] * patterns[j].1[*g] as f64)
                            .sum::<f64>()
                }
                Var::Escape(i) => ceiling[rows[i]] - duals[i],
                Var::Surplus(i) => duals[i],
            };
            let scale = 1.0 + cost(v).abs();
            let norm = match v {
                Var::Pattern(j) => rows
                    .iter()
                    .map(|g| (patterns[j].1[*g] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1.0),
                _ => 1.0,
            };
            if reduced < -TOL * scale && entering.is_none_or(|(r, _)| !bland && reduced / norm < r) {
                entering = Some((reduced / norm, v));
                if bland {
                    break;
                }
            }
        }
        let Some((_, q)) = entering else {
            // Optimal: the prices read from a basis inverse computed afresh.
            if !refactor(&basis, &column, &b, &mut inv, &mut xb, m) {
                return None;
            }
            let objective: f64 = (0..m).map(|i| cost(basis[i]) * xb[i].max(0.0)).sum();
            for (k, g) in rows.iter().enumerate() {
                let price: f64 = (0..m).map(|i| cost(basis[i]) * inv[i * m + k]).sum();
                y[*g] = price.clamp(0.0, ceiling[*g]);
            }
            return objective.is_finite().then_some(Prices { objective, y });
        };
        column(q, &mut a);
        for (i, ui) in u.iter_mut().enumerate() {
            *ui = (0..m).map(|k| inv[i * m + k] * a[k]).sum();
        }
        // Leaving: the least ratio; among near ties, the largest pivot (or, under Bland's rule,
        // the lowest variable).
        let mut leave: Option<(f64, usize)> = None;
        for i in 0..m {
            if u[i] <= TOL {
                continue;
            }
            let ratio = xb[i].max(0.0) / u[i];
            leave = match leave {
                None => Some((ratio, i)),
                Some((r, _)) if ratio < r - 1e-12 => Some((ratio, i)),
                Some((r, l)) if ratio <= r + 1e-12 => {
                    let better = if bland { basis[i] < basis[l] } else { u[i] > u[l] };
                    Some(if better { (ratio.min(r), i) } else { (r, l) })
                }
                keep => keep,
            };
        }
        // Costs are non-negative, so the programme is bounded below: no leaving row is an error.
        let (theta, r) = leave?;
        for i in 0..m {
            xb[i] -= theta * u[i];
        }
        xb[r] = theta;
        let pivot = u[r];
        for k in 0..m {
            inv[r * m + k] /= pivot;
        }
        for i in 0..m {
            if i != r && u[i] != 0.0 {
                let f = u[i];
                for k in 0..m {
                    inv[i * m + k] -= f * inv[r * m + k];
                }
            }
        }
        basis[r] = q;
        since_refactor += 1;
        if since_refactor >= REFACTOR_EVERY {
            since_refactor = 0;
            if !refactor(&basis, &column, &b, &mut inv, &mut xb, m) {
                return None;
            }
        }
    }
    None
}

/// The basis inverse and the basic values computed again from the basis's columns
/// (Gauss-Jordan with partial pivoting); false if the basis has become singular.
fn refactor(
    basis: &[Var],
    column: &dyn Fn(Var, &mut [f64]),
    b: &[f64],
    inv: &mut [f64],
    xb: &mut [f64],
    m: usize,
) -> bool {
    // [B | I] reduced to [I | B⁻¹]; B's column i is basis[i]'s.
    let mut bm = vec![0.0; m * m];
    let mut col = vec![0.0; m];
    for (i, v) in basis.iter().enumerate() {
        column(*v, &mut col);
        for k in 0..m {
            bm[k * m + i] = col[k];
        }
    }
    inv.iter_mut().for_each(|x| *x = 0.0);
    for i in 0..m {
        inv[i * m + i] = 1.0;
    }
    for c in 0..m {
        let p = (c..m).max_by(|x, y| bm[x * m + c].abs().total_cmp(&bm[y * m + c].abs()));
        let Some(p) = p.filter(|p| bm[p * m + c].abs() > 1e-12) else {
            return false;
        };
        if p != c {
            for k in 0..m {
                bm.swap(p * m + k, c * m + k);
                inv.swap(p * m + k, c * m + k);
            }
        }
        let d = bm[c * m + c];
        for k in 0..m {
            bm[c * m + k] /= d;
            inv[c * m + k] /= d;
        }
        for r in 0..m {
            if r != c && bm[r * m + c] != 0.0 {
                let f = bm[r * m + c];
                for k in 0..m {
                    bm[r * m + k] -= f * bm[c * m + k];
                    inv[r * m + k] -= f * inv[c * m + k];
                }
            }
        }
    }
    for (i, x) in xb.iter_mut().enumerate() {
        *x = (0..m).map(|k| inv[i * m + k] * b[k]).sum();
    }
    true
}

#[cfg(test)]
mod tests {
    use microlp::{ComparisonOp, OptimizationDirection, Problem};
    use proptest::prelude::*;

    use super::solve;

    /// The dual as the general solver answers it, written out directly.
    fn by_microlp(demand: &[u64], ceiling: &[f64], patterns: &[(f64, Vec<u64>)]) -> f64 {
        let mut lp = Problem::new(OptimizationDirection::Maximize);
        let y: Vec<_> = demand
            .iter()
            .zip(ceiling)
            .map(|(d, c)| lp.add_var(*d as f64, (0.0, *c)))
            .collect();
        for (price, pods) in patterns {
            let terms: Vec<_> = pods
                .iter()
                .enumerate()
                .filter(|(_, k)| **k > 0)
                .map(|(g, k)| (y[g], *k as f64))
                .collect();
            lp.add_constraint(terms.as_slice(), ComparisonOp::Le, *price);
        }
        lp.solve().unwrap().solution().unwrap().objective()
    }

    /// Demand per group, each group's ceiling, and the patterns: (price, pods per group).
    type Instance = (Vec<u64>, Vec<f64>, Vec<(f64, Vec<u64>)>);

    fn instance() -> impl Strategy<Value = Instance> {
        (1usize..14).prop_flat_map(|n| {
            (
                prop::collection::vec(0u64..9, n),
                prop::collection::vec(0.05f64..3.0, n),
                prop::collection::vec((0.1f64..6.0, prop::collection::vec(0u64..5, n)), 0..120),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// The master's prices are feasible for the dual (non-negative, under each group's
        /// ceiling, no pattern worth more than its price), their worth is the master's optimum
        /// (strong duality), and it is the general solver's optimum.
        #[test]
        fn prices_solve_the_dual_as_the_general_solver_does((demand, ceiling, patterns) in instance()) {
            let refs: Vec<(f64, &[u64])> = patterns.iter().map(|(p, k)| (*p, k.as_slice())).collect();
            let got = solve(&demand, &ceiling, &refs).expect("the master always has an optimum");
            for (g, y) in got.y.iter().enumerate() {
                prop_assert!(*y >= 0.0 && *y <= ceiling[g] + 1e-12, "price {y} of group {g} outside [0, {}]", ceiling[g]);
            }
            for (price, pods) in &patterns {
                let worth: f64 = pods.iter().zip(&got.y).map(|(k, y)| *k as f64 * y).sum();
                prop_assert!(worth <= price + 1e-7, "a pattern worth {worth} at price {price}");
            }
            let worth: f64 = demand.iter().zip(&got.y).map(|(d, y)| *d as f64 * y).sum();
            prop_assert!((worth - got.objective).abs() <= 1e-7 * (1.0 + worth.abs()), "prices worth {worth}, optimum {}", got.objective);
            let reference = by_microlp(&demand, &ceiling, &patterns);
            prop_assert!((reference - got.objective).abs() <= 1e-6 * (1.0 + reference.abs()), "general solver {reference}, master {}", got.objective);
        }
    }

    /// Degenerate on purpose: many identical patterns and ties in every ratio test, which a
    /// simplex without an anti-cycling rule can circle on.
    #[test]
    fn identical_patterns_and_tied_ratios_still_reach_the_optimum() {
        let demand = vec![4, 4, 4, 4];
        let ceiling = vec![1.0; 4];
        let pods: Vec<Vec<u64>> = (0..40)
            .map(|i| (0..4).map(|g| u64::from((i + g) % 2 == 0) * 2).collect())
            .collect();
        let patterns: Vec<(f64, &[u64])> = pods.iter().map(|p| (1.0, p.as_slice())).collect();
        let got = solve(&demand, &ceiling, &patterns).unwrap();
        let owned: Vec<(f64, Vec<u64>)> = pods.iter().map(|p| (1.0, p.clone())).collect();
        let reference = by_microlp(&demand, &ceiling, &owned);
        assert!(
            (got.objective - reference).abs() < 1e-9,
            "{} against {reference}",
            got.objective
        );
        assert!(
            (got.objective - 4.0).abs() < 1e-9,
            "two patterns cover two groups each at 1 per 2 pods: {}",
            got.objective
        );
    }
}
