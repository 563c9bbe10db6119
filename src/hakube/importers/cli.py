"""`hakube import kubespray|kubeasz`: a sub-app of its own so the main CLI only mounts it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from hakube.console import Output, err, fail, print_json, problem_json
from hakube.fileio import write_public_file

# The importers load the cluster model (pydantic): only when an import runs, so that mounting
# this sub-app costs `hakube --help` nothing.
if TYPE_CHECKING:
    from hakube.importers.common import Imported
    from hakube.spec import SpecError

app = typer.Typer(
    no_args_is_help=True,
    help="Write a hakube cluster file from a kubespray or kubeasz inventory.",
)

OutOpt = Annotated[
    Path,
    typer.Option("--file", "-f", help="Cluster file to write ('-' for standard output)."),
]
NameOpt = Annotated[
    str | None, typer.Option(help="Cluster name; default: the inventory's directory name.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file.")]
NOTHING_WRITTEN = "Nothing was written."


ReportOpt = Annotated[
    Output,
    typer.Option("--output", "-o", help="Report as text (stderr) or json (stdout; needs -f FILE)."),
]


def _run(
    importer: Callable[[Path, str | None], Imported],
    source: Path,
    command: str,
    out: Path,
    name: str | None,
    force: bool,
    output: Output,
) -> None:
    to_stdout = str(out) == "-"
    if to_stdout and output is Output.JSON:
        _refuse(
            "--output json and -f - both want standard output",
            "write to a file with -f FILE",
            output,
        )
    if not to_stdout and out.exists() and not force:
        _refuse(
            f"{out} exists", "pass --force to replace it, or choose another file with -f", output
        )
    from hakube.importers.common import render_and_check
    from hakube.importers.inventory import InventoryError
    from hakube.spec import SpecError

    try:
        imported = importer(source, name)
        text, loaded = render_and_check(imported, command)
    except InventoryError as e:
        _refuse(str(e), "", output)
    except SpecError as e:
        _invalid(source, e, output)
    if to_stdout:
        sys.stdout.write(text)
    else:
        write_public_file(out, text)
    c, notes = loaded.cluster, imported.notes
    if output is Output.JSON:
        print_json(
            {
                "written": True,
                "file": str(out),
                "cluster": c.name,
                "control_planes": [h.name for h in c.control_planes],
                "workers": [h.name for h in c.workers],
                "endpoint": f"{c.endpoint.mode.value} {c.control_plane_endpoint}",
                "mapped": notes.mapped,
                "not_mapped": notes.not_mapped,
                "unused": sorted(set(notes.unread)),
                "warnings": [f"{w.path}: {w.message}" for w in loaded.warnings],
            }
        )
        return
    for w in loaded.warnings:
        err.print(f"warning: {w.path}: {w.message}", markup=False, style="yellow")
    err.print(
        f"[green]{'wrote ' + str(out) if not to_stdout else 'cluster file'}[/]: "
        f"{len(c.control_planes)} control-plane, {len(c.workers)} worker, endpoint "
        f"{c.endpoint.mode.value} {c.control_plane_endpoint}; {len(notes.mapped)} mapped, "
        f"{len(notes.not_mapped)} not mapped (see the comments at the top)",
        highlight=False,
        soft_wrap=True,
    )


def _invalid(source: Path, e: SpecError, output: Output) -> NoReturn:
    from rich.markup import escape

    if output is Output.JSON:
        print_json({"written": False, "problems": [problem_json(p) for p in e.problems]})
        raise typer.Exit(2)
    err.print(
        f"[bold red]error:[/] the imported cluster does not validate ({escape(str(source))}):",
        highlight=False,
    )
    for p in e.problems:
        # Lines of the generated text would mean nothing to the reader: the field says it.
        err.print(f"  {p.severity.value}: {p.path}: {p.message}", markup=False)
        if p.hint:
            err.print(f"    fix: {p.hint}", markup=False)
    err.print("Fix this in the inventory and import again.")
    err.print(NOTHING_WRITTEN)
    raise typer.Exit(2)


def _refuse(message: str, hint: str, output: Output) -> NoReturn:
    """`hakube import` refusals keep their own JSON document (`written: false`)."""
    doc = {"written": False, "error": message, "hint": hint}
    fail(message, 2, output, hint=hint, closing=NOTHING_WRITTEN, doc=doc)


def _import_command(tool: str, source: str, source_help: str, summary: str) -> None:
    def command(
        source: Path,
        out: OutOpt = Path("cluster.yaml"),
        name: NameOpt = None,
        force: ForceOpt = False,
        output: ReportOpt = Output.TEXT,
    ) -> None:
        # Imported on use: the importers load the cluster model.
        importer = getattr(importlib.import_module(f"hakube.importers.{tool}"), f"import_{tool}")
        _run(importer, source, f"hakube import {tool}", out, name, force, output)

    # Each tool names its input the way its own docs do (INVENTORY, HOSTS).
    command.__annotations__["source"] = Annotated[
        Path, typer.Argument(help=source_help, metavar=source, show_default=False)
    ]
    command.__doc__ = summary
    app.command(tool)(command)


#: One command per importer: (tool, what its input is called, help for it, what it does).
for _tool, _source, _help, _summary in (
    (
        "kubespray",
        "inventory",
        "inventory.ini / hosts.yaml, or the directory holding it.",
        "Read a kubespray inventory (and its group_vars/) and write a hakube cluster file.",
    ),
    (
        "kubeasz",
        "hosts",
        "kubeasz's hosts file (or its directory).",
        "Read a kubeasz hosts file (and config.yml beside it) and write a hakube cluster file.",
    ),
):
    _import_command(_tool, _source, _help, _summary)
