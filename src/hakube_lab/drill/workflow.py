"""drill: break the HA pieces on purpose and measure what a client sees.

Each scenario breaks one thing (on the VIP owner, mostly), observes, restores and observes again
while two probe processes record every request and who holds the VIP. `--repeat N` aggregates
min/median/max per figure; `run_comparison` drills the tutorial's own keepalived.conf and
haproxy.cfg against hakube's defaults on the same lab (`apply --only lb` puts the defaults back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hakube.render.haproxy import STATS_SOCKET
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import apply
from hakube_lab.drill.front import VANTAGE_BRIDGE, front_of, inapplicable
from hakube_lab.drill.policy import check_allowed
from hakube_lab.drill.report import FIGURES, RunMetrics, aggregate, fmt_spread
from hakube_lab.drill.runner import Drill
from hakube_lab.drill.scenarios import ALL, SCENARIOS, SOAK, DrillError, Settings, slug
from hakube_lab.drill.tutorial import (
    TUTORIAL_STATS_SOCKET,
    as_drilled,
    install_tutorial,
    with_preempt,
)
from hakube_lab.lab import Lab

Say = Callable[[str], None]

DEFAULTS = "hakube defaults"
TUTORIAL = "tutorial"

#: What answers behind HAProxy in the lab: kube-apiserver never runs here (no Kubernetes
#: binaries), so every figure is measured against the stand-in. Reports say so.
BACKEND = "lab stand-in for kube-apiserver"


@dataclass
class DrillReport:
    config: str
    runs: list[RunMetrics] = field(default_factory=list)
    backend: str = BACKEND
    errors: list[str] = field(default_factory=list)
    endpoint_mode: str = "vip"
    #: Where the client probe ran and what it targeted.
    vantage: str = VANTAGE_BRIDGE
    #: Scenarios asked for that mean nothing in this endpoint mode → why (not run, not faked).
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.invariants_ok for r in self.runs)

    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(r.scenario for r in self.runs))

    def of(self, scenario: str) -> list[RunMetrics]:
        return [r for r in self.runs if r.scenario == scenario]

    def as_dict(self) -> dict[str, Any]:
        summary: dict[str, dict[str, Any]] = {}
        for sc in self.scenarios():
            agg = aggregate(self.of(sc))
            summary[sc] = {k: None if v is None else v.as_dict() for k, v in agg.items()}
            summary[sc]["invariants_ok"] = sum(r.invariants_ok for r in self.of(sc))
            summary[sc]["runs"] = len(self.of(sc))
        return {
            "config": self.config,
            "backend": self.backend,
            "endpoint_mode": self.endpoint_mode,
            "vantage": self.vantage,
            "skipped": self.skipped,
            "ok": self.ok,
            "errors": self.errors,
            "summary": summary,
            "runs": [r.as_dict() for r in self.runs],
        }


def write_ca(state: StateDir, out_dir: Path) -> Path:
    """The cluster CA for the probe, so it checks the server it reached is really ours."""
    path = out_dir / "ca.crt"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(state.cluster_pki().ca.cert_pem)
    return path


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class DrillPlan:
    """What to drill and how often, and where the results go: one drill or a comparison."""

    scenarios: Sequence[str]
    out_dir: Path
    repeat: int = 1
    soak_seconds: float = 600.0
    #: The cluster's state: its CA lets the probe check the server it reached.
    state: StateDir | None = None
    settings: Settings | None = None
    log: Say = _quiet
    #: Held around each run and each reconfiguration, released between them: e.g. a lock that
    #: several users of one machine's lab take in turn (the benches' `--lock`).
    hold: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext


def run_drill(
    cluster: Cluster,
    lab: Lab,
    plan: DrillPlan,
    *,
    config: str = DEFAULTS,
    stats_socket: str = STATS_SOCKET,
) -> DrillReport:
    scenarios, out_dir, state, log = plan.scenarios, plan.out_dir, plan.state, plan.log
    check_allowed(scenarios)
    front = front_of(cluster, lab)
    skipped = inapplicable(front, scenarios)
    runnable = [n for n in scenarios if n not in skipped]
    if not runnable:
        raise DrillError(
            f"no scenario asked for applies to endpoint mode {front.mode}: "
            + "; ".join(f"{n}: {why}" for n, why in skipped.items())
        )
    for name, why in skipped.items():
        log(f"[yellow]{name}: skipped ({why})[/]")
    cafile = write_ca(state, out_dir) if state is not None else None
    drill = Drill(cluster, lab, out_dir, config=config, settings=plan.settings, cafile=cafile,
                  log=log, stats_socket=stats_socket)  # fmt: skip
    report = DrillReport(
        config, endpoint_mode=str(front.mode), vantage=front.vantage, skipped=skipped
    )
    for i in range(1, plan.repeat + 1):
        for name in runnable:
            _run_once(drill, name, i, report, plan)
    _save(report, out_dir)
    return report


def _run_once(drill: Drill, name: str, i: int, report: DrillReport, plan: DrillPlan) -> None:
    """Run #i of one scenario under the plan's hold; its figures or its error into `report`."""
    try:
        with plan.hold():
            m = drill.run(name, i, soak_seconds=plan.soak_seconds)
    except DrillError as e:
        report.errors.append(f"{name} #{i}: {e}")
        plan.log(f"[red]{name} #{i}: {e}[/]")
        return
    report.runs.append(m)
    plan.log(_one_line(m))


def _save(report: DrillReport, out_dir: Path) -> None:
    (out_dir / f"{slug(report.config)}.json").write_text(
        json.dumps(report.as_dict(), indent=2) + "\n"
    )


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _one_line(m: RunMetrics) -> str:
    verdict = "[green]ok[/]" if m.invariants_ok else "[red]" + "; ".join(m.problems) + "[/]"
    return (
        f"    {m.scenario} #{m.run}: gap {_s(m.gap_s)}, detect {_s(m.detect_s)}, "
        f"moved {_s(m.move_s)} → {m.owner_during}, failed {m.failed}/{m.ok + m.failed}, "
        f"recover {_s(m.recover_s)}, back home: {m.moved_back}, restore gap "
        f"{_s(m.gap_restore_s)}, failed on restore {m.failed_restore}, VIP moves {m.vip_moves}, "
        f"load {_load()} — {verdict}"
    )


async def _apply_lb(cluster: Cluster, state: StateDir) -> None:
    result = await apply(cluster, state=state, only=["lb"])
    if not result.ok:
        raise DrillError(
            "apply --only lb failed: "
            + "; ".join(f"{f.host}: {f.message}" for f in result.failures)
        )


def run_comparison(
    cluster: Cluster, lab: Lab, state: StateDir, plan: DrillPlan
) -> list[DrillReport]:
    """hakube's defaults, then the tutorial's own files, on the same lab; defaults restored."""
    if not front_of(cluster, lab).has_vip:
        raise DrillError(
            "--compare-tutorial installs the tutorial's keepalived.conf and haproxy.cfg (a VIP "
            f"in front of HAProxy); endpoint mode {cluster.endpoint.mode} has no VIP: drill it "
            "without --compare-tutorial"
        )
    reports = []
    plan = replace(plan, state=state)
    log = plan.log
    try:
        log(f"[bold]apply --only lb with {DEFAULTS}[/]")
        with plan.hold():
            asyncio.run(_apply_lb(cluster, state))
        reports.append(run_drill(cluster, lab, plan, config=DEFAULTS))
        log("[bold]the tutorial's keepalived.conf and haproxy.cfg on every LB host[/]")
        with plan.hold():
            install_tutorial(cluster, lab, state.secrets())
        reports.append(
            run_drill(
                as_drilled(cluster), lab, plan, config=TUTORIAL, stats_socket=TUTORIAL_STATS_SOCKET
            )
        )
    finally:
        log("[bold]apply --only lb with hakube defaults again[/]")
        with plan.hold():
            asyncio.run(_apply_lb(cluster, state))
    return reports


#: The two columns of `run_preemption`: keepalived's preemption on and off.
PREEMPT = "preempt"
NOPREEMPT = "nopreempt"


def run_preemption(
    cluster: Cluster, lab: Lab, state: StateDir, plan: DrillPlan
) -> list[DrillReport]:
    """The same scenarios with preemption on and with `nopreempt`, interleaved run by run
    (`apply --only lb` with each before its runs), so both columns see the same load: the
    plan's hold is taken once per round (both columns, a few minutes) and the cluster's own
    settings are applied again at the end."""
    if not front_of(cluster, lab).has_vip:
        raise DrillError(
            f"preemption is a keepalived setting; endpoint mode {cluster.endpoint.mode} has no "
            "VIP: drill it without comparing preemption"
        )
    check_allowed(plan.scenarios)
    plan = replace(plan, state=state)
    cafile = write_ca(state, plan.out_dir)
    columns = {name: with_preempt(cluster, name == PREEMPT) for name in (PREEMPT, NOPREEMPT)}
    drills = {name: Drill(c, lab, plan.out_dir, config=name, settings=plan.settings,
                          cafile=cafile, log=plan.log) for name, c in columns.items()}  # fmt: skip
    reports = {name: DrillReport(name) for name in columns}
    held = replace(plan, hold=contextlib.nullcontext)
    try:
        for i in range(1, plan.repeat + 1):
            with plan.hold():
                for name, c in columns.items():
                    plan.log(f"[bold]#{i}: apply --only lb with {name}[/] (load {_load()})")
                    asyncio.run(_apply_lb(c, state))
                    for sc in plan.scenarios:
                        _run_once(drills[name], sc, i, reports[name], held)
    finally:
        plan.log("[bold]apply --only lb with the cluster's own settings again[/]")
        with plan.hold():
            asyncio.run(_apply_lb(cluster, state))
    for r in reports.values():
        _save(r, plan.out_dir)
    return list(reports.values())


def _load() -> str:
    """The 1-minute load average: figures taken beside other work say how busy the machine was."""
    return f"{os.getloadavg()[0]:.1f}"


def figures_table(reports: Sequence[DrillReport]) -> Table:
    """One row per scenario and figure, one column per configuration: median (min-max)."""
    backends = ", ".join(dict.fromkeys(r.backend for r in reports))
    where = sorted({f"endpoint mode {r.endpoint_mode}; probe from {r.vantage}" for r in reports})
    where += sorted({f"skipped in endpoint mode {r.endpoint_mode}: {n} ({why})"
                     for r in reports for n, why in r.skipped.items()})  # fmt: skip
    t = Table(title=f"failover drill: median (min-max) over runs; backend: {backends}",
              caption="\n".join(where))  # fmt: skip
    t.add_column("scenario")
    t.add_column("figure")
    for r in reports:
        t.add_column(r.config, justify="right")
    scenarios = list(dict.fromkeys(s for r in reports for s in r.scenarios()))
    for sc in scenarios:
        aggs = [aggregate(r.of(sc)) for r in reports]
        counts = [len(r.of(sc)) for r in reports]
        first = True
        for name, title, unit in FIGURES:
            if all(a[name] is None for a in aggs):
                continue
            cells = [fmt_spread(a[name], unit, n) for a, n in zip(aggs, counts, strict=True)]
            t.add_row(sc if first else "", title, *cells)
            first = False
        verdicts = []
        for r in reports:
            runs = r.of(sc)
            good = sum(m.invariants_ok for m in runs)
            colour = "green" if runs and good == len(runs) else "red"
            back = sum(m.moved_back for m in runs)
            home = f", back home {back}/{len(runs)}" if r.endpoint_mode == "vip" else ""
            verdicts.append(f"[{colour}]{good}/{len(runs)} ok[/]{home}")
        t.add_row(sc if first else "", "invariants", *verdicts, end_section=True)
    return t


def run_demo_drill(cluster: Cluster, lab: Lab, state: StateDir, say: Say) -> int:
    """`make demo`'s last step: haproxy-down and host-down once each, figures printed."""
    out_dir = state.path / "drill"
    plan = DrillPlan(["haproxy-down", "host-down"], out_dir, state=state, log=say)
    report = run_drill(cluster, lab, plan)
    Console().print(figures_table([report]))
    for m in report.runs:
        say(f"    timeline: {m.png}")
    for e in report.errors:
        say(f"[red]{e}[/]")
    bad = [m for m in report.runs if not m.invariants_ok]
    for m in bad:
        say(f"[red]{m.scenario}: {'; '.join(m.problems)}[/]")
    if report.ok and report.runs:
        say("[green]drill: the VIP moved to a healthy host and the service recovered[/]")
        return 0
    return 1


__all__ = [
    "ALL",
    "DEFAULTS",
    "SCENARIOS",
    "SOAK",
    "TUTORIAL",
    "VANTAGE_BRIDGE",
    "DrillPlan",
    "DrillReport",
    "figures_table",
    "run_comparison",
    "run_demo_drill",
    "run_drill",
    "run_preemption",
]
