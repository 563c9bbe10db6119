"""Host phases on scripted hosts: preflight refusals and repairs of what a killed run left."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from test_apply_scripted import CLUSTER_DATA, NAME

from hakube.facts.host import POLICY_RC, HostFacts, OSRelease
from hakube.phases.context import Context, RunData
from hakube.phases.host import check_host, repair_policy_rc
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.transport.scripted import Reply, ScriptedTransport


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster_data(CLUSTER_DATA).cluster


def context(
    cluster: Cluster, tmp_path: Path, selected: frozenset[str] = frozenset(), **facts: object
) -> tuple[Context, dict[str, ScriptedTransport]]:
    state = StateDir(NAME, root=tmp_path)
    scripted = {h.name: ScriptedTransport(h.name) for h in cluster.hosts}
    ts: dict[str, Transport] = dict(scripted)
    run = RunData(cluster, state.secrets(), state, selected=selected, record=state.record())
    ctx = Context.create(run, ts)
    for h in cluster.hosts:
        f = HostFacts(os=OSRelease(id="debian"), hostname=h.name, cpus=2, mem_mb=4000)
        f.addresses = {"eth0": [f"{h.address}/24"]}
        f.macs = {"eth0": f"52:54:00:00:00:{int(h.address.packed[-1]):02x}"}
        for key, value in facts.items():
            setattr(f, key, value)
        ctx.facts.set(h, f)
    return ctx, scripted


def test_red_hat_family_hosts_are_refused_by_preflight(cluster: Cluster, tmp_path: Path) -> None:
    ctx, _ = context(
        cluster, tmp_path, os=OSRelease(id="rocky", like=("rhel", "centos", "fedora"),
                                        pretty="Rocky Linux 9.3 (Blue Onyx)"),
    )  # fmt: skip
    problems = check_host(ctx, cluster.host("cp1"))
    assert problems == [
        "'Rocky Linux 9.3 (Blue Onyx)' is a Red Hat family system: this hakube converges Debian "
        "and Ubuntu hosts only (apt); use one of those for this host"
    ]
    assert check_host(context(cluster, tmp_path)[0], cluster.host("cp1")) == []


def test_preflight_refuses_another_installed_kubernetes_version(
    cluster: Cluster, tmp_path: Path
) -> None:
    ctx, _ = context(
        cluster, tmp_path, frozenset({"kubeadm/init"}), packages={"kubeadm": "1.30.10-1.1"}
    )
    problems = check_host(ctx, cluster.host("w1"))
    assert problems == [
        f"kubeadm 1.30.10 is installed but kubernetes.version is {cluster.kubernetes.version}: "
        "upgrade is not supported yet; set kubernetes.version back to 1.30.10"
    ]


@pytest.mark.parametrize(
    ("saved", "restore"),
    [
        ([f"{POLICY_RC}.hakube-saved.Ab12Cd"], f"cp -p {POLICY_RC}.hakube-saved.Ab12Cd"),
        ([], f"rm -f {POLICY_RC}"),
    ],
)
def test_prepare_puts_back_a_policy_rc_a_killed_install_left(
    cluster: Cluster, tmp_path: Path, saved: list[str], restore: str
) -> None:
    """SIGKILL or power loss skip the install's trap: the next run repairs it first."""
    ctx, ts = context(cluster, tmp_path, policy_rc_left=True, policy_rc_saved=saved)
    ctx.report.phase = "prepare"
    t = ts["w1"]
    t.on(re.compile(r".*policy-rc\.d.*"), Reply())
    asyncio.run(repair_policy_rc(ctx, cluster.host("w1")))
    (command,) = t.commands
    assert restore in command
    assert all(f"rm -f {p}" in command for p in saved)
    assert [c.description for c in ctx.do.changes] == [
        "put back the policy-rc.d a killed install left behind"
    ]
    assert not ctx.facts["w1"].policy_rc_left
