"""apply on real lab hosts: converge, prove the HA pieces, re-apply as a no-op, resume a killed run.

The lab cannot install kubeadm/kubelet (no registry here carries them): these tests skip the
kubeadm and cni phases and serve /readyz from the LAB-ONLY stand-in (hakube_lab.standin).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hakube.spec import load_cluster_file
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Redactor
from hakube.workflows.apply import ApplyResult, apply, ssh_transports
from hakube_lab import Lab, running_lab
from hakube_lab.drill import probe as probe_module
from hakube_lab.drill.report import parse_vip
from hakube_lab.standin import install_all

pytestmark = pytest.mark.lab

SKIP = ["kubeadm", "cni"]
HAKUBE = [sys.executable, "-m", "hakube.cli"]


@pytest.fixture(scope="module")
def lab5() -> Iterator[Lab]:
    with running_lab("hkapply", control_planes=3, workers=2, subnet="10.123.202.0/24") as lab:
        yield lab


@pytest.fixture(scope="module")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


def cluster_of(lab: Lab) -> Cluster:
    return load_cluster_file(lab.cluster_file).cluster


def run_apply(cluster: Cluster, root: Path, **kw: object) -> ApplyResult:
    return asyncio.run(apply(cluster, state=StateDir(cluster.name, root=root), **kw))  # type: ignore[arg-type]


def cli_env(root: Path) -> dict[str, str]:
    return {**os.environ, "HAKUBE_STATE_DIR": str(root)}


@pytest.fixture(scope="module")
def converged(lab5: Lab, state_root: Path) -> ApplyResult:
    """First apply, killed mid-run on purpose, then resumed to convergence."""
    cluster = cluster_of(lab5)

    async def standins() -> None:
        async with ssh_transports(cluster, trust_new_hosts=False, redactor=Redactor()) as (t, e):
            assert not e
            await install_all(cluster, StateDir(cluster.name, root=state_root), t)

    asyncio.run(standins())
    proc = subprocess.Popen(
        [*HAKUBE, "apply", "-f", str(lab5.cluster_file), "--skip-phases", "kubeadm,cni",
         "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(state_root),
    )  # fmt: skip
    assert proc.stdout is not None
    killed_in = None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "change" and event.get("phase") == "runtime":
            killed_in = "runtime"
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert killed_in == "runtime", "the first apply ended before it could be interrupted"
    result = run_apply(cluster, state_root, skip=SKIP)
    assert result.ok, result.failures
    return result


def test_apply_converges_with_vip_backends_and_etcd(converged: ApplyResult) -> None:
    report = converged.report
    assert report is not None
    assert len(report.vip_owners) == 1
    assert report.vip_owners[0] in {"cp1", "cp2", "cp3"}
    assert len(report.backends) == 9
    assert all(b.status.startswith("UP") for b in report.backends)
    assert report.etcd_members == ["cp1", "cp2", "cp3"]
    assert len(report.etcd_healthy) == 3
    assert report.problems == []


def test_vip_answers_on_the_frontend_port(lab5: Lab, converged: ApplyResult) -> None:
    cluster = cluster_of(lab5)
    url = f"https://{cluster.endpoint.vip}:{cluster.endpoint.port}/readyz"
    out = lab5.run("w1", f"curl -sk --max-time 2 {url}").stdout
    assert out == "ok"


def test_second_apply_changes_nothing(lab5: Lab, state_root: Path, converged: ApplyResult) -> None:
    again = run_apply(cluster_of(lab5), state_root, skip=SKIP)
    assert again.ok
    assert again.changes == []


def test_dry_run_reports_a_drifted_file_without_touching_it(
    lab5: Lab, state_root: Path, converged: ApplyResult
) -> None:
    lab5.run("cp2", "echo '# hand edit' >> /etc/haproxy/haproxy.cfg")
    before = lab5.run("cp2", "sha256sum /etc/haproxy/haproxy.cfg").stdout
    dry = run_apply(cluster_of(lab5), state_root, skip=SKIP, dry_run=True)
    assert dry.ok
    assert [(c.host, c.description) for c in dry.changes if c.phase == "lb/haproxy"] == [
        ("cp2", "write /etc/haproxy/haproxy.cfg"),
        ("cp2", "reload haproxy"),
    ]
    assert lab5.run("cp2", "sha256sum /etc/haproxy/haproxy.cfg").stdout == before
    fixed = run_apply(cluster_of(lab5), state_root, skip=SKIP)
    assert [c.description for c in fixed.changes] == [
        "write /etc/haproxy/haproxy.cfg",
        "reload haproxy",
    ]
    assert "hand edit" not in lab5.run("cp2", "cat /etc/haproxy/haproxy.cfg").stdout


def test_state_dir_holds_secrets_0600_and_logs_without_them(
    lab5: Lab, state_root: Path, converged: ApplyResult
) -> None:
    state = StateDir(cluster_of(lab5).name, root=state_root)
    assert state.path.stat().st_mode & 0o777 == 0o700
    assert state.secrets_file.stat().st_mode & 0o777 == 0o600
    secrets = state.secrets().values()
    for log in (state.path / "logs").iterdir():
        assert log.stat().st_mode & 0o777 == 0o600
        text = log.read_text()
        assert not [s for s in secrets if s in text]


def test_unreachable_host_fails_clearly_and_changes_nothing_else(
    lab5: Lab, tmp_path: Path, converged: ApplyResult
) -> None:
    doc = yaml.safe_load(lab5.cluster_file.read_text())
    doc["hosts"][4]["address"] = "10.123.202.99"  # w2 moved to an address nobody has
    doc["ssh"]["connect_timeout"] = 2
    bad = load_cluster_data(doc).cluster
    result = run_apply(bad, tmp_path, skip=SKIP)
    assert not result.ok
    assert [f.host for f in result.failures] == ["w2"]
    assert result.failures[0].phase == "connect"
    assert "10.123.202.99" in result.failures[0].message
    assert result.changes == []


def test_a_router_id_change_stops_every_lb_host_then_starts_them_never_two_vip_holders(
    lab5: Lab, tmp_path: Path, state_root: Path, converged: ApplyResult
) -> None:
    """Hosts on the old and the new router id would each see no peer and both become MASTER.
    A watcher process reads every LB host's namespace (`ip -n`) every 20 ms throughout the
    apply. Last in this module: it leaves the lab on the new router id."""
    doc = yaml.safe_load(lab5.cluster_file.read_text())
    old = load_cluster_data(doc).cluster.endpoint.vrrp.router_id
    new = old % 255 + 1
    doc.setdefault("endpoint", {}).setdefault("vrrp", {})["router_id"] = new
    changed = tmp_path / "cluster.yaml"
    changed.write_text(yaml.safe_dump(doc))
    cluster = load_cluster_data(doc).cluster
    lbs = [h.name for h in cluster.lb_hosts]
    samples_file = tmp_path / "vip.jsonl"
    watch = [sys.executable, probe_module.__file__, "vip", "--vip", str(cluster.endpoint.vip),
             "--interval", "0.02", "--duration", "150", "--out", str(samples_file)]  # fmt: skip
    watch += [f"--lab-host={h.name}:{h.netns}:{h.veth}" for h in lab5.hosts if h.name in lbs]
    watcher = subprocess.Popen(watch, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # samples of the steady state before the change
        res = subprocess.run(
            [*HAKUBE, "apply", "-f", str(changed), "--skip-phases", "kubeadm,cni",
             "--output", "json"],
            capture_output=True, text=True, env=cli_env(state_root), timeout=140, check=False,
        )  # fmt: skip
        time.sleep(0.5)
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=10)
    samples = parse_vip(samples_file.read_text().splitlines())
    assert samples
    assert samples[0].holders
    # A handover can show both hosts within one 20 ms pass; two groups both MASTER last for
    # seconds: two holders in two passes in a row would be that.
    doubles = [
        (a.t, a.holders)
        for a, b in itertools.pairwise(samples)
        if len(a.holders) > 1 and len(b.holders) > 1
    ]
    assert not doubles, f"two VIP holders in {len(doubles)} samples in a row, first {doubles[0]}"
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    changes = [(e["host"], e["message"]) for e in events if e["event"] == "change"]
    said = (
        f"stop keepalived (planned: router id {old} → {new} cannot run beside the old settings; "
        "every LB host stops, then each starts with the new config)"
    )
    stops = [host for host, message in changes if message == said]
    assert sorted(stops) == sorted(lbs)
    # Every stop comes before the first host starts on the new config.
    first_start = next(i for i, (_h, m) in enumerate(changes) if m == "start keepalived")
    assert max(i for i, (_h, m) in enumerate(changes) if m == said) < first_start
    assert len(samples[-1].holders) == 1
    assert any(not s.holders for s in samples)  # the planned stop really left no holder
    for name in lbs:
        conf = lab5.run(name, "cat /etc/keepalived/keepalived.conf").stdout
        assert f"virtual_router_id {new}" in conf
