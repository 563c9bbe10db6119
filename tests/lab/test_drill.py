"""Every drill scenario once on a real 3-host lab (soak shortened), invariants asserted.

Own lab name and subnet; the module-scoped lab is always torn down. About 3-4 minutes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import apply
from hakube_lab import Lab, running_lab
from hakube_lab.demo import SKIPPED
from hakube_lab.drill.report import RunMetrics
from hakube_lab.drill.runner import Drill
from hakube_lab.drill.scenarios import SCENARIOS, SOAK, Settings
from hakube_lab.drill.workflow import write_ca
from hakube_lab.faults import loss_rules
from hakube_lab.standin import prepare_standins

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
    assert m.end_healthy, (m.problems, m.lb_log)
    after = d.health()
    assert after.ok, ("a host was left broken", after.problems, d.checks.lb_log(time.time() - 60))
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
    assert m.invariants_ok, (m.problems, m.lb_log)


@pytest.mark.parametrize("name", ["host-down", "isolate"])
def test_returning_owner_costs_no_request(drill: tuple[Drill, Cluster, Lab], name: str) -> None:
    # The broken owner comes back and, with preemption (the default), takes the VIP home only
    # after preempt_delay, once its HAProxy serves: no second outage (etcd pre-vote on a heal).
    d, cluster, _lab = drill
    assert cluster.endpoint.vrrp.preempt
    m = d.run(name, 2)
    assert m.moved_back
    assert m.failed_restore == 0, m.problems
    assert m.failed_after_move == 0, m.problems


def test_degrade_puts_loss_in_and_out_and_restore_removes_it(
    drill: tuple[Drill, Cluster, Lab],
) -> None:
    _d, _cluster, lab = drill
    try:
        lab.degrade("cp2", 0.02)
        lab.degrade("cp2", 0.05)  # replaces, never stacks
        rules = loss_rules(lab, "cp2")
        assert [r.split()[1] for r in rules] == ["INPUT", "OUTPUT"]
        assert lab.loss("cp2") == pytest.approx(0.05)
        assert lab.loss("cp1") is None
    finally:
        lab.restore("cp2")
    assert loss_rules(lab, "cp2") == []


def test_soak_short_with_loss(drill: tuple[Drill, Cluster, Lab]) -> None:
    d, _cluster, lab = drill
    d.settings = replace(d.settings, soak_loss=0.02)
    try:
        m = d.run(SOAK, soak_seconds=20)
    finally:
        d.settings = replace(d.settings, soak_loss=0.0)
    assert all(lab.loss(h.name) is None for h in lab.hosts), "the soak left loss behind"
    assert m.vip_moves == 0, (m.problems, m.lb_log)
    assert m.direct_total, "no probe beside the VIP"
    _check_common(m, d)
    assert m.invariants_ok, (m.problems, m.lb_log)
