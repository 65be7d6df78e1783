#!/usr/bin/env python3
"""Research prototype, not part of the product: the anchored nodes of the diverse mix (issue #23)
planned as one linear programme over node patterns instead of node by node.

Same instance as `anchored-fill.py` (anchors, each alone on its node among its kind, and 4x as
many generic fillers, on Karpenter's benchmark types: k vCPU and 2k GiB, price linear in k).

The master programme: a pattern is (anchor shape, size k, filler counts that fit beside it);
x_p >= 0 nodes of each pattern; z_f >= 0 fillers of shape f left to a reservoir of large nodes
whose cost R is at least the reservoir's CPU and at least its memory / 2 GiB (large nodes round
away). Minimise sum k x_p + R subject to: each anchor shape covered exactly, each filler shape's
supply used exactly (patterns + reservoir). Columns come from an exact pricing per anchor shape
and size (depth-first branch and bound over filler counts with the duals as values). The duals
of the two reservoir rows are what a unit of CPU and of memory is worth: the value the greedy
rule of `anchored-fill.py` had to guess (half and half).

Rounding: floor every pattern; then dive: the residual is solved again, the largest fractional
pattern taken once, until no anchor is left. What is left of the fillers goes to the reservoir.

Usage: scripts/research/anchor-patterns.py SEED ANCHORS [--extra K]
"""

import argparse
import math
import random
import time

import numpy as np

from ortools.linear_solver import pywraplp

CPU = [100, 250, 500, 1000, 1500]
MEM = [100, 256, 512, 1024, 2048, 4096]


def instance(seed, anchors, fillers):
    r = random.Random(seed)
    aa = {}
    for _ in range(anchors):
        s = (r.choice(CPU), r.choice(MEM))
        aa[s] = aa.get(s, 0) + 1
    pool = {}
    for _ in range(fillers):
        s = (r.choice(CPU), r.choice(MEM))
        pool[s] = pool.get(s, 0) + 1
    return aa, pool


class Pricing:
    """One dynamic programme per round over every filler shape: the best value of fillers using
    at most (CPU, memory) for every cell of a grid (CPU in 50m steps, memory in 4 MiB steps) up
    to the largest room any pattern may have; each anchor and size then reads its room's cell."""

    def __init__(self, shapes, supply, values, max_c, max_m):
        self.shapes = shapes
        self.C = max_c // 50
        self.M = max_m // 4
        dp = np.zeros((self.C + 1, self.M + 1))
        self.stages = []
        for i, (c, m) in enumerate(shapes):
            self.stages.append(dp)
            v = values[i]
            if v <= 1e-9 or supply[i] == 0:
                continue
            dc, dm = c // 50, m // 4
            top = min(supply[i], self.C // dc, self.M // dm)
            new = dp.copy()
            cur = dp
            for n in range(1, top + 1):
                shifted = np.full_like(dp, -np.inf)
                shifted[n * dc :, n * dm :] = dp[: self.C + 1 - n * dc, : self.M + 1 - n * dm] + n * v
                np.maximum(new, shifted, out=new)
            dp = new
        self.dp = dp
        self.values = values
        self.supply = supply

    def best(self, room_c, room_m):
        i, j = room_c // 50, room_m // 4
        return self.dp[i, j]

    def counts(self, room_c, room_m):
        i, j = room_c // 50, room_m // 4
        target = self.dp[i, j]
        counts = [0] * len(self.shapes)
        for s in range(len(self.shapes) - 1, -1, -1):
            prev = self.stages[s]
            c, m = self.shapes[s]
            dc, dm = c // 50, m // 4
            n = 0
            while True:
                if i - n * dc < 0 or j - n * dm < 0:
                    raise AssertionError("traceback lost")
                if abs(prev[i - n * dc, j - n * dm] + n * self.values[s] - target) < 1e-7 and (
                    n <= self.supply[s]
                ):
                    break
                n += 1
            counts[s] = n
            i -= n * dc
            j -= n * dm
            target -= n * self.values[s] if n else 0
        return tuple(counts)


def solve_master(anchors, supply, shapes, columns):
    s = pywraplp.Solver.CreateSolver("GLOP")
    a_keys = sorted(anchors)
    xs = [s.NumVar(0, s.infinity(), "") for _ in columns]
    zs = [s.NumVar(0, s.infinity(), "") for _ in shapes]
    r = s.NumVar(0, s.infinity(), "")
    arow = {}
    for a in a_keys:
        arow[a] = s.Add(sum(x for x, col in zip(xs, columns) if col[0] == a) == anchors[a])
    frow = []
    for i in range(len(shapes)):
        frow.append(s.Add(sum(col[2][i] * x for x, col in zip(xs, columns) if col[2][i]) + zs[i] == supply[i]))
    rc = s.Add(r >= sum(zs[i] * shapes[i][0] / 1000 for i in range(len(shapes))))
    rm = s.Add(r >= sum(zs[i] * shapes[i][1] / 2048 for i in range(len(shapes))))
    s.Minimize(sum(col[1] * x for x, col in zip(xs, columns)) + r)
    st = s.Solve()
    assert st == pywraplp.Solver.OPTIMAL, st
    return (
        s.Objective().Value(),
        [x.solution_value() for x in xs],
        {a: arow[a].dual_value() for a in a_keys},
        [f.dual_value() for f in frow],
        (rc.dual_value(), rm.dual_value()),
    )


def colgen(anchors, supply, shapes, columns, extra, stats):
    """Column generation to optimality over the columns given (grown in place)."""
    anchors = {a: n for a, n in anchors.items() if n > 0}
    while True:
        obj, x, ya, yf, lam = solve_master(anchors, supply, shapes, columns)
        stats["lp"] += 1
        added = 0
        sizes = {}
        for a in anchors:
            k0 = max(1, math.ceil(max(a[0] / 1000, a[1] / 2048)))
            sizes[a] = range(k0, k0 + extra + 1)
        kmax = max(k for r in sizes.values() for k in r)
        pr = Pricing(shapes, supply, yf, kmax * 1000, kmax * 2048)
        have = set(columns)
        for a in anchors:
            ca, ma = a
            for k in sizes[a]:
                val = pr.best(k * 1000 - ca, k * 2048 - ma)
                stats["pricing"] += 1
                if k - ya[a] - val < -1e-7:
                    col = (a, k, pr.counts(k * 1000 - ca, k * 2048 - ma))
                    if col not in have:
                        have.add(col)
                        columns.append(col)
                        added += 1
        if not added:
            return obj, x, lam


def plan(anchors, supply, shapes, extra):
    stats = {"lp": 0, "pricing": 0}
    columns = []
    # a start: each anchor alone at its smallest size
    for a in anchors:
        k0 = max(1, math.ceil(max(a[0] / 1000, a[1] / 2048)))
        columns.append((a, k0, tuple([0] * len(shapes))))
    t = time.time()
    lp, x, lam = colgen(anchors, supply, shapes, columns, extra, stats)
    t_lp = time.time() - t
    anchors = dict(anchors)
    supply = list(supply)
    taken = 0
    nodes = 0

    def take(col, n):
        nonlocal taken, nodes
        anchors[col[0]] -= n
        for i, c in enumerate(col[2]):
            supply[i] -= c * n
        taken += col[1] * n
        nodes += n

    for col, v in zip(list(columns), x):
        n = math.floor(v + 1e-9)
        if n:
            take(col, n)
    dives = 0
    while sum(anchors.values()) > 0:
        _, x, _ = colgen(anchors, supply, shapes, columns, extra, stats)
        live = [(v, col) for v, col in zip(x, columns) if anchors.get(col[0], 0) > 0 and v > 1e-9]
        live.sort(key=lambda t: -t[0])
        fits = [col for v, col in live if all(c <= s for c, s in zip(col[2], supply))]
        if fits:
            col = fits[0]
        else:
            a = live[0][1][0]
            _, _, ya, yf, _ = solve_master({b: n for b, n in anchors.items() if n > 0}, supply, shapes, columns)
            k0 = max(1, math.ceil(max(a[0] / 1000, a[1] / 2048)))
            pr = Pricing(shapes, supply, yf, (k0 + extra) * 1000, (k0 + extra) * 2048)
            k = min(range(k0, k0 + extra + 1), key=lambda k: k - pr.best(k * 1000 - a[0], k * 2048 - a[1]))
            col = (a, k, pr.counts(k * 1000 - a[0], k * 2048 - a[1]))
            columns.append(col)
            live.append((1.0, col))
        take(col, max(1, math.floor(dict((c, v) for v, c in live)[col] + 1e-9)))
        dives += 1
    rest_c = sum(s * sh[0] for s, sh in zip(supply, shapes)) / 1000
    rest_m = sum(s * sh[1] for s, sh in zip(supply, shapes)) / 2048
    total = taken + math.ceil(max(rest_c, rest_m))
    return lp, total, t_lp, stats, dives, columns, lam, (rest_c, rest_m), nodes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seed", type=int)
    p.add_argument("anchors", type=int)
    p.add_argument("--extra", type=int, default=3, help="sizes above an anchor's smallest that patterns may use")
    args = p.parse_args()
    aa, pool = instance(args.seed, args.anchors, 4 * args.anchors)
    shapes = sorted(pool)
    supply = [pool[s] for s in shapes]
    c = sum(s[0] * n for s, n in list(aa.items()) + list(pool.items())) / 1000
    m = sum(s[1] * n for s, n in list(aa.items()) + list(pool.items())) / 2048
    bound = max(c, m)
    t = time.time()
    lp, total, t_lp, stats, dives, columns, lam, rest, nodes = plan(aa, supply, shapes, args.extra)
    print(
        f"seed {args.seed}, {args.anchors} anchors: bound {bound:.2f} (CPU {c:.1f}, memory {m:.1f}); "
        f"pattern LP {lp:.2f} ({lp / bound:.4f}); plan {total} ({total / bound:.4f}); "
        f"{nodes} anchored nodes, reservoir CPU {rest[0]:.1f} memory {rest[1]:.1f}; "
        f"duals CPU {lam[0]:.3f} memory {lam[1]:.3f}; {len(columns)} columns, {stats['lp']} LPs, "
        f"{stats['pricing']} pricings, {dives} dives; LP {t_lp:.1f} s, all {time.time() - t:.1f} s"
    )


if __name__ == "__main__":
    main()
