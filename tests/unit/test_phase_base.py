"""What every phase gets from `Phase` itself: its docstring as the summary `plan` shows, and
every host as its targets unless it names others."""

from __future__ import annotations

import pytest
from fakes import ROOT

from hakube.phases.base import Phase
from hakube.phases.context import Context
from hakube.spec.load import load_cluster_file
from hakube.spec.model import Host
from hakube.workflows.apply import apply_phases


def test_a_phases_summary_is_its_docstring_on_one_line() -> None:
    class Tidy(Phase):
        """remove what an earlier version left behind,
        once per host"""

        name = "tidy"

        async def run(self, ctx: Context, host: Host) -> None:
            raise AssertionError("never run here")

    assert Tidy.summary == "remove what an earlier version left behind, once per host"
    cluster = load_cluster_file(ROOT / "examples" / "tutorial.yaml").cluster
    assert [h.name for h in Tidy().targets(cluster)] == [h.name for h in cluster.hosts]


def test_a_phase_without_a_docstring_is_refused_when_it_is_defined() -> None:
    with pytest.raises(TypeError, match="docstring is its summary"):

        class Silent(Phase):
            name = "silent"

            async def run(self, ctx: Context, host: Host) -> None:
                raise AssertionError("never run here")


def test_every_apply_phase_has_a_one_line_summary() -> None:
    for p in apply_phases():
        assert p.summary, p.name
        assert p.summary == " ".join(p.summary.split()), p.name
