"""Terminal output shared by every command: the two consoles, `--output`, progress, results.

Lives apart from `hakube.cli` so that command groups mounted from other packages (the lab's)
print the same way without importing the CLI module that mounts them.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

# Start-up time: `hakube --help` and `hakube validate` must not pay for the phases, asyncssh or
# the PKI, so everything below is imported where it is used.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from hakube.phases.base import Event
    from hakube.phases.verify import VerifyReport
    from hakube.spec import Loaded
    from hakube.workflows.apply import ApplyResult


class _FirstUse:
    """A rich Console made when something is first printed through it: importing rich.console
    (and the markup, style and colour modules it pulls in) is a sixth of `hakube --help`'s
    start-up, and help, usage errors and JSON output never print through rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return getattr(self._console, name)


out = cast("Console", _FirstUse(stderr=False))
err = cast("Console", _FirstUse(stderr=True))


def say(*parts: str | tuple[str, str], stderr: bool = False) -> None:
    """Print one line made of plain parts and (text, rich style) parts, never read as markup.

    On a terminal (or where FORCE_COLOR or TTY_COMPATIBLE asks rich for one) it goes through
    rich, in colour and wrapped to the width. Anywhere else (a pipe, a file, a CI log) rich
    would only drop the colours and wrap at 80 columns, so the text is written as it is:
    `hakube validate` in a script does not pay for importing rich."""
    stream = sys.stderr if stderr else sys.stdout
    if not (stream.isatty() or os.environ.get("FORCE_COLOR") or os.environ.get("TTY_COMPATIBLE")):
        stream.write("".join(p if isinstance(p, str) else p[0] for p in parts) + "\n")
        return
    from rich.text import Text

    (err if stderr else out).print(Text.assemble(*parts), highlight=False)


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


FileOpt = Annotated[
    Path, typer.Option("--file", "-f", help="Cluster file (YAML).", show_default=True)
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(
    message: str,
    code: int = 1,
    output: Output = Output.TEXT,
    *,
    hint: str = "",
    closing: str = "",
    doc: dict[str, Any] | None = None,
) -> NoReturn:
    """Stop with a message (a hint under it, then a `closing` line such as "Nothing was
    written."): on stderr, or with --output json as the one JSON document on stdout (`doc`, for
    a command whose document has its own keys; else ok/error/exit_code)."""
    if output is Output.JSON:
        print_json(doc if doc is not None else {"ok": False, "error": message, "exit_code": code})
        raise typer.Exit(code)
    # Through say(): never read as markup, and off a terminal never re-wrapped, so a long path
    # stays whole (and can be copied).
    say(("error:", "bold red"), f" {message}", stderr=True)
    if hint:
        say(f"  hint: {hint}", stderr=True)
    if closing:
        say(closing, stderr=True)
    raise typer.Exit(code)


def load_or_exit(path: Path, output: Output = Output.TEXT) -> Loaded:
    from hakube.spec import Severity, SpecError, load_cluster_file

    try:
        loaded = load_cluster_file(path)
    except SpecError as e:
        if output is Output.JSON:
            print_json(
                {
                    "valid": False,
                    "file": str(path),
                    "problems": [problem_json(p) for p in e.shown],
                    "more": e.more,
                }
            )
        else:
            say((f"{path}: {e.error_count} problem(s)", "bold red"), stderr=True)
            for p in e.shown:
                say((str(p), "red" if p.severity is Severity.ERROR else "yellow"), stderr=True)
            if e.more:
                say(f"and {e.more} more", stderr=True)
            say("Nothing was changed.", stderr=True)
        raise typer.Exit(2) from None
    if output is Output.TEXT:
        for w in loaded.warnings:
            say((str(w), "yellow"), stderr=True)
    return loaded


def problem_json(p: Any) -> dict[str, Any]:
    return {
        "path": p.path,
        "line": p.line,
        "severity": p.severity.value,
        "message": p.message,
        "hint": p.hint,
    }


class Progress:
    """Live progress as text lines (host-prefixed, k0sctl style) or a JSON event stream."""

    def __init__(self, output: Output) -> None:
        self.output = output

    def __call__(self, e: Event) -> None:
        from hakube.phases.base import EventKind

        if self.output is Output.JSON:
            sys.stdout.write(json.dumps(e.as_dict()) + "\n")
            sys.stdout.flush()
            return
        k = e.kind
        if k is EventKind.PHASE_START:
            hosts = e.data.get("hosts")
            suffix = f" on {', '.join(hosts)}" if hosts else ""
            err.print(f"[bold cyan]==> {e.phase}[/]{suffix}", highlight=False)
        elif k in (EventKind.RESUME, EventKind.MEMBERSHIP, EventKind.NEEDS):
            err.print(f"[yellow]{e.message}[/]", highlight=False)
        elif k is EventKind.CHANGE:
            err.print(f"    [green]{e.host}[/]: {e.message}", highlight=False)
        elif k is EventKind.HOST_FAILED:
            err.print(
                f"    [bold red]{e.host} FAILED[/] in {e.phase}:\n{e.message}", highlight=False
            )
        elif k is EventKind.PHASE_DONE and e.data.get("changes") == 0:
            err.print("    no change", style="dim")


def table(title: str, *columns: str) -> Table:
    """A table titled on the left with these plain columns (rich.table loads on first use)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col)
    return t


def print_report(report: VerifyReport | None) -> None:
    from rich.table import Table

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


def split_list(value: str) -> list[str]:
    """A comma-separated option as a list, blanks dropped."""
    return [v.strip() for v in value.split(",") if v.strip()]
