"""`hakube lab degrade`: the loss it accepts, and bad values refused before any lab is touched."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hakube.cli import app
from hakube_lab.addressing import LabError
from hakube_lab.faults import parse_loss


@pytest.mark.parametrize(("text", "value"), [("2%", 0.02), ("0.5 %", 0.005), ("0.02", 0.02)])
def test_loss_as_percent_or_fraction(text: str, value: float) -> None:
    assert parse_loss(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0%", "100%", "-1%", "1.5", "two", ""])
def test_loss_outside_0_100_or_not_a_number_is_refused(text: str) -> None:
    with pytest.raises(LabError, match="--loss"):
        parse_loss(text)


def test_degrade_with_a_bad_loss_exits_2_naming_the_option() -> None:
    result = CliRunner().invoke(app, ["lab", "degrade", "cp1", "--loss", "200%", "--name", "nolab"])
    assert result.exit_code == 2
    assert "--loss" in result.output
