"""The README's lab sequence, run exactly as printed (lab name and subnet swapped for this test's).

Also checks that `lab up` prints the very apply command the README shows, so what users copy
from either place works.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hakube_lab.lifecycle import destroy

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HAKUBE = str(Path(sys.executable).parent / "hakube")
NAME, SUBNET = "hkr1", "10.123.230.0/24"


def readme_lab_commands() -> list[str]:
    """The `hakube ...` lines of the code block under README.md's "The local lab"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### The local lab", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README.md has no code block under 'The local lab'"
    lines = [re.split(r"\s+#", raw, maxsplit=1)[0].strip() for raw in block[1].splitlines()]
    return [line for line in lines if line.startswith("hakube ")]


def for_this_test(line: str) -> list[str]:
    """The README's line with this test's lab name; `lab up` pinned to this test's subnet."""
    argv = shlex.split(line.replace("demo", NAME))
    if argv[1:3] == ["lab", "up"]:
        argv += ["--subnet", SUBNET]
    return [HAKUBE, *argv[1:]]


def test_readme_lab_commands_work_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = readme_lab_commands()
    assert [shlex.split(c)[1:3] for c in commands[:2]] == [["lab", "up"], ["apply", "-f"]]
    monkeypatch.setenv("HAKUBE_STATE_DIR", str(tmp_path / "state"))
    try:
        for line in commands:
            argv = for_this_test(line)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=420, check=False)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            if argv[1:3] == ["lab", "up"]:
                # The apply command `lab up` prints is the README's next line, as printed.
                printed = [s.strip() for s in done.stdout.splitlines()]
                assert (
                    for_this_test(commands[1])[1:]
                    == shlex.split(next(p for p in printed if p.startswith("hakube apply")))[1:]
                )
                assert "LAB ONLY: apiserver stand-ins on cp1, cp2, cp3" in done.stdout
            if argv[1] == "apply":
                assert "DOWN" not in done.stdout, done.stdout
                assert "3: cp1, cp2, cp3; 3 healthy" in done.stdout
    finally:
        destroy(NAME)
