"""Wall time of a first apply and of a no-op re-apply on a 5-host and a 20-host lab.

Run as root: `python bench/apply.py [5 20]`. Kubernetes phases are skipped (the lab cannot
install kubeadm); the LAB-ONLY apiserver stand-in serves /readyz. Every lab is torn down.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Redactor
from hakube.workflows.apply import apply, ssh_transports
from hakube_lab import running_lab
from hakube_lab.standin import install_all

SKIP = ("kubeadm", "cni")


async def standins(cluster: Cluster, state: StateDir) -> None:
    async with ssh_transports(cluster, trust_new_hosts=False, redactor=Redactor()) as (t, e):
        assert not e, e
        await install_all(cluster, state, t)


def one(hosts: int, root: Path) -> tuple[float, list[float], int]:
    workers = hosts - 3
    with running_lab(f"bn{hosts}", 3, workers, f"10.123.{210 + hosts}.0/24") as lab:
        cluster = load_cluster_file(lab.cluster_file).cluster
        state = StateDir(cluster.name, root=root)
        asyncio.run(standins(cluster, state))
        t0 = time.perf_counter()
        first = asyncio.run(apply(cluster, state=state, skip=SKIP))
        first_s = time.perf_counter() - t0
        assert first.ok, first.failures
        noop: list[float] = []
        changes = 0
        for _ in range(5):
            t0 = time.perf_counter()
            again = asyncio.run(apply(cluster, state=state, skip=SKIP))
            noop.append(time.perf_counter() - t0)
            assert again.ok, again.failures
            changes += len(again.changes)
            for c in again.changes:  # a no-op that changes something is a bug: say what
                print(f"  no-op run changed: {c.host} {c.phase}: {c.description}")
        return first_s, noop, changes


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [5, 20]
    print(f"{'hosts':>5} {'first apply (s)':>16} {'no-op median (s)':>17} {'no-op max (s)':>14} "
          f"{'no-op changes':>14}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            first, noop, changes = one(n, Path(d))
            print(f"{n:>5} {first:>16.1f} {statistics.median(noop):>17.2f} {max(noop):>14.2f} "
                  f"{changes:>14}")  # fmt: skip


if __name__ == "__main__":
    main()
