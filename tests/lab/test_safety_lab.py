"""Safe re-runs on real lab hosts: a dropped SSH session mid-install, a wrong etcd key owner,
and the cluster identity each host carries.

One lab (hks1: three control-plane hosts, external etcd on them) for the whole module. The lab
cannot install kubeadm: the kubeadm and cni phases are not run here (scripted tests cover them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_apply_lab import cluster_of, run_apply, state_root

from hakube.facts.host import POLICY_MARK, POLICY_RC
from hakube.phases.context import Context, RunData
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Redactor, TransportError
from hakube.workflows.apply import ssh_transports
from hakube_lab import Lab, running_lab

__all__ = ["state_root"]  # a module-scoped fixture shared with the apply lab tests

pytestmark = pytest.mark.lab

#: What an operator might already have in policy-rc.d: hakube must put it back exactly.
OPERATORS_POLICY = "#!/bin/sh\n# site policy: allow everything\nexit 0\n"
PHASES = ["preflight", "prepare", "packages", "etcd"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("hks1", control_planes=3, workers=0, subnet="10.123.240.0/24") as lab:
        yield lab


def sh(lab: Lab, host: str, command: str) -> str:
    return lab.run(host, command).stdout


async def _install_and_drop(cluster: Cluster, root: Path, host_name: str) -> str:
    """Start hakube's guarded install on one host, then drop the SSH connection mid-way.

    Returns policy-rc.d as another session saw it while the install ran.
    """
    state = StateDir(cluster.name, root=root)
    host = cluster.host(host_name)
    async with ssh_transports(cluster, trust_new_hosts=False, redactor=Redactor()) as (ts, errs):
        assert not errs, errs
        ctx = Context.create(RunData(cluster, state.secrets(), state), ts)
        await ctx.facts.gather(host)
        assert "haproxy" not in ctx.facts[host].packages
        install = asyncio.create_task(ctx.do.ensure_packages(host, ["haproxy", "socat"]))
        seen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not seen:
            res = await ts[host_name].run(f"cat {POLICY_RC} 2>/dev/null", check=False)
            if POLICY_MARK in res.stdout:
                seen = res.stdout
            else:
                await asyncio.sleep(0.05)
        # The session running apt goes away, as when a laptop lid closes mid-apply.
        await ts[host_name].close()
        with contextlib.suppress(TransportError, OSError):
            await install
        return seen


def test_every_host_carries_the_cluster_id_and_another_state_dir_is_refused(
    lab: Lab, state_root: Path, tmp_path: Path
) -> None:
    cluster = cluster_of(lab)
    first = run_apply(cluster, state_root, only=PHASES)
    assert first.ok, first.failures
    cluster_id = StateDir(cluster.name, root=state_root).record().cluster_id
    for name in ("cp1", "cp2", "cp3"):
        assert sh(lab, name, "cat /etc/hakube/cluster-id").strip() == cluster_id
    # Same cluster name, other state directory (another CA): refused before any change.
    other = run_apply(cluster, tmp_path / "elsewhere", only=PHASES)
    assert {f.host for f in other.failures} == {"cp1", "cp2", "cp3"}
    assert all("belongs to cluster" in f.message for f in other.failures)
    assert other.changes == []
    assert not (tmp_path / "elsewhere" / cluster.name / "pki").exists()


def test_a_dropped_ssh_session_mid_install_leaves_services_able_to_restart(
    lab: Lab, state_root: Path
) -> None:
    """Runs after the first apply: the lab mirror is configured, so apt can install."""
    cluster = cluster_of(lab)
    lab.run("cp2", f"printf '{OPERATORS_POLICY}' > {POLICY_RC} && chmod 755 {POLICY_RC}")
    seen = asyncio.run(_install_and_drop(cluster, state_root, "cp2"))
    assert POLICY_MARK in seen  # the guard was in place while apt ran
    # The install finishes on its own and the trap puts the operator's file back.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        busy = lab.run(
            "cp2", "pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null", check=False
        )
        if busy.returncode != 0 and sh(lab, "cp2", f"cat {POLICY_RC}") == OPERATORS_POLICY:
            break
        time.sleep(1)
    assert sh(lab, "cp2", f"cat {POLICY_RC}") == OPERATORS_POLICY
    assert sh(lab, "cp2", f"ls {POLICY_RC}.hakube-saved.* 2>/dev/null || true").strip() == ""
    # Services start and restart through invoke-rc.d again (a left-behind guard says 101).
    # Installed, and held ("hi"): an unattended upgrade cannot restart it everywhere at once.
    lab.run("cp2", "dpkg-query -W -f='${db:Status-Abbrev}' haproxy | grep -q '^hi'")
    lab.run("cp2", "invoke-rc.d haproxy restart && systemctl is-active -q haproxy")
    lab.run("cp2", f"rm -f {POLICY_RC}; systemctl stop haproxy")


def test_an_etcd_key_owned_by_root_is_given_back_to_etcd_and_the_member_rejoins(
    lab: Lab, state_root: Path
) -> None:
    cluster = cluster_of(lab)
    key = "/etc/etcd/pki/server.key"
    lab.run("cp3", f"chown root:root {key}")
    again = run_apply(cluster, state_root, only=PHASES)
    assert again.ok, again.failures
    assert [(c.host, c.description) for c in again.changes] == [
        ("cp3", f"chown etcd:etcd {key} (was root:root)"),
        ("cp3", "restart etcd (certificates or config changed)"),
    ]
    assert sh(lab, "cp3", f"stat -c %U:%G {key}").strip() == "etcd:etcd"
    noop = run_apply(cluster, state_root, only=PHASES)
    assert noop.ok, noop.failures
    assert noop.changes == []
