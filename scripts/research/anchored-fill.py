#!/usr/bin/env python3
"""Research prototype, not part of the product: how close to the bound can nodes that each hold
one hostname anti-affinity pod ("anchored" nodes) be filled, and by what rule? (Issue #23: the
diverse mix's last few per cent are its 4,000 anti-affinity pods; see docs/scheduler.md, "tenth
session".)

The instance is the diverse benchmark's anti-affinity fifth with generic fillers only: `anchors`
pods and 4x as many fillers, each drawn from the benchmark's request lists (CPU 100m-1500m,
memory 100Mi-4Gi), on Karpenter's benchmark types (k vCPU and 2k GiB, price linear in size, so a
plan's cost is its total vCPU). The bound is the linear relaxation: max(total CPU, total memory /
2 GiB) in vCPU.

Two methods, written apart from the packer (they share no code with it):
- `greedy`: anchors largest first; each node picks its size (the three smallest that hold its
  anchor) and its fillers by an exact knapsack over (CPU in 50m steps, memory in MiB), minimising
  price - value(fillers taken) + eps * sum(1 / supply left of each filler's shape), where a
  filler's value is what it would cost in the reservoir of large nodes that takes what the
  anchored nodes leave: (1 - w) * CPU + w * memory / 2 GiB. Among equal states the one with
  fewest pods is kept (`--first-found`: the first found). Then `--sweeps` rounds of coordinate descent: each node gives its fillers
  back and picks again. What is left goes to large nodes (cost: the larger of its CPU and its
  memory / 2 GiB, rounded up).
- `--cpsat SECONDS`: the same instance as a CP-SAT model (one node per anchor with its size and
  filler counts, two large nodes for the rest), Google OR-Tools from scripts/requirements-test.txt.

Usage: scripts/research/anchored-fill.py SEED ANCHORS [--sweeps N] [--w W] [--eps E]
       [--adapt G] [--first-found] [--cpsat SECONDS]
"""

import argparse
import math
import random

CPU = [100, 250, 500, 1000, 1500]
MEM = [100, 256, 512, 1024, 2048, 4096]


def instance(seed, anchors, fillers):
    r = random.Random(seed)
    aa = [(r.choice(CPU), r.choice(MEM)) for _ in range(anchors)]
    pool = {}
    for _ in range(fillers):
        s = (r.choice(CPU), r.choice(MEM))
        pool[s] = pool.get(s, 0) + 1
    return aa, pool


def totals(shapes):
    return (
        sum(c * n for (c, m), n in shapes.items()) / 1000,
        sum(m * n for (c, m), n in shapes.items()) / 2048,
    )


def best_fill(anchor, pool, w, eps, first=False):
    """The size and fillers for one anchored node (see the module doc)."""
    ca, ma = anchor
    shapes = [s for s in sorted(pool) if pool[s] > 0]
    best = None
    k0 = max(1, math.ceil(max(ca / 1000, ma / 2048)))
    for k in range(k0, k0 + 3):
        room_c, room_m = k * 1000 - ca, k * 2048 - ma
        units = room_c // 50
        states = {(0, 0): ()}
        for s in shapes:
            c, m = s
            for _ in range(min(pool[s], units // (c // 50))):
                grown = dict(states)
                for (u, mm), picks in states.items():
                    key = (u + c // 50, mm + m)
                    if key[0] <= units and key[1] <= room_m and (
                        key not in grown or (not first and len(grown[key]) > len(picks) + 1)
                    ):
                        grown[key] = picks + (s,)
                if grown == states:
                    break
                states = grown
        for picks in states.values():
            value = (1 - w) * (ca + sum(p[0] for p in picks)) / 1000 + w * (ma + sum(p[1] for p in picks)) / 2048
            score = k - value + eps * sum(1.0 / pool[p] for p in picks)
            if best is None or score < best[0] - 1e-12:
                best = (score, k, picks)
    return best[1], best[2]


def greedy(aa, pool, sweeps, w, eps, adapt, first, reuse):
    pool = dict(pool)
    order = sorted(range(len(aa)), key=lambda i: -(aa[i][0] / 1000 + aa[i][1] / 2048))
    nodes = [None] * len(aa)

    def price(w):
        if adapt:
            c, m = totals(pool)
            return min(1.0, max(0.0, 0.5 + adapt * (m - c) / (m + c)))
        return w

    cache = {}
    searches = 0
    for i in order:
        hit = cache.get(aa[i])
        need = {}
        for p in hit[1] if hit else ():
            need[p] = need.get(p, 0) + 1
        if hit and hit[2] < reuse and all(pool.get(p, 0) >= n for p, n in need.items()):
            k, picks = hit[0], hit[1]
            cache[aa[i]] = (k, picks, hit[2] + 1)
        else:
            k, picks = best_fill(aa[i], pool, price(w), eps, first)
            searches += 1
            cache[aa[i]] = (k, picks, 0)
        for p in picks:
            pool[p] -= 1
        nodes[i] = (k, picks)
    if reuse:
        print(f"  {searches} searches for {len(aa)} nodes")
    costs = [cost(nodes, pool)]
    for _ in range(sweeps):
        for i in order:
            for p in nodes[i][1]:
                pool[p] += 1
            k, picks = best_fill(aa[i], pool, price(w), eps, first)
            for p in picks:
                pool[p] -= 1
            nodes[i] = (k, picks)
        costs.append(cost(nodes, pool))
    return costs


def cost(nodes, pool):
    c, m = totals(pool)
    return sum(k for k, _ in nodes) + math.ceil(max(c, m))


def cpsat(aa, pool, seconds):
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    shapes = sorted(pool)
    nodes = []
    for j, (ca, ma) in enumerate(aa + [(0, 0)] * 2):
        k = model.NewIntVar(0, 12 if j < len(aa) else 100_000, f"k{j}")
        xs = [model.NewIntVar(0, pool[s], f"x{j}_{i}") for i, s in enumerate(shapes)]
        model.Add(ca + sum(x * s[0] for x, s in zip(xs, shapes)) <= 1000 * k)
        model.Add(ma + sum(x * s[1] for x, s in zip(xs, shapes)) <= 2048 * k)
        nodes.append((k, xs))
    for i, s in enumerate(shapes):
        model.Add(sum(n[1][i] for n in nodes) == pool[s])
    model.Minimize(sum(n[0] for n in nodes))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 2
    status = solver.Solve(model)
    return solver.ObjectiveValue(), solver.BestObjectiveBound(), solver.StatusName(status)


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("seed", type=int)
    a.add_argument("anchors", type=int)
    a.add_argument("--sweeps", type=int, default=0)
    a.add_argument("--w", type=float, default=0.5)
    a.add_argument("--eps", type=float, default=0.1)
    a.add_argument("--adapt", type=float, default=0.0, help="w from the pool's balance, with this gain")
    a.add_argument("--first-found", action="store_true", help="keep the first pick set found per state, not the fewest pods")
    a.add_argument("--reuse", type=int, default=0, help="a node copies the last choice for its anchor shape up to this many times while the pool holds it")
    a.add_argument("--cpsat", type=float, default=0.0, help="also solve with CP-SAT for this many seconds")
    args = a.parse_args()
    aa, pool = instance(args.seed, args.anchors, 4 * args.anchors)
    c, m = totals(pool)
    c += sum(x[0] for x in aa) / 1000
    m += sum(x[1] for x in aa) / 2048
    bound = max(c, m)
    runs = greedy(aa, pool, args.sweeps, args.w, args.eps, args.adapt, args.first_found, args.reuse)
    print(
        f"seed {args.seed}, {args.anchors} anchors: bound {bound:.2f} vCPU (CPU {c:.1f}, memory {m:.1f}); "
        f"greedy {' -> '.join(f'{x} ({x / bound:.4f})' for x in runs)}"
    )
    if args.cpsat > 0:
        best, lower, status = cpsat(aa, pool, args.cpsat)
        print(f"  CP-SAT {args.cpsat:.0f} s: {best:.0f} ({best / bound:.4f}), its bound {lower:.0f}, {status}")


if __name__ == "__main__":
    main()
