"""Membership on real lab hosts under load: add two control planes, then remove the VIP owner and
one other, while the drill's probe sends 50 requests a second through the VIP. External etcd;
kubeadm and CNI skipped (the lab cannot run them), LAB-ONLY apiserver stand-ins answer /readyz
(hakube_lab.standin). The replace step (power one off, a new host in its place) does not fit the
lab-test budget: bench/membership.py runs the whole sequence and prints the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hakube.state import StateDir
from hakube_lab import Lab, running_lab
from hakube_lab.membership import MembershipRun, StepFigures, run_sequence

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("hkm1", control_planes=3, workers=1, subnet="10.123.225.0/24",
                     spares=2) as lab:  # fmt: skip
        yield lab


@pytest.fixture(scope="module")
def steps(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, StepFigures]:
    root: Path = tmp_path_factory.mktemp("membership")
    run = MembershipRun(lab, StateDir("hkm1", root=root / "state"), root / "out", log=print)
    return {f.step: f for f in run_sequence(run, replace=False)}


def test_the_spares_are_not_in_the_first_cluster_file(lab: Lab) -> None:
    text = lab.cluster_file.read_text()
    assert "name: cp1" in text
    assert "s1" not in text


@pytest.mark.parametrize("step", ["add", "remove"])
def test_every_step_converges_without_a_failed_request(
    steps: dict[str, StepFigures], step: str
) -> None:
    """Issue 10's target: while two control planes join, and then the VIP owner and one other
    leave, not one of the probe's requests through the VIP fails after one retry. It held in
    runs on an idle machine and with two busy loops beside the lab. A failure is attributed in
    `failed_detail` (time, error) and `lb_log` (HAProxy UP/DOWN, keepalived state changes), and
    the step lists hakube's etcd changes. Causes found and fixed on the way: a stand-in asking a
    just-removed member (the lists change first), dpkg starving new hosts (preinstalled), the
    etcd leader removed (every apiserver unready until a new election: a leaving leader now
    hands the leadership over first) and the VIP owner's keepalived reload giving the VIP away
    (`vrrp_rt_priority`'s RLIMIT_RTTIME killed the VRRP process on every reload; real-time
    now comes from a systemd drop-in). Still open: HAProxy's checks share the 100 ms client
    connect timeout, so a much heavier load could mark busy servers DOWN together."""
    f = steps[step]
    assert f.ok, f.failures
    assert f.requests > 0
    assert f.failed == 0, f.as_dict()


@pytest.mark.parametrize("step", ["add", "remove"])
def test_etcd_keeps_quorum_and_every_haproxy_lists_exactly_the_control_planes(
    steps: dict[str, StepFigures], step: str
) -> None:
    f = steps[step]
    assert f.quorum_always, f.as_dict()
    assert f.backends_exact, f.as_dict()
    assert f.etcd_members == sorted(f.control_planes)


def test_removed_hosts_keep_nothing_of_hakube(steps: dict[str, StepFigures]) -> None:
    removed = steps["remove"].leftovers
    assert len(removed) == 2
    assert all(v == [] for v in removed.values()), removed
