"""Wall time of `hakube status` on a 5-host lab (3 control-plane + 2 workers), target <= 1 s.

Run as root: `python bench/status.py [runs]`. Prints the library call (connect + one round trip
per host + judging) and the whole CLI process (Python start-up included), min/median/max, the
processes' CPU time, the CPU the lab's hosts spend on a round (they run on the same cores as
hakube, so a round waits for it), the idle lab's own CPU, and the machine's load average. It
measures after `--settle` seconds (30) past converging. Kubernetes phases are skipped (the lab
cannot install kubeadm); the LAB-ONLY apiserver stand-in serves /readyz. The lab is torn down.

Before/after a change: `python bench/status.py 10 --src OLD/src NEW/src` runs the CLI process of
each tree in turn on the SAME lab (two bring-ups of one tree differed by more than most
changes); the library figure is this tree's, in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from startup import command, run_once

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


def machine_cpu() -> float:
    """CPU seconds every process on the machine has spent (/proc/stat: not idle, not iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def figures(name: str, values: list[float], cpu: list[float] | None = None) -> str:
    spent = f", CPU median {statistics.median(cpu):5.2f} s" if cpu else ""
    return (
        f"{name:<28} min {min(values):5.2f} s  median {statistics.median(values):5.2f} s  "
        f"max {max(values):5.2f} s{spent}  ({len(values)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="?", type=int, default=10)
    parser.add_argument("--src", nargs="+", default=[None], metavar="DIR")
    parser.add_argument("--settle", type=float, default=30.0, metavar="SECONDS",
                        help="wait after converging, before measuring (default 30)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d, running_lab("hks1", 3, 2, "10.123.222.0/24") as lab:
        cluster = load_cluster_file(lab.cluster_file).cluster
        state = StateDir(cluster.name, root=Path(d))
        asyncio.run(converge(cluster, state))
        print(f"lab up and converged; load average {os.getloadavg()[0]:.1f}", flush=True)
        # Right after converging the lab keeps busy for a while (units settling, etcd's first
        # compactions): measured then, a status waits on that, not on the cluster it reads.
        time.sleep(args.settle)
        before = machine_cpu()
        time.sleep(2)
        idle = (machine_cpu() - before) / 2
        lib: list[float] = []
        hosts: list[float] = []
        for _ in range(args.runs):
            t0, own, before = time.perf_counter(), time.process_time(), machine_cpu()
            report = asyncio.run(collect(cluster, state))
            lib.append(time.perf_counter() - t0)
            mine = time.process_time() - own
            hosts.append(machine_cpu() - before - mine - idle * lib[-1])
            assert report.healthy, report.problems
        # Bytecode caching on, as for an installed hakube, and one untimed run each to write it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["HAKUBE_STATE_DIR"] = d
        words = ["status", "-f", str(lab.cluster_file), "-o", "json"]
        argvs = [[*command(None, src), *words] for src in args.src]
        for argv in argvs:
            subprocess.run(argv, capture_output=True, env=env, check=False)
        cli: list[list[tuple[float, float]]] = [[] for _ in argvs]
        for _ in range(args.runs):
            for i, argv in enumerate(argvs):
                cli[i].append(run_once(argv, env))
        print(f"status on a 5-host lab; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs")  # fmt: skip
        print(figures("library (collect)", lib))
        # The lab's hosts share this machine's cores with hakube: their part of a round (sshd
        # accepting the connection, the status script) is CPU the client waits for.
        print(f"{'':28} hosts' CPU per round: median {statistics.median(hosts):5.2f} s "
              f"(sshd, the status script; the idle lab: {idle:.2f} CPU-s/s)")  # fmt: skip
        for src, runs in zip(args.src, cli, strict=True):
            shown = "CLI process (hakube status)" + (f" [{src}]" if src else "")
            print(figures(shown, [w for w, _ in runs], [c for _, c in runs]))


if __name__ == "__main__":
    main()
