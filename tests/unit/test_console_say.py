"""`say`: plain lines off a terminal (no rich import), coloured through rich on one."""

from __future__ import annotations

import pytest

from hakube import console
from hakube.console import say

LONG = "x" * 150


def test_off_a_terminal_the_text_is_written_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    say(("file.yaml: valid", "green"), f" - [bold]{LONG}", stderr=False)
    say("Nothing was changed.", stderr=True)
    got = capsys.readouterr()
    # Not read as markup, not wrapped at 80 columns, no escape codes.
    assert got.out == f"file.yaml: valid - [bold]{LONG}\n"
    assert got.err == "Nothing was changed.\n"


def test_where_colour_is_asked_for_rich_prints_the_styles(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(console, "err", console._FirstUse(stderr=True))
    say(("error:", "bold red"), " a [b] c", stderr=True)
    got = capsys.readouterr().err
    assert "\x1b[1;31merror:\x1b[0m" in got
    assert got.endswith(" a [b] c\n")
