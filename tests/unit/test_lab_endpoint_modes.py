"""`hakube lab up --endpoint-mode`: the plan, the cluster file, the lab balancer and how the drill
stands and judges in modes without a VIP (pure parts; the lab tests run them on real hosts)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fakes import SECRETS
from rich.console import Console

from hakube.render.haproxy import render_haproxy
from hakube.render.host import hosts_block
from hakube.spec.load import load_cluster_file
from hakube.spec.model import Cluster, EndpointMode
from hakube.state import StateDir
from hakube_lab.addressing import LabInputError, plan_lab
from hakube_lab.clusterfile import render_cluster_file
from hakube_lab.drill.front import front_of, inapplicable, summary, target_host
from hakube_lab.drill.invariants import invariants
from hakube_lab.drill.report import Marks, Request, compute_metrics
from hakube_lab.drill.scenarios import SCENARIOS, DrillError
from hakube_lab.drill.workflow import DrillPlan, DrillReport, figures_table, run_comparison
from hakube_lab.lab import Lab
from hakube_lab.slb import CHECK_FALL, CHECK_INTERVAL_S, slb_config
from hakube_lab.statefile import read_plan, write_state


def _lab(tmp_path: Path, mode: str, workers: int = 1) -> tuple[Lab, Cluster]:
    lab = Lab(plan_lab("hkx", 3, workers, "10.123.233.0/24", endpoint_mode=mode), tmp_path)
    path = tmp_path / "cluster.yaml"
    path.write_text(render_cluster_file(lab.plan, tmp_path))
    return lab, load_cluster_file(path).cluster


def test_cloud_lb_lab_adds_a_balancer_host_outside_the_cluster(tmp_path: Path) -> None:
    lab, cluster = _lab(tmp_path, "cloud-lb")
    assert lab.plan.slb is not None
    assert (lab.plan.slb.name, str(lab.plan.slb.address)) == ("slb", "10.123.233.10")
    assert "slb" not in [h.name for h in cluster.hosts]
    assert cluster.endpoint.mode is EndpointMode.CLOUD_LB
    assert str(cluster.endpoint.lb_address) == "10.123.233.10"
    assert cluster.endpoint.lb_port == 6443
    assert cluster.lb_hosts == []


def test_cloud_lb_control_planes_resolve_the_api_to_themselves_workers_to_the_balancer(
    tmp_path: Path,
) -> None:
    _, cluster = _lab(tmp_path, "cloud-lb")
    name = cluster.api_name
    for h in cluster.hosts:
        first = hosts_block(cluster, h).content.splitlines()[0]
        want = "127.0.0.1" if h.name.startswith("cp") else "10.123.233.10"
        assert first == f"{want} {name}", h.name


def test_local_lb_lab_balances_on_every_node_on_loopback_without_a_vip(tmp_path: Path) -> None:
    lab, cluster = _lab(tmp_path, "local-lb")
    assert lab.plan.slb is None
    assert cluster.endpoint.vip is None
    assert [h.name for h in cluster.lb_hosts] == ["cp1", "cp2", "cp3", "w1"]
    w1 = next(h for h in cluster.hosts if h.name == "w1")
    cfg = render_haproxy(cluster, w1, SECRETS)[0].content
    assert "bind 127.0.0.1:8443" in cfg
    assert cfg.count("server cp") == 3
    assert hosts_block(cluster, w1).content.startswith(f"127.0.0.1 {cluster.api_name}\n")


def test_unknown_endpoint_mode_is_refused_as_bad_input() -> None:
    with pytest.raises(LabInputError, match=r"endpoint mode 'none'.*vip, cloud-lb, local-lb"):
        plan_lab("hkx", 3, 1, "10.123.233.0/24", endpoint_mode="none")


def test_state_keeps_the_endpoint_mode_and_old_state_means_vip(tmp_path: Path) -> None:
    plan = plan_lab("hkx", 3, 1, "10.123.233.0/24", endpoint_mode="cloud-lb")
    (tmp_path / "hkx").mkdir()
    path = tmp_path / "hkx" / "state.json"
    write_state(path, plan, Path("/none"), Path("/none"))
    assert read_plan("hkx", tmp_path) == plan
    path.write_text(path.read_text().replace('"endpoint_mode": "cloud-lb",', ""))
    assert read_plan("hkx", tmp_path).endpoint_mode == "vip"


def test_slb_config_balances_to_every_control_plane_with_slb_default_checks(
    tmp_path: Path,
) -> None:
    lab, _cluster = _lab(tmp_path, "cloud-lb")
    cfg = slb_config(lab)
    assert "bind 10.123.233.10:6443" in cfg
    for i in (1, 2, 3):
        assert f"server cp{i} 10.123.233.1{i}:6443" in cfg
    assert f"check inter {CHECK_INTERVAL_S}s fall {CHECK_FALL}" in cfg
    assert "mode tcp" in cfg
    assert "redispatch" not in cfg, "SLB does not retry on another backend"
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed: config syntax not checked")
    path = tmp_path / "slb.cfg"
    path.write_text(cfg)
    res = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_front_without_a_vip_probes_from_a_worker_namespace(tmp_path: Path) -> None:
    lab, cluster = _lab(tmp_path, "cloud-lb")
    f = front_of(cluster, lab)
    assert (f.address, f.port, f.netns) == ("10.123.233.10", 6443, "hk-hkx-w1")
    assert f.tls_name == cluster.api_name
    assert "inside worker w1's network namespace" in f.vantage
    assert target_host(cluster, f, []) == "cp1"
    assert summary(SCENARIOS["host-down"].summary, f).startswith("power a control plane off")
    lab, cluster = _lab(tmp_path, "local-lb")
    f = front_of(cluster, lab)
    assert (f.address, f.port, f.netns) == ("127.0.0.1", 8443, "hk-hkx-w1")
    assert "w1's own HAProxy on 127.0.0.1:8443" in f.vantage


def test_front_with_a_vip_probes_from_the_machine_and_breaks_the_owner(tmp_path: Path) -> None:
    lab, cluster = _lab(tmp_path, "vip")
    f = front_of(cluster, lab)
    assert (f.address, f.netns) == ("10.123.233.100", None)
    assert target_host(cluster, f, ["cp2"]) == "cp2"
    assert summary(SCENARIOS["host-down"].summary, f).startswith("power the VIP owner off")
    assert inapplicable(f, list(SCENARIOS)) == {}


def test_compare_tutorial_is_refused_without_a_vip(tmp_path: Path) -> None:
    lab, cluster = _lab(tmp_path, "local-lb")
    state = StateDir(cluster.name, root=tmp_path / "state")
    with pytest.raises(DrillError, match="endpoint mode local-lb has no VIP"):
        run_comparison(cluster, lab, state, DrillPlan(["host-down"], tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_drill_without_a_worker_is_refused_in_modes_without_a_vip(tmp_path: Path) -> None:
    lab, cluster = _lab(tmp_path, "local-lb", workers=0)
    with pytest.raises(DrillError, match=r"no worker.*--workers 1"):
        front_of(cluster, lab)


def test_vip_scenarios_and_the_soak_are_skipped_with_a_reason_without_a_vip(
    tmp_path: Path,
) -> None:
    lab, cluster = _lab(tmp_path, "cloud-lb")
    names = ["haproxy-down", "keepalived-down", "isolate", "host-down", "apiserver-down", "soak"]
    skipped = inapplicable(front_of(cluster, lab), names)
    assert sorted(skipped) == ["haproxy-down", "keepalived-down", "soak"]
    assert all("no VIP" in why for why in skipped.values())


def _run(fail_at: list[float], target: str = "cp1") -> tuple[list[Request], Marks]:
    # 50 req/s from 0 to 12 s; break at 2, restore at 8.
    reqs = [Request(t / 50, t / 50 + 0.01, not any(abs(t / 50 - x) < 0.1 for x in fail_at))
            for t in range(600)]  # fmt: skip
    return reqs, Marks(0.0, 2.0, 2.1, 8.0, 8.5, 12.0)


def test_without_a_vip_failures_are_a_figure_but_the_balancer_must_route_around(
    tmp_path: Path,
) -> None:
    _, cluster = _lab(tmp_path, "cloud-lb")
    sc = SCENARIOS["host-down"]
    reqs, marks = _run([2.5, 3.0])
    m = compute_metrics("host-down", "x", 1, reqs, [], marks, target="cp1")
    assert m.failed > 0
    assert (m.moved, m.vip_moves) == (False, 0)
    assert invariants(sc, m, reqs, marks, cluster, vip=False) == []
    reqs, marks = _run([7.5])
    m = compute_metrics("host-down", "x", 1, reqs, [], marks, target="cp1")
    assert any("had not routed around cp1" in p for p in invariants(sc, m, reqs, marks, cluster,
                                                                   vip=False))  # fmt: skip
    # etcd losing one member keeps quorum: no failure is allowed, VIP or not.
    sc = SCENARIOS["etcd-member-down"]
    m = compute_metrics("etcd-member-down", "x", 1, reqs, [], marks, target="cp1")
    assert any("expected none" in p for p in invariants(sc, m, reqs, marks, cluster, vip=False))


def test_report_names_mode_vantage_and_skipped_scenarios() -> None:
    r = DrillReport("hakube defaults", endpoint_mode="local-lb", vantage="inside worker w1",
                    skipped={"haproxy-down": "its point is a VIP move"})  # fmt: skip
    data = r.as_dict()
    assert (data["endpoint_mode"], data["vantage"]) == ("local-lb", "inside worker w1")
    assert data["skipped"] == {"haproxy-down": "its point is a VIP move"}
    console = Console(record=True, width=400)
    console.print(figures_table([r]))
    # The caption wraps to the table's width.
    text = " ".join(console.export_text().split())
    assert "endpoint mode local-lb; probe from inside worker w1" in text
    assert "skipped in endpoint mode local-lb: haproxy-down (its point is a VIP move)" in text
