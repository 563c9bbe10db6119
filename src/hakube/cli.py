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

from hakube.spec import Loaded, Severity, SpecError, load_cluster_file
from hakube.spec.model import Cluster

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
    if p.skipped:
        out.print(f"phases not applicable: {', '.join(p.skipped)}", highlight=False)


def _mount_subcommands() -> None:
    from hakube.lab.cli import app as lab_app

    app.add_typer(lab_app, name="lab", help="A local lab of real Linux hosts (nspawn).")


_mount_subcommands()


def main() -> None:
    app()
