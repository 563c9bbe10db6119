"""The lab's commands: `hakube lab ...`, `hakube demo` and `hakube drill`.

`hakube.cli` mounts them through the `hakube.cli_plugins` entry point (`register`), so the
product CLI works without this package and never imports it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hakube.console import (
    Output,
    OutputOpt,
    Progress,
    err,
    fail,
    load_or_exit,
    out,
    print_json,
    print_result,
    split_list,
)
from hakube_lab.addressing import DEFAULT_NAME, DEFAULT_SUBNET, LabError
from hakube_lab.lab import Lab, destroy

app = typer.Typer(no_args_is_help=True, add_completion=False, help="A local lab of real hosts.")


NameOpt = Annotated[str, typer.Option("--name", "-n", help="Lab name (1-8 chars a-z0-9).")]
HostArg = Annotated[str, typer.Argument(help="Host name, e.g. cp1 or w2.")]


def _fail(e: LabError) -> typer.Exit:
    typer.secho(f"hakube lab: {e}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _emit(output: Output, data: dict[str, Any], text: str) -> None:
    if output is Output.JSON:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(text)


def _log(msg: str) -> None:
    typer.echo(f"lab: {msg}", err=True)


def _status_text(st: dict[str, Any]) -> str:
    lines = [
        f"lab {st['name']}: bridge {st['bridge']} ({st['subnet']}), VIP {st['vip']}, "
        f"mirror {st['mirror']}",
        f"{'HOST':<6} {'ROLE':<14} {'ADDRESS':<15} {'STATE':<9} {'LINK':<5} MEM(MB)",
    ]
    for h in st["hosts"]:
        state = "running" if h["running"] else "stopped"
        link = "up" if h["link_up"] else "down"
        lines.append(
            f"{h['name']:<6} {h['role']:<14} {h['address']:<15} {state:<9} {link:<5} "
            f"{h['memory_mb']}"
        )
    return "\n".join(lines)


@app.command()
def up(
    *,
    name: NameOpt = DEFAULT_NAME,
    control_planes: Annotated[int, typer.Option(help="Control-plane hosts cp1..cpN.")] = 3,
    workers: Annotated[int, typer.Option(help="Worker hosts w1..wM.")] = 2,
    spare: Annotated[
        int, typer.Option(help="Spare hosts s1..sK, running but not in the cluster file.")
    ] = 0,
    subnet: Annotated[str, typer.Option(help="Lab subnet (a free private /24 or larger).")] = (
        DEFAULT_SUBNET
    ),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for SSH.")] = 180.0,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Start (or reuse) a lab and wait until every host answers SSH."""
    try:
        lab = Lab.create(name, control_planes, workers, subnet, spares=spare)
        seconds = lab.up(timeout=timeout, log=_log)
        st = lab.status()
    except LabError as e:
        raise _fail(e) from None
    st["ssh_ready_seconds"] = round(seconds, 2)
    text = (
        _status_text(st)
        + f"\n\nall hosts answered SSH {seconds:.1f} s after start.\n"
        + f"cluster file: {lab.cluster_file}\n"
        + f"  hakube apply {lab.cluster_file}\n"
        + f"  hakube lab ssh --name {name} cp1 -- hostname\n"
        + f"  hakube lab down --name {name}"
    )
    _emit(output, st, text)


@app.command()
def status(name: NameOpt = DEFAULT_NAME, output: OutputOpt = Output.TEXT) -> None:
    """Show hosts, links and memory of a lab."""
    try:
        st = Lab.load(name).status()
    except LabError as e:
        raise _fail(e) from None
    _emit(output, st, _status_text(st))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ssh(
    host: HostArg,
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --).")] = None,
    name: NameOpt = DEFAULT_NAME,
) -> None:
    """Open a shell on a host (or run a command) with the lab key, host keys pinned."""
    try:
        lab = Lab.load(name)
        argv = lab.ssh_command(host, command or [], tty=not command and sys.stdin.isatty())
    except LabError as e:
        raise _fail(e) from None
    sys.stdout.flush()
    # Replace this process so the user's terminal talks to ssh directly.
    os.execvp(argv[0], argv)  # noqa: S606


@app.command()
def down(name: NameOpt = DEFAULT_NAME, output: OutputOpt = Output.TEXT) -> None:
    """Remove every process, mount, link, namespace and file of a lab (safe to repeat)."""
    try:
        removed = destroy(name)
    except LabError as e:
        raise _fail(e) from None
    text = f"lab {name}: removed {len(removed)} item(s)" + "".join(f"\n  {r}" for r in removed)
    _emit(output, {"name": name, "removed": removed}, text)


def _fault(name: str, host: str, action: str, output: Output) -> None:
    try:
        lab = Lab.load(name)
        lab.host(host)
        getattr(lab, action)(host)
        st = next(h for h in lab.status()["hosts"] if h["name"] == host)
    except LabError as e:
        raise _fail(e) from None
    _emit(output, st, f"{host}: {action} done (running={st['running']}, link_up={st['link_up']})")


def _fault_command(action: str, summary: str) -> None:
    def command(
        host: HostArg, name: NameOpt = DEFAULT_NAME, output: OutputOpt = Output.TEXT
    ) -> None:
        _fault(name, host, action, output)

    command.__doc__ = summary
    app.command(action)(command)


#: The faults a drill injects, one command each.
for _action, _summary in (
    ("stop", "Power a host off: link down and every process killed at once."),
    ("start", "Boot a stopped host again (its files are kept) and wait for SSH."),
    ("isolate", "Cut a host's link; it keeps running."),
    ("heal", "Restore a host's link."),
):
    _fault_command(_action, _summary)


def demo(
    name: Annotated[str, typer.Option(help="Lab name.")] = "demo",
    workers: Annotated[int, typer.Option(help="Worker hosts.")] = 2,
    drill: Annotated[bool, typer.Option(help="End with a failover drill.")] = True,
    output: OutputOpt = Output.TEXT,
) -> None:
    """The main job on the local lab: lab up, apply, verify (and a failover drill)."""
    from hakube_lab.demo import run_demo

    code = run_demo(name=name, workers=workers, drill=drill, emit=Progress(output),
                    show=lambda r: print_result(r, output), say=out.print)  # fmt: skip
    raise typer.Exit(code)


def drill_cmd(
    lab: Annotated[str, typer.Option("--lab", help="Lab name (the drill breaks lab hosts).")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Cluster file; default: the lab's.")
    ] = None,
    scenarios: Annotated[
        str, typer.Option("--scenarios", "-s", help="Comma-separated, or 'all'.")
    ] = "haproxy-down,keepalived-down,host-down,isolate,apiserver-down,etcd-member-down",
    repeat: Annotated[int, typer.Option(min=1, help="Runs per scenario (min/median/max).")] = 1,
    soak_seconds: Annotated[float, typer.Option(help="Length of the soak scenario.")] = 600.0,
    compare_tutorial: Annotated[
        bool, typer.Option(help="Also drill the tutorial's keepalived settings (apply --only lb).")
    ] = False,
    output_dir: Annotated[Path, typer.Option(help="Timelines (PNG), raw probe logs, JSON.")] = Path(
        "drill-out"
    ),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Break the HA pieces on purpose, measure what a client sees, restore (lab only)."""
    from hakube.state import StateDir
    from hakube_lab.drill.scenarios import ALL, DrillError
    from hakube_lab.drill.workflow import figures_table, run_comparison, run_drill

    try:
        the_lab = Lab.load(lab)
    except LabError as e:
        fail(str(e), 2)
    cluster = load_or_exit(file or the_lab.cluster_file, output).cluster
    state = StateDir(cluster.name)
    names = list(ALL) if scenarios == "all" else split_list(scenarios)
    log = (lambda m: err.print(m, highlight=False)) if output is Output.JSON else out.print
    try:
        if compare_tutorial:
            reports = run_comparison(cluster, the_lab, state, scenarios=names, out_dir=output_dir,
                                     repeat=repeat, soak_seconds=soak_seconds, log=log)  # fmt: skip
        else:
            reports = [run_drill(cluster, the_lab, scenarios=names, out_dir=output_dir,
                                 repeat=repeat, soak_seconds=soak_seconds, state=state,
                                 log=log)]  # fmt: skip
    except DrillError as e:
        fail(str(e), 2)
    if output is Output.JSON:
        print_json({"ok": all(r.ok for r in reports), "output_dir": str(output_dir),
                    "reports": [r.as_dict() for r in reports]})  # fmt: skip
    else:
        out.print(figures_table(reports))
        out.print(f"timelines and raw probe logs: {output_dir}")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def register(product: typer.Typer) -> None:
    """Mount `lab`, `demo` and `drill` on the product CLI (the `hakube.cli_plugins` hook)."""
    product.add_typer(app, name="lab", help="A local lab of real Linux hosts (nspawn).")
    product.command("demo")(demo)
    product.command("drill")(drill_cmd)
