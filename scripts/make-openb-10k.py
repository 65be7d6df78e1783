#!/usr/bin/env python3
"""Write a 10,000-pod workload derived from the Alibaba openb trace (stdout, CSV).

Why: the simulator's speed target is "10,000 pods over a simulated week"; the real trace has
8,152 pods. This keeps all of them and adds 1,848 copies of evenly spaced trace pods, each
shifted by a third of the trace span (wrapping around), keeping its duration. Replay with
`--time-scale 21.5 --until 7d` to fit the trace's 3,584 h into one week.

Usage: python3 scripts/make-openb-10k.py > /tmp/openb-10k.csv
"""
import csv
import sys
from pathlib import Path

TRACE = Path(__file__).resolve().parent.parent / "data/workloads/openb_pod_list_default.csv"
TARGET = 10_000

rows = list(csv.DictReader(TRACE.open()))
span = max(int(r["deletion_time"] or r["creation_time"]) for r in rows)
shift = span // 3
extra = TARGET - len(rows)
out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow(["name", "cpu_milli", "memory_mib", "num_gpu", "creation_time", "deletion_time"])
for r in rows:
    out.writerow([r["name"], r["cpu_milli"], r["memory_mib"], r["num_gpu"], r["creation_time"], r["deletion_time"]])
for k in range(extra):
    r = rows[k * len(rows) // extra]
    created = int(r["creation_time"])
    start = (created + shift) % span
    end = "" if not r["deletion_time"] else start + int(r["deletion_time"]) - created
    out.writerow([r["name"] + "-copy", r["cpu_milli"], r["memory_mib"], r["num_gpu"], start, end])
