"""The repeated failover drill: hakube's defaults against the tutorial's own files, then a soak.

Run as root from the repo, under the lab lock:
  .venv/bin/python bench/drill.py --repeat 5                 # both columns, then a 10-min soak
  .venv/bin/python bench/drill.py --repeat 0 --soak-hour     # the 1-hour lossy soak alone
Uses lab "drill" on 10.126.0.0/24 unless --name/--subnet say otherwise (brought up and converged
if needed); `--down` removes it at the end. Prints median (min-max) of every figure for both
columns, then the soak with both cores busy and --loss random packet loss on every lab host
(hakube defaults), beside the same probe against one LB host's own address (the network's
share). Timelines and raw probe logs go to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from rich.console import Console

from hakube.spec import load_cluster_file
from hakube.state import StateDir
from hakube.workflows.apply import apply
from hakube_lab import Lab, destroy
from hakube_lab.addressing import LabError
from hakube_lab.demo import SKIPPED
from hakube_lab.drill.scenarios import SCENARIOS, Settings
from hakube_lab.drill.workflow import (
    DEFAULTS,
    DrillPlan,
    figures_table,
    run_comparison,
    run_drill,
)
from hakube_lab.faults import parse_loss
from hakube_lab.standin import prepare_standins

NAME = "drill"
SUBNET = "10.126.0.0/24"
HOUR = 3600.0


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
    p.add_argument("--down", action="store_true", help="remove the lab at the end")
    a = p.parse_args(argv)
    try:
        loss = 0.0 if a.loss.strip().rstrip("%") in ("0", "0.0") else parse_loss(a.loss)
    except LabError as e:
        p.error(str(e))
    soak_seconds = HOUR if a.soak_hour else a.soak_seconds
    console = Console()
    say = console.print
    os.environ.setdefault("HAKUBE_STATE_DIR", f"/tmp/{a.name}-state")
    lab = Lab.create(a.name, 3, 0, a.subnet)
    try:
        lab.up(log=lambda m: say(f"lab: {m}"))
        cluster = load_cluster_file(lab.cluster_file).cluster
        state = StateDir(cluster.name)
        asyncio.run(prepare_standins(cluster, state))
        res = asyncio.run(apply(cluster, state=state, skip=SKIPPED))
        if not res.ok:
            say(f"[red]apply failed: {res.failures}[/]")
            return 1
        scenarios = [s for s in a.scenarios.split(",") if s]
        reports = []
        if a.repeat > 0:
            plan = DrillPlan(scenarios, a.out, repeat=a.repeat, log=say)
            reports = run_comparison(cluster, lab, state, plan)
            console.print(figures_table(reports))
        soak = None
        if soak_seconds > 0:
            soak_plan = DrillPlan(["soak"], a.out / "soak", soak_seconds=soak_seconds, state=state,
                                  settings=Settings(soak_loss=loss), log=say)  # fmt: skip
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
            destroy(a.name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
