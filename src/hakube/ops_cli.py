"""Day-2 commands (status, join-command, token, etcd snapshot, certs, reset, kubeconfig): a thin
typer shell over `hakube.workflows`; mounted by `hakube.cli`.

Exit codes: 0 ok/healthy, 1 failed/degraded, 2 bad input (nothing changed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hakube.cli_base import (
    FileOpt,
    Output,
    OutputOpt,
    Progress,
    err,
    fail,
    load_or_exit,
    out,
    print_json,
)
from hakube.state import StateDir
from hakube.workflows.ops import OpsError, OpsInputError

WatchOpt = Annotated[
    float, typer.Option("--watch", "-w", help="Repeat every SECONDS until interrupted (0: once).")
]


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(
    file: FileOpt = Path("cluster.yaml"),
    watch: WatchOpt = 0.0,
    output: OutputOpt = Output.TEXT,
) -> None:
    """VIP owner and VRRP states, HAProxy backends, etcd members, certificate expiry, tokens,
    nodes and drift. Changes nothing. Exit 0 healthy, 1 degraded."""
    from hakube.workflows.status import run_status

    if watch < 0:
        fail("--watch must be 0 (once) or a number of seconds", 2)
    cluster = load_or_exit(file, output).cluster
    state = StateDir(cluster.name)
    while True:
        report = run_status(cluster, state)
        if output is Output.JSON:
            print_json(report.as_dict())
        else:
            if watch:
                out.clear()
            print_status(report)
        if not watch:
            break
        time.sleep(watch)
    raise typer.Exit(0 if report.healthy else 1)


def _colour(ok: bool, text: str) -> str:
    return f"[{'green' if ok else 'red'}]{text}[/]"


def print_status(r: object) -> None:
    from hakube.workflows.status import StatusReport

    assert isinstance(r, StatusReport)
    if r.vip:
        owners = ", ".join(r.vip_owners) or "nobody"
        out.print(f"VIP {r.vip} on {_colour(len(r.vip_owners) == 1, owners)}", highlight=False)
    if r.lbs:
        t = Table(title="load balancers", title_justify="left")
        for col in ("host", "VRRP", "priority", "keepalived", "haproxy", "backends"):
            t.add_column(col)
        for lb in r.lbs:
            mine = [b for b in r.backends if b.lb == lb.host]
            up = sum(b.status.startswith("UP") for b in mine)
            prio = "" if lb.priority is None else str(lb.priority)
            if lb.configured_priority is not None and lb.priority != lb.configured_priority:
                prio += f" (configured {lb.configured_priority})"
            t.add_row(
                lb.host,
                lb.vrrp_state or "-",
                prio,
                _colour(lb.keepalived == "active", lb.keepalived),
                _colour(lb.haproxy == "active", lb.haproxy),
                _colour(up == len(mine) and bool(mine), f"{up}/{len(mine)} UP"),
            )
        out.print(t)
    if r.etcd:
        t = Table(title="etcd", title_justify="left")
        for col in ("member", "id", "leader", "learner", "raft index", "revision", "DB", "health"):
            t.add_column(col)
        for m in r.etcd:
            health = "healthy" if m.healthy else (m.error or "unhealthy")
            if m.alarms:
                health += f" alarms: {', '.join(m.alarms)}"
            t.add_row(
                m.name, m.id, "yes" if m.leader else "", "yes" if m.learner else "",
                str(m.raft_index), str(m.revision), f"{m.db_size / 1e6:.1f} MB",
                _colour(m.healthy and not m.alarms, health),
            )  # fmt: skip
        out.print(t)
    if r.certs:
        soonest: dict[str, float] = {}
        for c in r.certs:
            if c.days_left is not None:
                soonest[c.host] = min(soonest.get(c.host, c.days_left), c.days_left)
        out.print(
            "certificates (soonest expiry): "
            + ", ".join(f"{h} {d:.0f} d" for h, d in sorted(soonest.items())),
            highlight=False,
        )
    if r.tokens is not None:
        out.print(
            "bootstrap tokens: " + (", ".join(f"{t.id} ({t.ttl})" for t in r.tokens) or "none"),
            highlight=False,
        )
    if r.nodes is not None:
        out.print(
            "nodes: " + ", ".join(f"{n} {s}" for n, s in sorted(r.nodes.items())), highlight=False
        )
    for n in r.notes:
        out.print(f"[dim]{n}[/]", highlight=False)
    for w in r.warnings:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)
    for p in r.problems:
        out.print(f"[red]problem:[/] {p}", highlight=False)
    verdict = "[green]healthy[/]" if r.healthy else f"[red]degraded ({len(r.problems)})[/]"
    out.print(f"{verdict} in {r.seconds:.2f} s", highlight=False)


def ops_failed(e: OpsError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    if isinstance(e, OpsInputError):
        err.print("Nothing was changed.")
        return typer.Exit(2)
    return typer.Exit(1)


__all__ = ["Progress", "register"]
