"""`hakube lab degrade`: the loss it accepts, and bad values refused before any lab is touched."""

from __future__ import annotations

import shlex

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


class FakeIptables:
    """A clearly marked fake of `iptables -S/-I/-D` in one namespace: rules as `-S` prints them."""

    def __init__(self, rules: list[str]) -> None:
        self.rules = rules

    def __call__(self, _lab: object, _host: str, *args: str, check: bool = True) -> str:
        op, chain, *spec = args
        if op == "-S":
            return "".join(r + "\n" for r in [f"-P {chain} ACCEPT", *self.rules]
                           if r.split()[1] == chain)  # fmt: skip
        if op == "-D":  # iptables deletes the rule whose spec matches, however it was quoted
            (found,) = [r for r in self.rules if shlex.split(r) == ["-A", chain, *spec]]
            self.rules.remove(found)
        else:
            self.rules.insert(0, shlex.join(["-A", chain, *spec]))
        return ""


def test_loss_and_hairpin_rules_are_deleted_by_their_comment_and_others_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hakube_lab import faults, slb

    theirs = "-A INPUT -s 10.0.0.9/32 -j DROP"
    fake = FakeIptables([theirs, f'-A OUTPUT -m comment --comment "{faults.LOSS_COMMENT}" -j DROP'])
    fake.rules.append(f'-A INPUT -m comment --comment "{faults.LOSS_COMMENT}" -j DROP')
    monkeypatch.setattr(faults, "netns_iptables", fake)
    monkeypatch.setattr(slb, "netns_iptables", fake)
    assert len(faults.loss_rules(None, "cp1")) == 2  # type: ignore[arg-type]
    faults.restore(None, "cp1")  # type: ignore[arg-type]
    assert fake.rules == [theirs]
    hairpin = f'-A INPUT -s 10.0.0.11/32 -m comment --comment "{slb.NO_HAIRPIN}" -j DROP'
    fake.rules.append(hairpin)
    faults.delete_tagged(None, "slb", slb.NO_HAIRPIN, ("INPUT",))  # type: ignore[arg-type]
    assert fake.rules == [theirs]
