"""The repeated failover drill: hakube's defaults against the tutorial's own files, then a soak.

Run as root from the repo, under the lab lock:
  .venv/bin/python bench/drill.py --repeat 5                 # both columns, then a 10-min soak
  .venv/bin/python bench/drill.py --repeat 0 --soak-hour     # the 1-hour lossy soak alone
Uses lab "drill" on 10.126.0.0/24 unless --name/--subnet say otherwise (brought up and converged
if needed); `--down` removes it at the end. Prints median (min-max) of every figure for both
columns, then the soak with both cores busy and --loss random packet loss on every lab host
(hakube defaults), beside the same probe against one LB host's own address (the network's
share). Timelines and raw probe logs go to --out.

--modes also drills the endpoint modes without a VIP, each on its own lab (3 control planes and
1 worker; NAMEc for cloud-lb on the next /24, NAMEl for local-lb on the one after): the probe
runs inside the worker's namespace, through the LAB-ONLY balancer host (cloud-lb) or the worker's
own HAProxy (local-lb), and their columns sit beside vip's; scenarios that only mean something
with a VIP are skipped and listed under the table.
  .venv/bin/python bench/drill.py --repeat 3 --soak-seconds 0 --modes cloud-lb,local-lb \
      --scenarios apiserver-down,host-down,etcd-member-down \
      --mode-lab cloud-lb:hkc1:10.123.233.0/24 --mode-lab local-lb:hkc2:10.123.234.0/24

--preemption drills keepalived's preemption on and off instead of the tutorial column (vip
only), interleaved run by run so both see the same load: restore (host-down's owner powered on
again) and heal (isolate's cable back) are where they differ.
  .venv/bin/python bench/drill.py --repeat 5 --soak-seconds 0 --preemption \
      --scenarios host-down,isolate --name hk12x --subnet 10.123.247.0/24

--lock FILE takes an flock on FILE (e.g. the machine's shared lab lock) around each lab bring-up,
reconfiguration and scenario run, and releases it between them, so that a long bench on a shared
machine never holds the lab for more than one run at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import apply
from hakube_lab import Lab, destroy
from hakube_lab.addressing import LabError
from hakube_lab.demo import SKIPPED
from hakube_lab.drill.scenarios import SCENARIOS, Settings
from hakube_lab.drill.workflow import (
    DEFAULTS,
    DrillPlan,
    DrillReport,
    figures_table,
    run_comparison,
    run_drill,
    run_preemption,
)
from hakube_lab.faults import parse_loss
from hakube_lab.standin import prepare_standins

NAME = "drill"
SUBNET = "10.126.0.0/24"
HOUR = 3600.0


MODES = ("vip", "cloud-lb", "local-lb")
#: Lab name suffix and /24 offset from --subnet of the labs without a VIP.
OTHER_LABS = {"cloud-lb": ("c", 1), "local-lb": ("l", 2)}


def lock_holder(path: Path | None) -> Callable[[], contextlib.AbstractContextManager[object]]:
    """What `DrillPlan.hold` takes: an exclusive flock on `path` for each block (or nothing)."""
    if path is None:
        return contextlib.nullcontext

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the other users; the kernel frees it
            yield
        finally:
            os.close(fd)

    return hold


def converge(lab: Lab, say: Callable[[str], None]) -> tuple[Cluster, StateDir] | None:
    """Up, stand-ins, apply (Kubernetes phases skipped); None when apply failed."""
    lab.up(log=lambda m: say(f"lab {lab.name}: {m}"))
    cluster = load_cluster_file(lab.cluster_file).cluster
    state = StateDir(cluster.name)
    asyncio.run(prepare_standins(cluster, state))
    res = asyncio.run(apply(cluster, state=state, skip=SKIPPED))
    if not res.ok:
        say(f"[red]apply on lab {lab.name} failed: {res.failures}[/]")
        return None
    return cluster, state


def other_lab(name: str, subnet: str, mode: str, given: dict[str, tuple[str, str]]) -> Lab:
    """The lab of a mode without a VIP: as `--mode-lab` names it, else derived from vip's."""
    if mode in given:
        name, subnet = given[mode]
        return Lab.create(name, 3, 1, subnet, endpoint_mode=mode)
    suffix, offset = OTHER_LABS[mode]
    net = ipaddress.IPv4Network(subnet)
    shifted = ipaddress.IPv4Network((int(net.network_address) + offset * 256, net.prefixlen))
    return Lab.create(f"{name}{suffix}", 3, 1, str(shifted), endpoint_mode=mode)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--name", default=NAME)
    p.add_argument("--subnet", default=SUBNET)
    p.add_argument("--repeat", type=int, default=5, help="runs per scenario (0: soak only)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--soak-seconds", type=float, default=600.0, help="0: no soak")
    p.add_argument("--soak-hour", action="store_true", help=f"soak {HOUR:.0f} s")
    p.add_argument("--loss", default="2%", help="loss on every lab host during the soak (0: none)")
    p.add_argument("--out", type=Path, default=Path("/tmp/hakube-drill-bench"))
    p.add_argument("--down", action="store_true", help="remove the labs at the end")
    p.add_argument("--modes", default="vip", help=f"endpoint modes to drill, of {','.join(MODES)}")
    p.add_argument(
        "--mode-lab",
        action="append",
        default=[],
        metavar="MODE:NAME:SUBNET",
        help="the lab for cloud-lb or local-lb (default: derived from --name/--subnet)",
    )
    p.add_argument("--lock", type=Path, help="flock this file around each run, not longer")
    p.add_argument(
        "--preemption",
        action="store_true",
        help="vip: preempt vs nopreempt, interleaved, instead of defaults vs the tutorial",
    )
    a = p.parse_args(argv)
    hold = lock_holder(a.lock)
    try:
        loss = 0.0 if a.loss.strip().rstrip("%") in ("0", "0.0") else parse_loss(a.loss)
    except LabError as e:
        p.error(str(e))
    soak_seconds = HOUR if a.soak_hour else a.soak_seconds
    modes = [m for m in a.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes {a.modes!r}: use a comma-separated list of {', '.join(MODES)}")
    given: dict[str, tuple[str, str]] = {}
    for spec in a.mode_lab:
        parts = spec.split(":")
        if len(parts) != 3 or parts[0] not in OTHER_LABS:
            p.error(
                f"--mode-lab {spec!r}: use MODE:NAME:SUBNET, MODE one of {', '.join(OTHER_LABS)}"
            )
        given[parts[0]] = (parts[1], parts[2])
    console = Console()
    say = console.print
    os.environ.setdefault("HAKUBE_STATE_DIR", f"/tmp/{a.name}-state")
    lab = Lab.create(a.name, 3, 0, a.subnet)
    others = [other_lab(a.name, a.subnet, m, given) for m in modes if m != "vip"]
    scenarios = [s for s in a.scenarios.split(",") if s]
    reports: list[DrillReport] = []
    soak_seconds = soak_seconds if "vip" in modes else 0.0
    try:
        if "vip" in modes:
            with hold():
                converged = converge(lab, say)
            if converged is None:
                return 1
            cluster, state = converged
            if a.repeat > 0:
                plan = DrillPlan(scenarios, a.out, repeat=a.repeat, log=say, hold=hold)
                compare = run_preemption if a.preemption else run_comparison
                reports = compare(cluster, lab, state, plan)
        for other in others:
            with hold():
                done = converge(other, say)
            if done is None:
                return 1
            if a.repeat > 0:
                plan = DrillPlan(
                    scenarios, a.out, repeat=a.repeat, state=done[1], log=say, hold=hold
                )
                reports.append(run_drill(done[0], other, plan, config=other.plan.endpoint_mode))
            if a.down:
                with hold():
                    destroy(other.name)
        if reports:
            console.print(figures_table(reports))
        soak = None
        if soak_seconds > 0:
            soak_plan = DrillPlan(["soak"], a.out / "soak", soak_seconds=soak_seconds, state=state,
                                  settings=Settings(soak_loss=loss), log=say,
                                  hold=hold)  # fmt: skip
            soak = run_drill(cluster, lab, soak_plan, config=DEFAULTS)
            for m in soak.runs:
                total = m.ok + m.failed
                beside = (
                    f"; own address of {cluster.lb_hosts[0].name}: failed "
                    f"{m.direct_failed}/{m.direct_total}"
                    if m.direct_total is not None
                    else ""
                )
                say(f"soak {soak_seconds:.0f} s, 2 busy loops, loss {loss:.1%}: VIP moves "
                    f"{m.vip_moves}, failed {m.failed}/{total}{beside}, "
                    f"longest gap {m.gap_s:.3f} s")  # fmt: skip
        body = {"reports": [r.as_dict() for r in reports],
                "soak": soak.as_dict() if soak else None}  # fmt: skip
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "bench.json").write_text(json.dumps(body, indent=2) + "\n")
        say(f"figures: {a.out / 'bench.json'}; timelines under {a.out}")
        return 0 if all(r.ok for r in reports) and (soak is None or soak.ok) else 1
    finally:
        if a.down:
            for each in [lab, *others]:
                with hold():
                    destroy(each.name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
