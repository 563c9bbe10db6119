"""Time validate + plan on a 100-host cluster file (no host contacted): `python bench/plan.py`."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hakube.spec import load_cluster_file
from hakube.workflows.plan import build_plan


def cluster_doc(n: int) -> dict[str, object]:
    hosts = [
        {
            "name": f"node{i:03d}",
            "address": f"10.20.{i // 200}.{i % 200 + 10}",
            "roles": ["control-plane"] if i < 3 else ["worker"],
        }
        for i in range(n)
    ]
    return {
        "apiVersion": "hakube/v1alpha1",
        "kind": "Cluster",
        "name": "bench",
        "hosts": hosts,
        "endpoint": {"mode": "vip", "vip": "10.20.0.5"},
        "network": {"host_subnet": "10.20.0.0/16"},
        "etcd": {"topology": "external"},
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cluster.yaml"
        path.write_text(yaml.safe_dump(cluster_doc(n)))
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            plan = build_plan(load_cluster_file(path).cluster)
            runs.append(time.perf_counter() - t0)
        files = sum(len(p.files) for h in plan.hosts for p in h.phases)
        print(f"in-process validate+plan, {n} hosts ({files} files): "
              f"median {statistics.median(runs):.3f} s, min {min(runs):.3f} s")  # fmt: skip
        cli = Path(sys.executable).with_name("hakube")
        t0 = time.perf_counter()
        subprocess.run([cli, "plan", "-f", path, "--output", "json"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        print(f"`hakube plan -f` ({n} hosts, whole process): {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
