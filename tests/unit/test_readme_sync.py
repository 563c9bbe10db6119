"""README.md and README.zh-CN.md list the same commands, and every command they name exists."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path
from typing import Any

import typer

from hakube.cli import app

ROOT = Path(__file__).resolve().parents[2]
EN = ROOT / "README.md"
ZH = ROOT / "README.zh-CN.md"
_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`(hakube [^`]+)`")
#: Options of the root command itself (typer's completion options).
_ROOT_OPTIONS = {"--install-completion", "--show-completion", "--help"}


def fenced_commands(path: Path) -> list[str]:
    """`hakube ...` and `make ...` lines of the code blocks, without their comments."""
    out = []
    for block in _FENCE.findall(path.read_text(encoding="utf-8")):
        for raw in block.splitlines():
            line = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
            if line.startswith(("hakube ", "make ")):
                out.append(" ".join(line.split()))
    return out


def all_hakube_mentions(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    inline = [" ".join(m.split()) for m in _INLINE.findall(text)]
    return [c for c in fenced_commands(path) if c.startswith("hakube ")] + inline


@functools.cache
def cli_tree() -> Any:
    tree = typer.main.get_command(app)
    # Plugin commands (the lab's) are mounted on first need; the READMEs name them too.
    getattr(tree, "load_plugins", lambda: None)()
    return tree


def command_path(line: str) -> str:
    """The subcommand path of a command line (`lab up`), checked against the real CLI."""
    tokens = shlex.split(line.replace(" > ", " "))[1:]
    cmd: Any = cli_tree()
    path: list[str] = []
    for tok in tokens:
        if not hasattr(cmd, "commands"):
            break
        if not path and tok in _ROOT_OPTIONS:
            return tok
        if tok == "...":  # "hakube lab ..." speaks of the whole group
            return " ".join([*path, tok])
        assert tok in cmd.commands, f"`{line}`: {tok!r} is not a hakube command here"
        cmd = cmd.commands[tok]
        path.append(tok)
    return " ".join(path)


def test_both_readmes_link_to_each_other() -> None:
    assert "README.zh-CN.md" in EN.read_text(encoding="utf-8")
    assert "(README.md" in ZH.read_text(encoding="utf-8")


def test_both_readmes_list_the_same_commands() -> None:
    en, zh = set(fenced_commands(EN)), set(fenced_commands(ZH))
    assert {"make demo", "make test"} <= en
    assert not en - zh, f"in README.md, missing from README.zh-CN.md: {sorted(en - zh)}"
    assert not zh - en, f"in README.zh-CN.md, missing from README.md: {sorted(zh - en)}"


def test_every_command_the_readmes_name_exists() -> None:
    en_paths = {command_path(c) for c in all_hakube_mentions(EN)}
    zh_paths = {command_path(c) for c in all_hakube_mentions(ZH)}
    assert {"import kubespray", "import kubeasz", "version", "lab up", "apply"} <= en_paths
    assert zh_paths <= en_paths, sorted(zh_paths - en_paths)
