"""Command line: a thin typer shell over the hakube library.

Every command that reports something also offers `--output json`. Bad input exits 2 with every
problem listed; a failed run exits 1.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from hakube.phases.base import Event, EventKind
from hakube.phases.verify import VerifyReport
from hakube.spec import Loaded, Severity, SpecError, load_cluster_file
from hakube.spec.model import Cluster
from hakube.workflows.apply import ApplyResult

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Build and run highly available Kubernetes clusters on plain Linux hosts over SSH.",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


FileOpt = Annotated[
    Path, typer.Option("--file", "-f", help="Cluster file (YAML).", show_default=True)
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def load_or_exit(path: Path, output: Output = Output.TEXT) -> Loaded:
    try:
        loaded = load_cluster_file(path)
    except SpecError as e:
        if output is Output.JSON:
            print_json(
                {
                    "valid": False,
                    "file": str(path),
                    "problems": [_problem_json(p) for p in e.problems],
                }
            )
        else:
            errors = [p for p in e.problems if p.severity is Severity.ERROR]
            err.print(f"[bold red]{path}: {len(errors)} problem(s)[/]", highlight=False)
            for p in e.problems:
                colour = "red" if p.severity is Severity.ERROR else "yellow"
                err.print(f"[{colour}]{p}[/]", highlight=False)
            err.print("Nothing was changed.")
        raise typer.Exit(2) from None
    if output is Output.TEXT:
        for w in loaded.warnings:
            err.print(f"[yellow]{w}[/]", highlight=False)
    return loaded


def _problem_json(p: Any) -> dict[str, Any]:
    return {
        "path": p.path,
        "line": p.line,
        "severity": p.severity.value,
        "message": p.message,
        "hint": p.hint,
    }


@app.command()
def schema() -> None:
    """Print the JSON Schema of the cluster file (for editors and CI)."""
    print_json(Cluster.model_json_schema(by_alias=True))


@app.command()
def validate(
    file: FileOpt = Path("cluster.yaml"),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Check a cluster file; list every problem with its field, line and fix."""
    loaded = load_or_exit(file, output)
    c = loaded.cluster
    if output is Output.JSON:
        print_json(
            {
                "valid": True,
                "file": str(file),
                "problems": [_problem_json(p) for p in loaded.warnings],
            }
        )
        return
    out.print(
        f"[green]{file}: valid[/] - cluster {c.name!r}, {len(c.control_planes)} control-plane, "
        f"{len(c.workers)} worker, endpoint {c.endpoint.mode.value} {c.control_plane_endpoint}",
        highlight=False,
    )


@app.command()
def render(
    file: FileOpt = Path("cluster.yaml"),
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Directory to write <host>/<path> into.")
    ] = Path("render-out"),
) -> None:
    """Write every host's files under DIR/<host>/ (secrets from the state dir, 0600)."""
    from hakube.workflows.plan import render_to_dir

    loaded = load_or_exit(file)
    written = render_to_dir(loaded.cluster, out_dir)
    out.print(f"wrote {written} files under {out_dir}/", highlight=False)


@app.command()
def plan(
    file: FileOpt = Path("cluster.yaml"),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Show, per host, the phases `apply` would run and the files it would write. No host is
    contacted."""
    from hakube.workflows.plan import build_plan

    loaded = load_or_exit(file, output)
    p = build_plan(loaded.cluster)
    if output is Output.JSON:
        print_json(p.as_dict())
        return
    c = loaded.cluster
    out.print(
        f"[bold]{c.name}[/]: endpoint {c.endpoint.mode.value} → {c.control_plane_endpoint}, "
        f"Kubernetes {c.kubernetes.version} (kubeadm {c.kubernetes.kubeadm_api.value}), "
        f"etcd {c.etcd.topology.value}",
        highlight=False,
    )
    for hp in p.hosts:
        t = Table(title=f"{hp.host} ({hp.address}) - {', '.join(hp.roles)}", title_justify="left")
        t.add_column("phase", style="cyan", no_wrap=True)
        t.add_column("what it does")
        t.add_column("files", style="green", overflow="fold")
        for ph in hp.phases:
            t.add_row(ph.name, ph.summary, "\n".join(f"{f.path} ({f.mode:o})" for f in ph.files))
        out.print(t)
        if hp.secrets_sent:
            out.print(
                f"  secret files sent to {hp.host}: {', '.join(hp.secrets_sent)}", highlight=False
            )
    if p.skipped:
        out.print(f"phases not applicable: {', '.join(p.skipped)}", highlight=False)


class Progress:
    """Live progress as text lines (host-prefixed, k0sctl style) or a JSON event stream."""

    def __init__(self, output: Output) -> None:
        self.output = output

    def __call__(self, e: Event) -> None:
        if self.output is Output.JSON:
            sys.stdout.write(json.dumps(e.as_dict()) + "\n")
            sys.stdout.flush()
            return
        k = e.kind
        if k is EventKind.PHASE_START:
            hosts = e.data.get("hosts")
            suffix = f" on {', '.join(hosts)}" if hosts else ""
            err.print(f"[bold cyan]==> {e.phase}[/]{suffix}", highlight=False)
        elif k in (EventKind.RESUME, EventKind.MEMBERSHIP):
            err.print(f"[yellow]{e.message}[/]", highlight=False)
        elif k is EventKind.CHANGE:
            err.print(f"    [green]{e.host}[/]: {e.message}", highlight=False)
        elif k is EventKind.HOST_FAILED:
            err.print(
                f"    [bold red]{e.host} FAILED[/] in {e.phase}:\n{e.message}", highlight=False
            )
        elif k is EventKind.PHASE_DONE and e.data.get("changes") == 0:
            err.print("    no change", style="dim")


def print_report(report: VerifyReport | None) -> None:
    if report is None:
        return
    t = Table(title="verify", title_justify="left")
    t.add_column("check", style="cyan")
    t.add_column("result")
    if report.vip:
        owners = ", ".join(report.vip_owners) or "nobody"
        t.add_row("VIP owner", f"{report.vip} on {owners}")
    for b in report.backends:
        colour = "green" if b.status.startswith("UP") else "red"
        t.add_row(f"haproxy {b.lb} → {b.server}", f"[{colour}]{b.status}[/] ({b.check})")
    if report.etcd_members:
        t.add_row(
            "etcd members",
            f"{len(report.etcd_members)}: {', '.join(report.etcd_members)}; "
            f"{len(report.etcd_healthy)} healthy",
        )
    t.add_row("kubernetes", report.kubernetes)
    for node, st in sorted(report.nodes.items()):
        t.add_row(f"node {node}", st)
    for p in report.problems:
        t.add_row("[red]problem[/]", p)
    out.print(t)


def print_result(result: ApplyResult, output: Output) -> None:
    if output is Output.JSON:
        # One line, like every event before it: the stream stays line-delimited JSON.
        sys.stdout.write(json.dumps({"event": "result", **result.as_dict()}, default=str) + "\n")
        return
    print_report(result.report)
    n = len(result.changes)
    verb = "would change" if result.dry_run else "changed"
    if result.failures:
        for f in result.failures:
            err.print(f"[bold red]{f.host}[/] failed in {f.phase}: {f.message}", highlight=False)
        err.print(f"[red]apply failed[/] after {result.seconds:.1f} s ({n} changes made)")
    elif n == 0:
        out.print(f"[green]converged: 0 changes[/] in {result.seconds:.2f} s", highlight=False)
    else:
        out.print(f"[green]done:[/] {verb} {n} things in {result.seconds:.1f} s", highlight=False)


SelectorOpt = Annotated[
    str, typer.Option(help="Comma-separated phase names or families (e.g. kubeadm,cni).")
]


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command("apply")
def apply_cmd(
    file: FileOpt = Path("cluster.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read facts, change nothing.")] = False,
    only: SelectorOpt = "",
    skip_phases: SelectorOpt = "",
    trust_new_hosts: TrustOpt = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove recorded hosts that are no longer in the file (drain, etcd member, "
            "kubeadm reset, cleanup, LB backends); without it apply refuses and changes nothing.",
        ),
    ] = False,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Converge the hosts into the cluster the file describes (idempotent, resumable)."""
    loaded = load_or_exit(file, output)
    _run_apply(loaded.cluster, output, dry_run=dry_run, only=_split(only),
               skip=_split(skip_phases), trust_new_hosts=trust_new_hosts, prune=prune)  # fmt: skip


TrustOpt = Annotated[
    bool, typer.Option(help="Record host keys not yet in known_hosts (and say so).")
]


def _run_apply(cluster: Cluster, output: Output, **kwargs: Any) -> None:
    from hakube.workflows.apply import ApplyLocked, run_apply

    try:
        result = run_apply(cluster, emit=Progress(output), **kwargs)
    except ValueError as e:
        fail(str(e), 2)
    except ApplyLocked as e:
        fail(str(e))
    print_result(result, output)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def demo(
    name: Annotated[str, typer.Option(help="Lab name.")] = "demo",
    workers: Annotated[int, typer.Option(help="Worker hosts.")] = 2,
    drill: Annotated[bool, typer.Option(help="End with a failover drill.")] = True,
    output: OutputOpt = Output.TEXT,
) -> None:
    """The main job on the local lab: lab up, apply, verify (and a failover drill)."""
    from hakube.workflows.demo import run_demo

    code = run_demo(name=name, workers=workers, drill=drill, emit=Progress(output),
                    show=lambda r: print_result(r, output), say=out.print)  # fmt: skip
    raise typer.Exit(code)


@app.command("drill")
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
    allow_poweroff: Annotated[
        bool, typer.Option(help="Allow host-down off the lab (it powers a host off).")
    ] = False,
    output_dir: Annotated[Path, typer.Option(help="Timelines (PNG), raw probe logs, JSON.")] = Path(
        "drill-out"
    ),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Break the HA pieces on purpose, measure what a client sees, restore (lab only)."""
    from hakube.drill.scenarios import ALL, DrillError
    from hakube.lab.lab import Lab, LabError
    from hakube.state import StateDir
    from hakube.workflows.drill import figures_table, run_comparison, run_drill

    try:
        the_lab = Lab.load(lab)
    except LabError as e:
        fail(str(e), 2)
    cluster = load_or_exit(file or the_lab.cluster_file, output).cluster
    state = StateDir(cluster.name)
    names = list(ALL) if scenarios == "all" else _split(scenarios)
    log = (lambda m: err.print(m, highlight=False)) if output is Output.JSON else out.print
    try:
        if compare_tutorial:
            reports = run_comparison(cluster, the_lab, state, scenarios=names, out_dir=output_dir,
                                     repeat=repeat, soak_seconds=soak_seconds, log=log)  # fmt: skip
        else:
            reports = [run_drill(cluster, the_lab, scenarios=names, out_dir=output_dir,
                                 repeat=repeat, soak_seconds=soak_seconds, state=state,
                                 allow_poweroff=allow_poweroff, log=log)]  # fmt: skip
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


node_app = typer.Typer(no_args_is_help=True, help="Cluster membership, one host at a time.")
app.add_typer(node_app, name="node")


@node_app.command("remove")
def node_remove(
    name: Annotated[str, typer.Argument(help="The host to remove.")],
    file: FileOpt = Path("cluster.yaml"),
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read facts, change nothing.")] = False,
    trust_new_hosts: TrustOpt = False,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Remove one host: drain, etcd member, kubeadm reset, cleanup, LB backends (resumable)."""
    from hakube.membership import membership, recorded_roles, without
    from hakube.record import load_record
    from hakube.state import StateDir

    cluster = load_or_exit(file, output).cluster
    record = load_record(StateDir(cluster.name).path)
    roles = recorded_roles(record) if record else {}
    if name not in roles:
        fail(f"{name} is not recorded as part of cluster {cluster.name!r} (it never joined, or "
             f"was removed already): delete it from {file} instead", 2)  # fmt: skip
    survivors = without(cluster, [name])
    assert record is not None
    others = [x.name for x in membership(survivors, record).leaving if x.name != name]
    if others:
        fail(f"{', '.join(others)} also left {file}: use `hakube apply --prune -f {file}` to "
             "remove them together, or put them back", 2)  # fmt: skip
    if not yes and not dry_run:
        if output is Output.JSON:
            fail("--yes is needed with --output json (nothing was changed)", 2)
        what = ", ".join(roles[name])
        if not typer.confirm(f"Remove {name} ({what}) from cluster {cluster.name!r}?"):
            fail("nothing was changed", 1)
    leaving = [h for h in cluster.hosts if h.name == name]
    _run_apply(survivors, output, dry_run=dry_run, trust_new_hosts=trust_new_hosts, prune=True,
               leaving_from=leaving)  # fmt: skip
    if leaving and not dry_run and output is Output.TEXT:
        out.print(f"{name} is removed: delete it from {file} now, or the next apply joins it "
                  "again as a new host", highlight=False)  # fmt: skip


def _mount_subcommands() -> None:
    from hakube.lab.cli import app as lab_app

    app.add_typer(lab_app, name="lab", help="A local lab of real Linux hosts (nspawn).")


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
