"""`lab up --endpoint-mode local-lb` on real lab hosts: HAProxy on every node on 127.0.0.1, no
VIP anywhere, and the drill stops a control plane's apiserver, then cuts a control plane's link,
with the probe inside a worker's namespace going through that worker's own HAProxy.

Own lab name and subnet; the module-scoped lab is always torn down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import converged_lab

from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube_lab import Lab
from hakube_lab.drill.scenarios import Settings
from hakube_lab.drill.workflow import DrillPlan, run_drill

pytestmark = pytest.mark.lab

NAME = "hkc4"
SUBNET = "10.123.236.0/24"


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Cluster, Path]]:
    state_root = tmp_path_factory.mktemp("state")
    with converged_lab(NAME, SUBNET, "local-lb", state_root) as (lab, cluster):
        yield lab, cluster, tmp_path_factory.mktemp("drill")


def test_every_node_balances_on_loopback_and_no_host_holds_a_vip(
    applied: tuple[Lab, Cluster, Path],
) -> None:
    lab, cluster, _ = applied
    for h in lab.hosts:
        listening = lab.run(h.name, "ss -Hltn 'sport = :8443'").stdout
        assert "127.0.0.1:8443" in listening, h.name
        assert lab.run(h.name, "systemctl is-active keepalived", check=False).stdout.strip() != (
            "active"
        )
        assert lab.run(h.name, f"getent hosts {cluster.api_name}").stdout.split()[0] == "127.0.0.1"
    assert lab.run("w1", "curl -sk -m 2 -o /dev/null -w '%{http_code}' "
                   "https://127.0.0.1:8443/readyz").stdout == "200"  # fmt: skip


@pytest.mark.parametrize("scenario", ["apiserver-down", "isolate"])
def test_a_lost_control_plane_is_routed_around_by_a_workers_local_endpoint(
    applied: tuple[Lab, Cluster, Path], scenario: str
) -> None:
    # isolate means something without a VIP too: the worker's HAProxy must find that cp1
    # stopped answering (no FIN, no RST) and route around it before the link comes back.
    lab, cluster, out = applied
    plan = DrillPlan([scenario], out, state=StateDir(cluster.name), settings=Settings())
    report = run_drill(cluster, lab, plan)
    assert report.endpoint_mode == "local-lb"
    assert "inside worker w1's network namespace" in report.vantage
    assert "w1's own HAProxy on 127.0.0.1:8443" in report.vantage
    assert report.skipped == {}
    [m] = report.runs
    assert (m.scenario, m.target, m.vip_moves) == (scenario, "cp1", 0)
    assert m.ok > 0
    assert m.end_healthy, m.problems
    assert report.ok, (report.errors, m.problems)
