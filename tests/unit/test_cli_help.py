"""Every command's --help ends with an example of that very command; version; shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hakube.cli import app

runner = CliRunner()


def leaf_commands() -> Iterator[tuple[str, Any]]:
    """(path, command) of every command, from the same command tree the CLI runs."""

    def walk(cmd: Any, path: str) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, f"{path} {name}".strip())
        else:
            yield path, cmd

    tree = typer.main.get_command(app)
    getattr(tree, "load_plugins", lambda: None)()  # plugin commands are mounted on first need
    yield from walk(tree, "")


def test_every_command_help_ends_with_an_example_of_itself() -> None:
    paths = [p for p, _ in leaf_commands()]
    assert {"validate", "apply", "import kubespray", "import kubeasz", "version"} <= set(paths)
    assert {"lab up", "demo", "drill"} <= set(paths)
    for path, cmd in leaf_commands():
        assert cmd.epilog, f"`hakube {path} --help` shows no example (add one to EXAMPLES)"
        assert cmd.epilog.startswith(f"Example: hakube {path} "), (path, cmd.epilog)
        res = runner.invoke(app, [*path.split(), "--help"])
        assert res.exit_code == 0, res.output
        assert f"hakube {path}" in " ".join(res.output.split()), path


def test_version_prints_the_package_version_and_kubernetes_range() -> None:
    from importlib.metadata import version

    res = runner.invoke(app, ["version", "--output", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["hakube"] == version("hakube")
    assert data["kubernetes"] == {"min": "1.22", "max": "1.34"}
    res = runner.invoke(app, ["version"])
    assert f"hakube {version('hakube')}" in res.stdout


EXE = Path(sys.executable).parent / "hakube"


@pytest.mark.skipif(not EXE.exists(), reason="the hakube script is not installed beside python")
def test_shell_completion_completes_command_names() -> None:
    """What `--install-completion` installs: bash asks hakube itself for completions."""
    exe = str(EXE)
    env = {**os.environ, "_HAKUBE_COMPLETE": "complete_bash", "COMP_WORDS": "hakube imp",
           "COMP_CWORD": "1"}  # fmt: skip
    done = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.split() == ["import"], done
    env["COMP_WORDS"], env["COMP_CWORD"] = "hakube import kube", "2"
    done = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert sorted(done.stdout.split()) == ["kubeasz", "kubespray"], done


def test_command_listings_show_each_commands_whole_first_paragraph() -> None:
    """Click's plain layout cuts a listed command's summary to one line ("..."): not here."""
    tree = typer.main.get_command(app)
    getattr(tree, "load_plugins", lambda: None)()
    groups = [("", tree)] + [
        (path, cmd) for path, cmd in walk_groups(tree, "") if hasattr(cmd, "commands")
    ]
    for path, group in groups:
        res = runner.invoke(app, [*path.split(), "--help"], terminal_width=80)
        assert res.exit_code == 0, res.output
        shown = " ".join(res.output.split())
        for name, cmd in group.commands.items():
            first = " ".join((cmd.help or "").split("\n\n")[0].split())
            assert f"{name} {first}" in shown, (path, name)


def walk_groups(cmd: Any, path: str) -> Iterator[tuple[str, Any]]:
    for name, sub in getattr(cmd, "commands", {}).items():
        yield f"{path} {name}".strip(), sub
        yield from walk_groups(sub, f"{path} {name}".strip())
