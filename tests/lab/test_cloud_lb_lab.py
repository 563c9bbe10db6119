"""`lab up --endpoint-mode cloud-lb` on real lab hosts: the LAB-ONLY balancer host cannot hairpin,
the applied cluster resolves the API per role, and the drill breaks a control plane behind the
balancer with the probe inside a worker's namespace.

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
from hakube_lab.drill.runner import Drill
from hakube_lab.drill.scenarios import Settings
from hakube_lab.drill.workflow import DrillPlan, run_drill, write_ca
from hakube_lab.slb import hairpin_blocked_sources

pytestmark = pytest.mark.lab

NAME = "hkc3"
SUBNET = "10.123.235.0/24"
SLB = "10.123.235.10"


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Cluster, Path]]:
    state_root = tmp_path_factory.mktemp("state")
    with converged_lab(NAME, SUBNET, "cloud-lb", state_root) as (lab, cluster):
        yield lab, cluster, tmp_path_factory.mktemp("drill")


def _readyz(lab: Lab, host: str, url: str) -> str:
    cmd = f"curl -sk -m 2 -o /dev/null -w '%{{http_code}}' {url}/readyz; true"
    return lab.run(host, cmd).stdout.strip()


def test_the_balancer_cannot_hairpin_and_the_api_name_resolves_per_role(
    applied: tuple[Lab, Cluster, Path],
) -> None:
    lab, cluster, _ = applied
    assert hairpin_blocked_sources(lab) == ["10.123.235.11", "10.123.235.12", "10.123.235.13"]
    name = cluster.api_name
    # A worker reaches the API through the balancer, by name and by address.
    assert lab.run("w1", f"getent hosts {name}").stdout.split()[0] == SLB
    assert _readyz(lab, "w1", f"https://{name}:6443") == "200"
    # A control plane gets no answer from the balancer (curl's 000: timed out) but reaches its
    # own apiserver through the name, which resolves to 127.0.0.1 there.
    assert _readyz(lab, "cp1", f"https://{SLB}:6443") == "000"
    assert lab.run("cp1", f"getent hosts {name}").stdout.split()[0] == "127.0.0.1"
    assert _readyz(lab, "cp1", f"https://{name}:6443") == "200"


def test_host_down_behind_the_balancer_probed_from_a_worker(
    applied: tuple[Lab, Cluster, Path],
) -> None:
    lab, cluster, out = applied
    plan = DrillPlan(["host-down", "haproxy-down"], out, state=StateDir(cluster.name),
                     settings=Settings())  # fmt: skip
    report = run_drill(cluster, lab, plan)
    assert report.endpoint_mode == "cloud-lb"
    assert f"inside worker w1's network namespace (hk-{NAME}-w1), to the balancer {SLB}:6443" in (
        report.vantage
    )
    assert list(report.skipped) == ["haproxy-down"]
    [m] = report.runs
    assert (m.scenario, m.target) == ("host-down", "cp1")
    assert (m.moved, m.vip_moves) == (False, 0)
    assert m.ok > 0
    assert m.end_healthy, m.problems
    assert report.ok, (report.errors, m.problems)
    assert Drill(cluster, lab, out, cafile=write_ca(StateDir(cluster.name), out)).health().ok
