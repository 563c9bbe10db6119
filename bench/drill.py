"""The repeated failover drill: hakube's defaults against the tutorial's keepalived settings.

Run as root from the repo: `.venv/bin/python bench/drill.py --repeat 5 --soak-seconds 600`.
Uses lab "drill" on 10.126.0.0/24 (brought up and converged if needed); `--down` removes it at
the end. Prints median (min-max) of every figure for both settings, then the loaded soak (hakube
defaults). Timelines and raw probe logs go to --out.
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
from hakube_lab.demo import SKIPPED, prepare_standins
from hakube_lab.drill.scenarios import SCENARIOS
from hakube_lab.drill.workflow import (
    DEFAULTS,
    figures_table,
    run_comparison,
    run_drill,
)

NAME = "drill"
SUBNET = "10.126.0.0/24"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--soak-seconds", type=float, default=600.0, help="0: no soak")
    p.add_argument("--out", type=Path, default=Path("/tmp/hakube-drill-bench"))
    p.add_argument("--down", action="store_true", help="remove the lab at the end")
    a = p.parse_args(argv)
    console = Console()
    say = console.print
    os.environ.setdefault("HAKUBE_STATE_DIR", "/tmp/drill-state")
    lab = Lab.create(NAME, 3, 0, SUBNET)
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
        reports = run_comparison(cluster, lab, state, scenarios=scenarios, out_dir=a.out,
                                 repeat=a.repeat, log=say)  # fmt: skip
        console.print(figures_table(reports))
        soak = None
        if a.soak_seconds > 0:
            soak = run_drill(cluster, lab, scenarios=["soak"], out_dir=a.out / "soak",
                             soak_seconds=a.soak_seconds, config=DEFAULTS, state=state,
                             log=say)  # fmt: skip
            for m in soak.runs:
                total = m.ok + m.failed
                say(f"soak {a.soak_seconds:.0f} s, 2 busy loops: VIP moves {m.vip_moves}, "
                    f"failed {m.failed}/{total}, longest gap {m.gap_s:.3f} s")  # fmt: skip
        body = {"reports": [r.as_dict() for r in reports],
                "soak": soak.as_dict() if soak else None}  # fmt: skip
        (a.out / "bench.json").write_text(json.dumps(body, indent=2) + "\n")
        say(f"figures: {a.out / 'bench.json'}; timelines under {a.out}")
        return 0 if all(r.ok for r in reports) and (soak is None or soak.ok) else 1
    finally:
        if a.down:
            destroy(NAME)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
