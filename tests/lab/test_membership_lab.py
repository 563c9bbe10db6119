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
def test_every_step_converges_with_at_most_a_few_failed_requests(
    steps: dict[str, StepFigures], step: str
) -> None:
    """Issue 10's target is 0 requests failed after one retry; the bound here stays at 1 % until
    0 has held on a loaded machine too. The 1 % still catches a VIP that moves for long or a
    backend left in HAProxy. Each failure is attributed in `failed_detail` and `lb_log`, and the
    step lists hakube's etcd changes. Causes found and fixed: a stand-in asking a just-removed
    member (the lists change first), dpkg starving new hosts (preinstalled), removing the etcd
    leader (every stand-in unready until a new election: 10 requests failed twice with http 500;
    a leaving leader now hands the leadership over first), and the VIP owner's keepalived reload
    giving the VIP away (`vrrp_rt_priority`'s RLIMIT_RTTIME killed the VRRP process on every
    reload; real-time now comes from a systemd drop-in). Not fixed: HAProxy's health checks ride
    on the 100 ms client connect timeout, so under heavy load they can mark busy servers DOWN
    together and cut their sessions (a checks backend of their own was tried and taken out
    again: with it, CI's drill lost one request when an isolated owner healed; not explained)."""
    f = steps[step]
    assert f.ok, f.failures
    assert f.requests > 0
    assert f.failed <= f.requests // 100, f.as_dict()


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
