"""Wall time of `hakube status` on a 5-host lab (3 control-plane + 2 workers), target <= 1 s.

Run as root: `python bench/status.py [runs]`. Prints the library call (connect + one round trip
per host + judging) and the whole CLI process (Python start-up included), min/median/max, and
the machine's load average (the lab shares its cores with everything else running). Kubernetes
phases are skipped (the lab cannot install kubeadm); the LAB-ONLY apiserver stand-in serves
/readyz. The lab is torn down.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import apply
from hakube.workflows.status import collect
from hakube_lab import running_lab
from hakube_lab.demo import SKIPPED
from hakube_lab.standin import prepare_standins


async def converge(cluster: Cluster, state: StateDir) -> None:
    await prepare_standins(cluster, state)
    result = await apply(cluster, state=state, skip=SKIPPED)
    assert result.ok, result.failures


def figures(name: str, values: list[float]) -> str:
    return (
        f"{name:<28} min {min(values):5.2f} s  median {statistics.median(values):5.2f} s  "
        f"max {max(values):5.2f} s  ({len(values)} runs)"
    )


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory() as d, running_lab("hks1", 3, 2, "10.123.222.0/24") as lab:
        cluster = load_cluster_file(lab.cluster_file).cluster
        state = StateDir(cluster.name, root=Path(d))
        asyncio.run(converge(cluster, state))
        lib: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            report = asyncio.run(collect(cluster, state))
            lib.append(time.perf_counter() - t0)
            assert report.healthy, report.problems
        cli: list[float] = []
        # Bytecode caching on, as for an installed hakube, and one untimed run to write it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["HAKUBE_STATE_DIR"] = d
        argv = [sys.executable, "-m", "hakube.cli", "status", "-f", str(lab.cluster_file),
                "-o", "json"]  # fmt: skip
        subprocess.run(argv, capture_output=True, env=env, check=False)
        for _ in range(runs):
            t0 = time.perf_counter()
            res = subprocess.run(argv, capture_output=True, env=env, check=False)
            cli.append(time.perf_counter() - t0)
            assert res.returncode == 0, res.stdout
        print(f"status on a 5-host lab; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs")  # fmt: skip
        print(figures("library (collect)", lib))
        print(figures("CLI process (hakube status)", cli))


if __name__ == "__main__":
    main()
