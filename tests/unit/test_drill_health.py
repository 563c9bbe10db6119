"""The drill's "is the setup whole" check on HAProxy's own words: a server on its way down is UP
for a client now, but not settled (a check failed during a fault that is over)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

from fakes import ROOT
from test_phases_verify import FIELDS, row

from hakube.spec.load import load_cluster_file
from hakube_lab.addressing import LabError
from hakube_lab.drill.health import LB_LOG, HealthCheck
from hakube_lab.lab import Lab


class FakeLab:
    """A clearly marked fake of what the check asks a lab: every unit is active, each
    balancer's `show stat` is the one given, its journal has one line; `off` hosts are down."""

    def __init__(self, stats: dict[str, str], off: Sequence[str] = ()) -> None:
        self.stats, self.off = stats, off
        self.plan = SimpleNamespace(slb=None)

    def nsenter(
        self, host: str, command: Sequence[str], **_kw: Any
    ) -> subprocess.CompletedProcess[str]:
        if host in self.off:
            raise LabError(f"{host} is not running")
        if "journalctl" in command[-1]:
            out = f"{host} haproxy[1]: Server kube-apiserver/cp2 is DOWN via checks\n"
        else:
            out = "active\n" * 4 + "---\n" + self.stats.get(host, "")
        return subprocess.CompletedProcess(list(command), 0, out, "")


def show_stat(*servers: tuple[str, str]) -> str:
    """hakube's layout: one `kube-apiserver` backend, a server per control plane."""
    lines = ["# " + "".join(f + "," for f in FIELDS)]
    for name, status in servers:
        lines.append(row(pxname="kube-apiserver", svname=name, status=status, type="2",
                         check_status="L7OK"))  # fmt: skip
    return "\n".join(lines) + "\n"


def health_check(cp2_status: str) -> HealthCheck:
    # local-lb: every node balances, no VIP to look for in network namespaces.
    cluster = load_cluster_file(ROOT / "examples/local-lb.yaml").cluster
    stats = {h.name: show_stat(("cp1", "UP"), ("cp2", "UP"), ("cp3", "UP")) for h in cluster.hosts}
    stats["worker1"] = show_stat(("cp1", "UP"), ("cp2", cp2_status), ("cp3", "UP"))
    return HealthCheck(cluster, cast(Lab, FakeLab(stats)))


def test_a_server_one_failed_check_from_down_is_up_but_not_settled() -> None:
    hc = health_check("UP 1/2")
    assert hc.check().ok
    settled = hc.check(settled=True)
    assert not settled.ok
    assert settled.problems == ["worker1: backends failing checks: worker1→cp2 (UP 1/2)"]


def test_a_server_on_its_way_up_is_down_either_way() -> None:
    hc = health_check("DOWN 1/2")
    for h in (hc.check(), hc.check(settled=True)):
        assert h.problems == ["worker1: backends not UP: worker1→cp2"]


def test_every_server_up_is_whole_and_settled() -> None:
    hc = health_check("UP")
    assert hc.check().ok
    assert hc.check(settled=True).ok
    assert hc.wait_whole(timeout=0).ok


def test_the_log_of_a_failed_run_names_each_balancer_and_skips_one_powered_off() -> None:
    cluster = load_cluster_file(ROOT / "examples/local-lb.yaml").cluster
    hc = HealthCheck(cluster, cast(Lab, FakeLab({}, off=["cp2"])))
    log = hc.lb_log(1_800_000_000.7)
    assert [line.split(":")[0] for line in log] == [
        h.name for h in cluster.hosts if h.name != "cp2"
    ]
    assert log[0] == "cp1: cp1 haproxy[1]: Server kube-apiserver/cp2 is DOWN via checks"
    assert "--since @1800000000 " in LB_LOG.format(since=1_800_000_000)
