#!/usr/bin/env python3
"""Time from process start to ready-for-invocation of each function binary (local, no AWS).

Build first: cargo build --release -p pod-pending -p spot-interruption -p state-change -p consolidation
Then:        python3 scripts/cold-start.py [FUNCTION...]

Starts each binary 10 times with a valid configuration (NodePools from examples/nodepools.yaml,
cluster endpoint given, no cluster access, a runtime API address nothing listens on) and measures
until the "ready" log line, which main prints after configuration, clients and settings are built
and just before it polls the Lambda runtime API. Prints p50/min/max and the binary size.
"""
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = dict(
    os.environ,
    NODEWRIGHT_CLUSTER_NAME="demo",
    AWS_REGION="us-east-1",
    NODEWRIGHT_NODEPOOLS_FILE=str(ROOT / "examples/nodepools.yaml"),
    NODEWRIGHT_CLUSTER_ACCESS="none",
    NODEWRIGHT_CLUSTER_ENDPOINT="https://k8s.example.internal",
    NODEWRIGHT_CLUSTER_CA="LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
    AWS_LAMBDA_RUNTIME_API="127.0.0.1:9",
    AWS_LAMBDA_FUNCTION_NAME="cold-start",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
    AWS_LAMBDA_FUNCTION_VERSION="1",
    AWS_LAMBDA_LOG_STREAM_NAME="local",
    AWS_LAMBDA_LOG_GROUP_NAME="local",
    AWS_ACCESS_KEY_ID="local",
    AWS_SECRET_ACCESS_KEY="local",
    RUST_LOG="info",
)


def main():
    names = sys.argv[1:] or ["pod-pending", "spot-interruption", "state-change", "consolidation"]
    for name in names:
        binary = ROOT / "target/release" / name
        if not binary.exists():
            print(f"{binary} is missing: cargo build --release -p {name}", file=sys.stderr)
            return 2
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            p = subprocess.Popen([binary], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in p.stdout:
                if '"ready"' in line:
                    times.append((time.perf_counter() - t0) * 1000)
                    break
            p.kill()
            p.wait()
        if not times:
            print(f"{name}: never reported ready", file=sys.stderr)
            return 1
        size = binary.stat().st_size / 1048576
        print(
            f"{name}: {size:.1f} MB, start->ready p50 {statistics.median(times):.1f} ms "
            f"(min {min(times):.1f}, max {max(times):.1f}, n={len(times)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
