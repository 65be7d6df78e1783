#!/usr/bin/env python3
"""The independent exact optimum of small batches, for `nodewright bench`'s small-batch table
(issue #23).

Written apart from the scheduler on purpose: it shares no code and no search with the packer, its
column generation or its bounds. It models one batch as a mixed-integer programme and hands it to
Google OR-Tools' CP-SAT solver (pinned in scripts/requirements-test.txt), which either proves the
optimum or reports the best plan and its best bound when its time limit ends.

Model: the batch's identical pods are merged into groups. Every node type may be bought several
times ("copies"); the copy count of a type is capped at what the incumbent's cost could buy
(`cap_cost // price`, sound: more copies would cost more than a plan already known) and at the
pod count. For each copy: a used flag, and pods per group. Each copy's summed requests fit its
type's allocatable in every dimension when used (and nothing when not); every pod is placed; a
type's copies are used in order (symmetry). The objective is the price of the used copies, in
micro-dollars per hour so that it is an integer.

Input (stdin, JSON):
  {"types": [{"name": str, "capacity": [int, ...], "price": float}],
   "batches": [{"pods": [[int, ...], ...], "cap_cost": float}],
   "seconds": float}
Every vector (capacity, pod) lists the same dimensions in the same order.
Output (stdout, JSON): one object per batch, in order:
  {"optimum": float | null, "bound": float, "proven": bool, "seconds": float,
   "nodes": [type name of each node of the best plan]}
"""

import json
import sys
import time
from collections import Counter

from ortools.sat.python import cp_model

SCALE = 1_000_000


def solve(types, pods, cap_cost, seconds):
    groups = sorted(Counter(tuple(p) for p in pods).items())
    dims = len(types[0]["capacity"])
    prices = [round(t["price"] * SCALE) for t in types]
    model = cp_model.CpModel()
    used_terms = []
    copy_vars = []
    placed = {g: [] for g in range(len(groups))}
    budget = round(cap_cost * SCALE) if cap_cost else None
    for ti, t in enumerate(types):
        cap = t["capacity"]
        fits = []
        for gi, (req, count) in enumerate(groups):
            per_node = min(
                (cap[d] // req[d] for d in range(dims) if req[d] > 0), default=count
            )
            fits.append(min(per_node, count))
        if not any(fits):
            continue
        copies = len(pods)
        if budget is not None and prices[ti] > 0:
            copies = min(copies, budget // prices[ti])
        # A node of this type never needs to exist more often than there are pods it could hold.
        copies = min(copies, sum(c for (_, c), f in zip(groups, fits) if f > 0))
        previous = None
        for k in range(copies):
            used = model.NewBoolVar(f"u_{ti}_{k}")
            copy_vars.append((t["name"], used))
            counts = []
            for gi, f in enumerate(fits):
                if f == 0:
                    continue
                n = model.NewIntVar(0, f, f"n_{ti}_{k}_{gi}")
                model.Add(n <= f * used)
                counts.append((gi, n))
                placed[gi].append(n)
            for d in range(dims):
                terms = [groups[gi][0][d] * n for gi, n in counts if groups[gi][0][d] > 0]
                if terms:
                    model.Add(sum(terms) <= cap[d] * used)
            if previous is not None:
                model.AddImplication(used, previous)
            previous = used
            used_terms.append(prices[ti] * used)
    for gi, (_, count) in enumerate(groups):
        if not placed[gi]:
            return {"optimum": None, "bound": 0.0, "proven": False, "seconds": 0.0}
        model.Add(sum(placed[gi]) == count)
    model.Minimize(sum(used_terms))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = 1
    start = time.monotonic()
    status = solver.Solve(model)
    took = time.monotonic() - start
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {"optimum": None, "bound": 0.0, "proven": False, "seconds": took}
    return {
        "optimum": solver.ObjectiveValue() / SCALE,
        "bound": solver.BestObjectiveBound() / SCALE,
        "proven": status == cp_model.OPTIMAL,
        "seconds": took,
        "nodes": sorted(name for name, used in copy_vars if solver.Value(used)),
    }


def main():
    problem = json.load(sys.stdin)
    types = problem["types"]
    seconds = float(problem.get("seconds", 10.0))
    out = [solve(types, b["pods"], b.get("cap_cost"), seconds) for b in problem["batches"]]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
