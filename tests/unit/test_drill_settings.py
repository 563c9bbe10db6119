"""Scenario gating: what a real site may get."""

from __future__ import annotations

import pytest

from hakube_lab.drill.policy import check_allowed
from hakube_lab.drill.scenarios import ALL, DrillError


def test_every_known_scenario_is_allowed_and_an_unknown_one_is_refused() -> None:
    check_allowed(ALL)
    with pytest.raises(DrillError, match="unknown scenario"):
        check_allowed(["nope"])


def test_drill_has_no_allow_poweroff_option() -> None:
    """The drill only runs on the lab: a real-site power-off switch could never do anything."""
    from typer.testing import CliRunner

    from hakube.cli import app

    res = CliRunner().invoke(app, ["drill", "--help"])
    assert res.exit_code == 0, res.output
    assert "--lab" in res.stdout
    assert "poweroff" not in res.stdout
