"""Command line: a thin typer shell over the hakube library.

Every command that reports something also offers `--output json`. Bad input exits 2 with every
problem listed; a failed run exits 1. Command groups of other installed packages (the lab's
`lab`, `demo` and `drill`) are mounted through the `hakube.cli_plugins` entry-point group, on
first need (`PluginGroup`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer._click import Command, Context  # typer vendors click; these are its types

from hakube.console import (
    FileOpt,
    Output,
    OutputOpt,
    Progress,
    fail,
    load_or_exit,
    out,
    print_json,
    print_result,
    problem_json,
    split_list,
)
from hakube.ops_cli import register as register_ops

PLUGIN_GROUP = "hakube.cli_plugins"


class PluginGroup(TyperGroup):
    """The product's commands, and the plugins' (`register(typer_app)` per entry point) mounted
    on first need: `hakube validate` and the other product commands start without reading
    entry points or importing any plugin; help and unknown command names load them."""

    plugins_loaded = False

    def load_plugins(self) -> None:
        if self.plugins_loaded:
            return
        self.plugins_loaded = True
        from importlib.metadata import entry_points

        extra = typer.Typer()
        for ep in entry_points(group=PLUGIN_GROUP):
            try:
                register = ep.load()
            except ImportError:
                # Its distribution's metadata is there but the package is not importable.
                continue
            register(extra)
        if extra.registered_commands or extra.registered_groups:
            for name, command in typer.main.get_group(extra).commands.items():
                self.add_command(command, name)

    def list_commands(self, ctx: Context) -> list[str]:
        self.load_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and not self.plugins_loaded:
            self.load_plugins()
            found = super().get_command(ctx, cmd_name)
        return found


app = typer.Typer(
    cls=PluginGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Build and run highly available Kubernetes clusters on plain Linux hosts over SSH.",
    pretty_exceptions_enable=False,
)
# Day-2 commands are the product's own: mounted here, light until one of them runs.
register_ops(app)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the cluster file (for editors and CI)."""
    from hakube.spec.model import Cluster

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
                "problems": [problem_json(p) for p in loaded.warnings],
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
        Path, typer.Option("--out-dir", "-d", help="Directory to write <host>/<path> into.")
    ] = Path("render-out"),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Write every host's files under DIR/<host>/ (secrets from the state dir, 0600)."""
    from hakube.workflows.plan import RenderTargetError, render_to_dir

    loaded = load_or_exit(file, output)
    try:
        written = render_to_dir(loaded.cluster, out_dir)
    except RenderTargetError as e:
        fail(str(e), 2, output)
    except OSError as e:
        fail(f"writing under {out_dir} failed: {e.strerror or e}", 1, output)
    if output is Output.JSON:
        print_json({"ok": True, "out_dir": str(out_dir), "files": written})
        return
    out.print(f"wrote {written} files under {out_dir}/", highlight=False)


@app.command()
def plan(
    file: FileOpt = Path("cluster.yaml"),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Show, per host, the phases `apply` would run and the files it would write. No host is
    contacted."""
    from rich.table import Table

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


SelectorOpt = Annotated[
    str, typer.Option(help="Comma-separated phase names or families (e.g. kubeadm,cni).")
]


@app.command("apply")
def apply_cmd(
    file: FileOpt = Path("cluster.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read facts, change nothing.")] = False,
    only: SelectorOpt = "",
    skip_phases: SelectorOpt = "",
    trust_new_hosts: Annotated[
        bool, typer.Option(help="Record host keys not yet in known_hosts (and say so).")
    ] = False,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Converge the hosts into the cluster the file describes (idempotent, resumable)."""
    from hakube.workflows.apply import ApplyLocked, run_apply

    loaded = load_or_exit(file, output)
    try:
        result = run_apply(
            loaded.cluster,
            dry_run=dry_run,
            only=split_list(only),
            skip=split_list(skip_phases),
            trust_new_hosts=trust_new_hosts,
            emit=Progress(output),
        )
    except ValueError as e:
        fail(str(e), 2, output)
    except ApplyLocked as e:
        fail(str(e), 1, output)
    print_result(result, output)
    if not result.ok:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
