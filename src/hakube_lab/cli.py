"""The lab's commands: `hakube lab ...`, `hakube demo` and `hakube drill`.

`hakube.cli` mounts them through the `hakube.cli_plugins` entry point (`register`), so the
product CLI works without this package and never imports it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
from hakube_lab.addressing import AUTO_RANGE, DEFAULT_NAME, LabError, LabInputError

if TYPE_CHECKING:
    from hakube_lab.lab import Lab

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="A local lab of containers (systemd-nspawn) sharing this kernel.",
)


NameOpt = Annotated[str, typer.Option("--name", "-n", help="Lab name (1-8 chars a-z0-9).")]
HostArg = Annotated[str, typer.Argument(help="Host name, e.g. cp1 or w2.")]


def _fail(e: LabError, output: Output = Output.TEXT) -> typer.Exit:
    """Exit 2 for a name that is not there or not allowed (nothing was touched), else 1."""
    code = 2 if isinstance(e, LabInputError) else 1
    if output is Output.JSON:
        print_json({"ok": False, "error": str(e), "exit_code": code})
    else:
        typer.secho(f"hakube lab: {e}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _load(name: str) -> Lab:
    # The lab modules load asyncio and friends: not needed for `hakube --help`.
    from hakube_lab.lab import Lab

    return Lab.load(name)


def _emit(output: Output, data: dict[str, Any], text: str) -> None:
    if output is Output.JSON:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(text)


def _log(msg: str) -> None:
    typer.echo(f"lab: {msg}", err=True)


def _status_text(st: dict[str, Any]) -> str:
    mode = st.get("endpoint_mode", "vip")
    front = {
        "vip": f"VIP {st['vip']}",
        "cloud-lb": f"cloud-lb via LAB-ONLY balancer slb {st.get('slb')}",
        "local-lb": "local-lb (HAProxy on every node, no VIP)",
    }.get(mode, mode)
    lines = [
        f"lab {st['name']}: bridge {st['bridge']} ({st['subnet']}), {front}, mirror {st['mirror']}",
        f"{'HOST':<6} {'ROLE':<14} {'ADDRESS':<15} {'STATE':<9} {'LINK':<5} {'LOSS':<6} MEM(MB)",
    ]
    for h in st["hosts"]:
        state = "running" if h["running"] else "stopped"
        link = "up" if h["link_up"] else "down"
        loss = "-" if h.get("loss") is None else f"{h['loss']:.1%}"
        lines.append(
            f"{h['name']:<6} {h['role']:<14} {h['address']:<15} {state:<9} {link:<5} {loss:<6} "
            f"{h['memory_mb']}"
        )
    return "\n".join(lines)


#: The phases the lab cannot run (no Kubernetes binaries here); `lab up` prints them to skip.
LAB_SKIPS = "kubeadm,cni"


def _standins(lab: Lab) -> list[str]:
    """LAB ONLY: put the apiserver stand-ins on the control-plane hosts (see standin.py)."""
    import asyncio

    from hakube.spec import SpecError, load_cluster_file
    from hakube.state import StateDir
    from hakube.transport.base import TransportError
    from hakube_lab.standin import prepare_standins

    try:
        cluster = load_cluster_file(lab.cluster_file).cluster
    except SpecError as e:
        _log(f"apiserver stand-ins not installed: the lab's cluster file does not validate:\n{e}")
        return []
    try:
        asyncio.run(prepare_standins(cluster, StateDir(cluster.name)))
    except (OSError, RuntimeError, TransportError) as e:
        raise LabError(f"installing the lab-only apiserver stand-ins failed: {e}") from e
    return [h.name for h in cluster.control_planes]


@app.command(
    epilog="Example: hakube lab up --name demo --control-planes 3 --workers 2 "
    "(add --endpoint-mode cloud-lb or local-lb for a lab without a VIP)"
)
def up(
    *,
    name: NameOpt = DEFAULT_NAME,
    control_planes: Annotated[int, typer.Option(help="Control-plane hosts cp1..cpN.")] = 3,
    workers: Annotated[int, typer.Option(help="Worker hosts w1..wM.")] = 2,
    spare: Annotated[
        int, typer.Option(help="Spare hosts s1..sK, running but not in the cluster file.")
    ] = 0,
    subnet: Annotated[
        str | None,
        typer.Option(
            help="Lab subnet (a private /24 or larger). Default: the lab's own if it exists, "
            f"else the first /24 of {AUTO_RANGE} no other lab, address or route uses."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for SSH.")] = 180.0,
    endpoint_mode: Annotated[
        str,
        typer.Option(
            help="How the cluster file reaches the API: vip (keepalived + HAProxy on the "
            "control planes), cloud-lb (an extra host slb: HAProxy in TCP mode as the lab's "
            "model of a cloud balancer such as Alibaba SLB, which cannot hairpin) or local-lb "
            "(HAProxy on every node on 127.0.0.1, no VIP)."
        ),
    ] = "vip",
    output: OutputOpt = Output.TEXT,
) -> None:
    """Start (or reuse) a lab, wait until every host answers SSH, and start the LAB-ONLY
    apiserver stand-ins on its control-plane hosts."""
    from hakube_lab.lab import Lab
    from hakube_lab.lifecycle import choose_subnet
    from hakube_lab.standin import UNIT as STANDIN_UNIT

    try:
        lab = Lab.create(name, control_planes, workers, subnet or choose_subnet(name), spares=spare,
                         endpoint_mode=endpoint_mode)  # fmt: skip
        seconds = lab.up(timeout=timeout, log=_log)
        standins = _standins(lab)
        st = lab.status()
    except LabError as e:
        raise _fail(e, output) from None
    apply_cmd = f"hakube apply -f {shlex.quote(str(lab.cluster_file))} --skip-phases {LAB_SKIPS}"
    st |= {"ssh_ready_seconds": round(seconds, 2), "standins": standins, "apply": apply_cmd}
    lines = [
        _status_text(st),
        "",
        f"all hosts answered SSH {seconds:.1f} s after start.",
    ]
    if lab.plan.slb is not None:
        lines.append(
            f"LAB ONLY: host slb ({lab.plan.slb.address}) models a cloud L4 balancer (HAProxy in "
            "TCP mode, SLB's default checks); an iptables rule on it drops every packet from "
            "the control-plane nodes (no hairpin)."
        )
    if standins:
        lines.append(
            f"LAB ONLY: apiserver stand-ins on {', '.join(standins)} (unit {STANDIN_UNIT}, "
            "alias kube-apiserver: TLS /readyz on :6443, ready only while etcd has quorum; not "
            "Kubernetes)."
        )
    lines += [
        f"cluster file: {lab.cluster_file}",
        f"  {apply_cmd}",
        f"  hakube lab ssh --name {name} cp1 -- hostname",
        f"  hakube lab down --name {name}",
    ]
    _emit(output, st, "\n".join(lines))


@app.command(epilog="Example: hakube lab status --name demo --output json")
def status(name: NameOpt = DEFAULT_NAME, output: OutputOpt = Output.TEXT) -> None:
    """Show hosts, links and memory of a lab."""
    try:
        st = _load(name).status()
    except LabError as e:
        raise _fail(e, output) from None
    _emit(output, st, _status_text(st))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Example: hakube lab ssh --name demo cp1 -- systemctl is-active haproxy",
)
def ssh(
    host: HostArg,
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --).")] = None,
    name: NameOpt = DEFAULT_NAME,
) -> None:
    """Open a shell on a host (or run a command) with the lab key, host keys pinned."""
    try:
        lab = _load(name)
        argv = lab.ssh_command(host, command or [], tty=not command and sys.stdin.isatty())
    except LabError as e:
        raise _fail(e) from None
    sys.stdout.flush()
    # Replace this process so the user's terminal talks to ssh directly.
    os.execvp(argv[0], argv)  # noqa: S606


@app.command(epilog="Example: hakube lab down --name demo")
def down(name: NameOpt = DEFAULT_NAME, output: OutputOpt = Output.TEXT) -> None:
    """Remove every process, mount, link, namespace and file of a lab (safe to repeat)."""
    from hakube_lab.lab import destroy

    try:
        removed = destroy(name)
    except LabError as e:
        raise _fail(e, output) from None
    text = f"lab {name}: removed {len(removed)} item(s)" + "".join(f"\n  {r}" for r in removed)
    _emit(output, {"name": name, "removed": removed}, text)


def _fault(
    name: str, host: str, action: str | Callable[[Lab], None], output: Output, what: str = ""
) -> None:
    try:
        lab = _load(name)
        lab.host(host)
        if callable(action):
            action(lab)
        else:
            getattr(lab, action)(host)
        st = next(h for h in lab.status()["hosts"] if h["name"] == host)
    except LabError as e:
        raise _fail(e, output) from None
    loss = "none" if st.get("loss") is None else f"{st['loss']:.1%}"
    _emit(output, st, f"{host}: {what or action} done (running={st['running']}, "
                      f"link_up={st['link_up']}, loss={loss})")  # fmt: skip


def _fault_command(action: str, summary: str) -> None:
    def command(
        host: HostArg, name: NameOpt = DEFAULT_NAME, output: OutputOpt = Output.TEXT
    ) -> None:
        _fault(name, host, action, output)

    command.__doc__ = summary
    app.command(action, epilog=f"Example: hakube lab {action} --name demo cp1")(command)


#: The faults a drill injects, one command each.
for _action, _summary in (
    ("stop", "Power a host off: link down and every process killed at once."),
    ("start", "Boot a stopped host again (its files are kept) and wait for SSH."),
    ("isolate", "Cut a host's link; it keeps running."),
    ("heal", "Restore a host's link."),
):
    _fault_command(_action, _summary)


@app.command(epilog="Example: hakube lab degrade --name demo cp1 --loss 2%")
def degrade(
    host: HostArg,
    loss: Annotated[
        str, typer.Option(help="Random loss in each direction, e.g. 2% (iptables statistic).")
    ],
    name: NameOpt = DEFAULT_NAME,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Drop a share of the host's packets at random, in and out, until `restore`."""
    try:
        from hakube_lab.faults import parse_loss

        value = parse_loss(loss)
    except LabError as e:
        raise _fail(e, output) from None
    _fault(name, host, lambda lab: lab.degrade(host, value), output, f"degrade {value:.1%}")


@app.command(epilog="Example: hakube lab restore --name demo cp1")
def restore(host: HostArg, name: NameOpt = DEFAULT_NAME, output: OutputOpt = Output.TEXT) -> None:
    """Remove the packet loss `degrade` put on a host."""
    _fault(name, host, lambda lab: lab.restore(host), output, "restore")


def demo(
    name: Annotated[str, typer.Option(help="Lab name.")] = "demo",
    workers: Annotated[int, typer.Option(help="Worker hosts.")] = 2,
    drill: Annotated[bool, typer.Option(help="End with a failover drill.")] = True,
    subnet: Annotated[str | None, typer.Option(help="Lab subnet; default as for `lab up`.")] = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """The main job on the local lab: lab up, apply, verify (and a failover drill)."""
    from hakube_lab.demo import run_demo
    from hakube_lab.lifecycle import choose_subnet

    try:
        chosen = subnet or choose_subnet(name)
    except LabError as e:
        raise _fail(e) from None
    code = run_demo(name=name, workers=workers, drill=drill, subnet=chosen, emit=Progress(output),
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
    retries: Annotated[
        int,
        typer.Option(min=0, max=3, help="Probe retries per request; 0: a client without retry."),
    ] = 1,
    soak_seconds: Annotated[float, typer.Option(help="Length of the soak scenario.")] = 600.0,
    soak_loss: Annotated[
        str | None,
        typer.Option(help="Random packet loss on every lab host during the soak, e.g. 2%."),
    ] = None,
    compare_tutorial: Annotated[
        bool, typer.Option(help="Also drill the tutorial's own keepalived.conf and haproxy.cfg.")
    ] = False,
    output_dir: Annotated[Path, typer.Option(help="Timelines (PNG), raw probe logs, JSON.")] = Path(
        "drill-out"
    ),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Break the HA pieces on purpose, measure what a client sees, restore (lab only)."""
    from hakube_lab.faults import parse_loss

    try:
        loss = parse_loss(soak_loss) if soak_loss else 0.0
        the_lab = _load(lab)
    except LabError as e:
        raise _fail(e, output) from None
    cluster = load_or_exit(file or the_lab.cluster_file, output).cluster
    # Only now, with the lab and the file known good: the drill pulls in matplotlib, which
    # writes its cache under the home directory.
    from hakube.state import StateDir
    from hakube_lab.drill.scenarios import ALL, DrillError, Settings
    from hakube_lab.drill.workflow import DrillPlan, figures_table, run_comparison, run_drill

    settings = Settings(soak_loss=loss, retries=retries)
    state = StateDir(cluster.name)
    names = list(ALL) if scenarios == "all" else split_list(scenarios)
    log = (lambda m: err.print(m, highlight=False)) if output is Output.JSON else out.print
    try:
        plan = DrillPlan(names, output_dir, repeat, soak_seconds, state, settings, log)
        if compare_tutorial:
            reports = run_comparison(cluster, the_lab, state, plan)
        else:
            reports = [run_drill(cluster, the_lab, plan)]
    except DrillError as e:
        fail(str(e), 2, output)
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
    product.add_typer(
        app, name="lab", help="A local lab of containers (systemd-nspawn) sharing this kernel."
    )
    product.command("demo", epilog="Example: hakube demo --name demo --workers 2")(demo)
    product.command(
        "drill", epilog="Example: hakube drill --lab demo -s haproxy-down,host-down --repeat 3"
    )(drill_cmd)
