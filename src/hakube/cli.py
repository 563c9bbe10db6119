"""Command line: a thin typer shell over the hakube library.

Every command that reports something also offers `--output json`. Bad input exits 2 with every
problem listed; a failed run exits 1. The day-2 commands (`hakube.ops_cli`) and the command
groups of other installed packages (the lab's `lab`, `demo` and `drill`, through the
`hakube.cli_plugins` entry-point group) are mounted on first need (`PluginGroup`).
"""

from __future__ import annotations

import gc
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from hakube.cli_examples import EXAMPLES, attach

if TYPE_CHECKING:
    from typer._click import Command, Context  # typer vendors click; these are its types

    from hakube.spec.model import Cluster

from hakube.console import (
    FileOpt,
    Output,
    OutputOpt,
    Progress,
    YesOpt,
    fail,
    load_or_exit,
    out,
    print_json,
    print_result,
    problem_json,
    say,
    split_list,
)

PLUGIN_GROUP = "hakube.cli_plugins"

# Help and usage errors in click's plain layout: typer's rich layout imports typer.rich_utils,
# which imports rich's markdown (markdown_it), syntax and traceback modules on every help
# screen, about as much start-up time as the rest of `hakube --help` together.
HELP_MARKUP = None

Register = Callable[[typer.Typer], None]


class PluginGroup(TyperGroup):
    """The product's start-up commands, then on first need the day-2 commands with `import`
    and the plugins' (`register(typer_app)` per entry point): `hakube validate` builds none of
    them and imports no plugin; a day-2 command name mounts the day-2 commands; help,
    completion and other unknown names mount the plugins too. Start-up time is what a user
    waits for on every run."""

    day2_loaded = False
    plugins_loaded = False

    def load_day2(self) -> None:
        if not self.day2_loaded:
            self.day2_loaded = True
            from hakube.ops_cli import register

            self._mount([register], first=True)
            self._mount([register_import], first=False)

    def load_plugins(self) -> None:
        self.load_day2()
        if not self.plugins_loaded:
            self.plugins_loaded = True
            self._mount(plugin_registrars(PLUGIN_GROUP), first=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        whole_first_paragraphs(self.commands)

    def _mount(self, registrars: Iterator[Register] | list[Register], first: bool) -> None:
        extra = typer.Typer(rich_markup_mode=HELP_MARKUP)
        for register in registrars:
            register(extra)
        attach(extra, EXAMPLES)
        if not (extra.registered_commands or extra.registered_groups):
            return
        built = typer.main.get_group(extra).commands
        whole_first_paragraphs(built)
        if not first:
            self.commands = {**self.commands, **built}
            return
        # Listed as if registered on `app` before its own commands (where `hakube --help` has
        # always shown them): typer lists an app's commands first, then its groups.
        both = {**built, **self.commands}
        self.commands = {
            **{n: c for n, c in both.items() if not isinstance(c, TyperGroup)},
            **{n: c for n, c in both.items() if isinstance(c, TyperGroup)},
        }

    def list_commands(self, ctx: Context) -> list[str]:
        self.load_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        found = super().get_command(ctx, cmd_name)
        for load in (self.load_day2, self.load_plugins):
            if found is None:
                load()
                found = super().get_command(ctx, cmd_name)
        return found


def whole_first_paragraphs(commands: Mapping[str, Command]) -> None:
    """Make every group list each of its commands with the whole first paragraph of its help.

    Click's listing cuts that paragraph to what fits on one line and adds "...", so most of
    hakube's one-line summaries lost their end; given as `short_help`, it is listed whole and
    wrapped. A command's own short_help, if any, is kept."""
    for cmd in commands.values():
        if cmd.short_help is None and cmd.help:
            cmd.short_help = " ".join(cmd.help.split("\n\n")[0].split())
        whole_first_paragraphs(getattr(cmd, "commands", {}))


def plugin_registrars(group: str) -> Iterator[Register]:
    """The objects named by the installed distributions' entry points in `group`, loaded.

    Read from each `*.dist-info` (or `*.egg-info`) `entry_points.txt` in the directories on
    sys.path, the first distribution of a name winning as with importlib.metadata, whose import
    alone costs more start-up time than `hakube --help`'s own work. An entry point whose package
    is not importable is passed over."""
    import importlib

    seen: set[str] = set()
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            # `name-version.dist-info`, the name normalised as pip does (PEP 503).
            dist = re.sub(r"[-_.]+", "-", name.rpartition(".")[0].partition("-")[0]).lower()
            if dist in seen:
                continue
            seen.add(dist)
            for value in _entry_point_values(Path(entry, name, "entry_points.txt"), group):
                module, _, attr = value.partition(":")
                try:
                    found: Any = importlib.import_module(module.strip())
                except ImportError:
                    continue  # metadata without an importable package (e.g. a half-removed one)
                for part in attr.strip().split("."):
                    found = getattr(found, part) if part else found
                yield found


def _entry_point_values(path: Path, group: str) -> list[str]:
    """`name = value` lines of one section of an entry_points.txt (INI); [] when absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    values, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == group and "=" in line and not line.startswith(("#", ";")):
            values.append(line.partition("=")[2].strip())
    return values


app = typer.Typer(
    cls=PluginGroup,
    rich_markup_mode=HELP_MARKUP,
    # Click's default, 80 columns, wraps most one-line summaries on today's wider terminals.
    context_settings={"max_content_width": 120},
    no_args_is_help=True,
    # --install-completion / --show-completion (bash, zsh, fish, PowerShell); see the README.
    add_completion=True,
    help="Build and run highly available Kubernetes clusters on plain Linux hosts over SSH.",
    pretty_exceptions_enable=False,
)


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
    say(
        (f"{file}: valid", "green"),
        f" - cluster {c.name!r}, {len(c.control_planes)} control-plane, {len(c.workers)} worker, "
        f"endpoint {c.endpoint.mode.value} {c.control_plane_endpoint}",
    )


@app.command()
def render(
    file: FileOpt = Path("cluster.yaml"),
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-d", help="Directory to write <host>/<path> into.")
    ] = Path("render-out"),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Write every host's files under DIR/<host>/ (secrets from the state dir, 0600).

    Creates nothing in the state dir: before the first apply has generated the cluster's
    secrets and CA, the files that would hold them are listed as withheld, not written."""
    from hakube.state import StateDir
    from hakube.workflows.plan import RenderTargetError, render_to_dir

    loaded = load_or_exit(file, output)
    state = StateDir(loaded.cluster.name)
    try:
        result = render_to_dir(loaded.cluster, out_dir, state)
    except RenderTargetError as e:
        fail(str(e), 2, output)
    except OSError as e:
        fail(f"writing under {out_dir} failed: {e.strerror or e}", 1, output)
    if output is Output.JSON:
        print_json(
            {
                "ok": True,
                "out_dir": str(out_dir),
                "files": result.written,
                "withheld": result.withheld,
            }
        )
        return
    out.print(f"wrote {result.written} files under {out_dir}/", highlight=False)
    if result.withheld:
        out.print(
            f"withheld {len(result.withheld)} files that hold secrets or the cluster CA's hash, "
            f"which do not exist yet in {state.path} (the first `hakube apply` generates them; "
            "render never does):",
            highlight=False,
        )
        for item in result.withheld:
            out.print(f"  {item}", highlight=False)


@app.command()
def plan(
    file: FileOpt = Path("cluster.yaml"),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Show, per host, the phases `apply` would run and the files it would write. No host is
    contacted."""
    from rich.table import Table

    from hakube.record import load_record
    from hakube.state import StateDir
    from hakube.workflows.plan import build_plan

    loaded = load_or_exit(file, output)
    record = load_record(StateDir(loaded.cluster.name).path)
    p = build_plan(loaded.cluster, record=record)
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
    for line in p.membership:
        out.print(f"[yellow]{line}[/]", highlight=False)


SelectorOpt = Annotated[
    str, typer.Option(help="Comma-separated phase names or families (e.g. kubeadm,cni).")
]


TrustOpt = Annotated[
    bool, typer.Option(help="Record host keys not yet in known_hosts (and say so).")
]


PhaseArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="phase NAME",
        help="`phase NAME`: run that phase (or family) alone, kubeadm's `init phase` way, "
        "after checking in the record that the phases it needs have completed before.",
        show_default=False,
    ),
]


@app.command("apply")
def apply_cmd(
    phase: PhaseArg = None,
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
    alone = _phase_alone(phase, only=only, skip=skip_phases, prune=prune, output=output)
    loaded = load_or_exit(file, output)
    _run_apply(loaded.cluster, output, dry_run=dry_run,
               only=[alone] if alone else split_list(only), skip=split_list(skip_phases),
               trust_new_hosts=trust_new_hosts, prune=prune, alone=alone is not None)  # fmt: skip


def _phase_alone(
    words: list[str] | None, *, only: str, skip: str, prune: bool, output: Output
) -> str | None:
    """The phase name of `hakube apply phase NAME` (None: the whole list); bad use exits 2."""
    if not words:
        return None
    if len(words) != 2 or words[0] != "phase":
        fail(f"unexpected argument {' '.join(words)!r}: apply takes none, or `phase NAME` "
             "(e.g. `hakube apply phase lb/haproxy`). Nothing was changed.", 2, output)  # fmt: skip
    if only or skip or prune:
        fail("`apply phase NAME` runs that phase alone: --only, --skip-phases and --prune do "
             "not go with it. Nothing was changed.", 2, output)  # fmt: skip
    return words[1]


def _run_apply(cluster: Cluster, output: Output, **kwargs: Any) -> None:
    from hakube.workflows.apply import ApplyLocked, run_apply

    try:
        result = run_apply(cluster, emit=Progress(output), **kwargs)
    except ValueError as e:
        fail(str(e), 2, output)
    except ApplyLocked as e:
        fail(str(e), 1, output)
    print_result(result, output)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def version(output: OutputOpt = Output.TEXT) -> None:
    """Print hakube's version and the Kubernetes versions it can install."""
    from importlib.metadata import version as dist_version

    from hakube.spec.model import MAX_KUBERNETES, MIN_KUBERNETES

    hakube, python = dist_version("hakube"), sys.version.split()[0]
    lo, hi = "{}.{}".format(*MIN_KUBERNETES), "{}.{}".format(*MAX_KUBERNETES)
    if output is Output.JSON:
        print_json({"hakube": hakube, "python": python, "kubernetes": {"min": lo, "max": hi}})
        return
    out.print(f"hakube {hakube} (Python {python}); installs Kubernetes {lo} to {hi}")


node_app = typer.Typer(no_args_is_help=True, help="Cluster membership, one host at a time.")
app.add_typer(node_app, name="node")


@node_app.command("remove")
def node_remove(
    name: Annotated[str, typer.Argument(help="The host to remove.")],
    file: FileOpt = Path("cluster.yaml"),
    yes: YesOpt = False,
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
    if record is None or name not in roles:
        fail(f"{name} is not recorded as part of cluster {cluster.name!r} (it never joined, or "
             f"was removed already): delete it from {file} instead", 2, output)  # fmt: skip
    survivors = without(cluster, [name])
    others = [x.name for x in membership(survivors, record).leaving if x.name != name]
    if others:
        fail(f"{', '.join(others)} also left {file}: use `hakube apply --prune -f {file}` to "
             "remove them together, or put them back", 2, output)  # fmt: skip
    if not yes and not dry_run:
        if output is Output.JSON:
            fail("--yes is needed with --output json (nothing was changed)", 2, output)
        what = ", ".join(roles[name])
        if not typer.confirm(f"Remove {name} ({what}) from cluster {cluster.name!r}?"):
            fail("nothing was changed", 1)
    leaving = [h for h in cluster.hosts if h.name == name]
    _run_apply(survivors, output, dry_run=dry_run, trust_new_hosts=trust_new_hosts, prune=True,
               leaving_from=leaving)  # fmt: skip
    if leaving and not dry_run and output is Output.TEXT:
        out.print(f"{name} is removed: delete it from {file} now, or the next apply joins it "
                  "again as a new host", highlight=False)  # fmt: skip


def register_import(parent: typer.Typer) -> None:
    """`hakube import`, mounted with the day-2 commands: its module imports the file writers."""
    from hakube.importers.cli import app as import_app

    parent.add_typer(import_app, name="import")


attach(app, EXAMPLES)


def main() -> None:
    try:
        app()
    finally:
        # Tearing the interpreter down collects every object of every imported module, which
        # costs about 0.1 s after a command that connected to hosts (asyncssh, cryptography,
        # pydantic, the phases). Nothing hakube needs runs in those finalizers: files are
        # written atomically and closed, connections are closed inside the command, and
        # atexit handlers and buffered output still run and flush after a freeze.
        gc.freeze()


if __name__ == "__main__":
    main()
