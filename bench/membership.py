"""Membership under load on the lab, and the time of adding one worker.

Run as root: `python bench/membership.py [--workers N] [--part sequence|replace|add-worker]`
(one part per run keeps each under the shared lab lock's 8 minutes).

1. 3 control planes + 1 worker, external etcd; with the drill's probe at 50 req/s through the
   VIP: add two control planes (5), remove the VIP owner and one other (3), power one off and
   replace it with a new host. Per step: apply time, requests, failed after one retry, longest
   gap, etcd members (min-max) and quorum at every sample, servers per HAProxy, leftovers.
2. On a converged cluster of 3 control planes + N workers (default 1; 16 makes a 20-host lab
   with the spare): the time of one apply that adds one worker, beside the first apply and a
   no-op apply of the same lab.

Kubernetes phases are skipped (the lab cannot install kubeadm); LAB-ONLY apiserver stand-ins
serve /readyz. Every lab is torn down.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path

from hakube.state import StateDir
from hakube_lab import running_lab
from hakube_lab.membership import (
    MembershipRun,
    cluster_with,
    install_standins,
    run_replace,
    run_sequence,
)


def sequence(root: Path, *, replace_only: bool = False) -> None:
    with running_lab("hkm2", 3, 1, "10.123.226.0/24", spares=3) as lab:
        # Each step's figures as JSON the moment it ends: a run cut short keeps what it measured.
        run = MembershipRun(lab, StateDir("hkm2", root=root / "seq"), root / "seq-out",
                            log=lambda m: print(m, flush=True))  # fmt: skip
        figures = run_replace(run) if replace_only else run_sequence(run)
    print(f"{'step':<8} {'apply s':>8} {'requests':>9} {'failed':>7} {'gap s':>6} "
          f"{'etcd members':>13} {'quorum':>7} {'backends exact':>15}  leftovers")  # fmt: skip
    for f in figures:
        d = f.as_dict()
        lo, hi = d["etcd_members_min_max"]
        left = "; ".join(f"{h}: {', '.join(v) or 'none'}" for h, v in f.leftovers.items())
        print(f"{f.step:<8} {f.apply_seconds:>8.1f} {f.requests:>9} {f.failed:>7} "
              f"{f.longest_gap:>6.2f} {f'{lo}-{hi}':>13} {f.quorum_always!s:>7} "
              f"{f.backends_exact!s:>15}  {left or '-'}")  # fmt: skip
        for lb, servers in f.backends.items():
            print(f"         haproxy {lb}: {' '.join(servers)}")
        if f.failed_before_apply:
            print(f"         {f.failed_before_apply} of the failed before apply started")
        for failure in f.failures:
            print(f"         FAILED {failure}")
        for line in f.failed_detail:
            print(f"         failed request {line}")
        for line in f.lb_log:
            print(f"         log {line}")
        p99, slowest = f.latency_p99_max
        print(f"         latency of successful requests: p99 {p99:.3f} s, max {slowest:.3f} s")


def add_worker(root: Path, workers: int) -> None:
    hosts = 3 + workers + 1
    with running_lab("hkm3", 3, workers, "10.123.227.0/24", spares=1) as lab:
        run = MembershipRun(lab, StateDir("hkm3", root=root / "add"), root / "add-out",
                            log=lambda _m: None)  # fmt: skip
        names = [f"w{i}" for i in range(1, workers + 1)]
        before = cluster_with(lab, ["cp1", "cp2", "cp3"], names)
        install_standins(before, run.state, ["cp1", "cp2", "cp3"])
        t0 = time.perf_counter()
        first = run.apply(before)
        first_s = time.perf_counter() - t0
        print(f"{hosts} hosts: first apply {first_s:.1f} s", flush=True)
        t0 = time.perf_counter()
        noop = run.apply(before)
        noop_s = time.perf_counter() - t0
        print(f"{hosts} hosts: no-op apply {noop_s:.1f} s", flush=True)
        after = cluster_with(lab, ["cp1", "cp2", "cp3"], [*names, "s1"])
        t0 = time.perf_counter()
        added = run.apply(after)
        add_s = time.perf_counter() - t0
    for name, r in (("first", first), ("no-op", noop), ("add", added)):
        if not r.ok:
            print(f"  {name} apply FAILED: {r.failures}")
    touched = sorted({c.host for c in added.changes})
    print(f"{hosts} hosts: first apply {first_s:.1f} s, no-op apply {noop_s:.1f} s, "
          f"apply adding worker s1 {add_s:.1f} s ({len(added.changes)} changes on "
          f"{', '.join(touched)})")  # fmt: skip


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1, help="workers of the add-a-worker lab")
    ap.add_argument(
        "--part",
        choices=["all", "sequence", "replace", "add-worker"],
        default="all",
        help="replace: the replace step alone, on 3 control planes",
    )
    args = ap.parse_args()
    # `timeout` (the lab lock's 8 minutes) sends SIGTERM: unwind, so every lab is torn down.
    signal.signal(signal.SIGTERM, _stop)
    with tempfile.TemporaryDirectory() as d:
        if args.part in ("all", "sequence", "replace"):
            sequence(Path(d), replace_only=args.part == "replace")
        if args.part in ("all", "add-worker"):
            add_worker(Path(d), args.workers)


if __name__ == "__main__":
    main()
