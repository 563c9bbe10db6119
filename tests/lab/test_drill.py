"""Every drill scenario once on a real 3-host lab (soak shortened), invariants asserted.

Own lab name and subnet; the module-scoped lab is always torn down. About 3-4 minutes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import apply
from hakube_lab import Lab, running_lab
from hakube_lab.demo import SKIPPED, prepare_standins
from hakube_lab.drill.report import RunMetrics
from hakube_lab.drill.runner import Drill
from hakube_lab.drill.scenarios import SCENARIOS, SOAK, Settings
from hakube_lab.drill.workflow import write_ca

pytestmark = pytest.mark.lab

NAME = "hkdrt"
SUBNET = "10.126.9.0/24"


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Drill, Cluster, Lab]]:
    state_root = tmp_path_factory.mktemp("state")
    out = tmp_path_factory.mktemp("drill")
    with pytest.MonkeyPatch.context() as mp, running_lab(NAME, 3, 0, SUBNET) as lab:
        mp.setenv("HAKUBE_STATE_DIR", str(state_root))
        assert os.environ["HAKUBE_STATE_DIR"] == str(state_root)
        cluster = load_cluster_file(lab.cluster_file).cluster
        state = StateDir(cluster.name)
        asyncio.run(prepare_standins(cluster, state))
        result = asyncio.run(apply(cluster, state=state, skip=SKIPPED))
        assert result.ok, result.failures
        d = Drill(cluster, lab, out, settings=Settings(), cafile=write_ca(state, out))
        yield d, cluster, lab


def _check_common(m: RunMetrics, d: Drill) -> None:
    assert m.end_healthy, m.problems
    assert d.health().ok, "a host was left broken"
    assert m.png is not None
    assert Path(m.png).stat().st_size > 0


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(drill: tuple[Drill, Cluster, Lab], name: str) -> None:
    d, cluster, _lab = drill
    m = d.run(name)
    sc = SCENARIOS[name]
    lbs = {h.name for h in cluster.lb_hosts}
    if sc.expect_move:
        assert m.owner_during in lbs - {m.target}, "the VIP did not move to a healthy LB host"
        assert m.move_s is not None
    if sc.expect_failures:
        assert m.failed > 0
    _check_common(m, d)
    assert m.invariants_ok, m.problems


def test_soak_short(drill: tuple[Drill, Cluster, Lab]) -> None:
    d, _cluster, _lab = drill
    m = d.run(SOAK, soak_seconds=20)
    assert m.vip_moves == 0
    _check_common(m, d)
    assert m.invariants_ok, m.problems
