"""Day-2 steps that cannot run on this machine or must refuse before touching a host, SCRIPTED:
kubeadm's certificate renewal (no kubeadm in the lab), snapshot checks, reset's file edits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fakes import OPS_CLUSTER as CLUSTER

from hakube.fileio import write_private
from hakube.phases.base import PhaseError
from hakube.phases.context import Context, RunData
from hakube.phases.kubeadm import ADMIN_CONF
from hakube.render.host import SWAP_MARK, remove_block, remove_swap, restore_swap
from hakube.secrets import Secrets
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.transport.scripted import Call, Reply, ScriptedTransport
from hakube.workflows.certs import renew
from hakube.workflows.ops import OpsInputError, known_cluster
from hakube.workflows.snapshot import check_snapshot_bytes, prune, read_snapshot, run_restore


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster_data(CLUSTER).cluster


def snapshot_bytes(blocks: int = 4) -> bytes:
    body = bytes(range(256)) * 2 * blocks  # whole 512-byte blocks, like a bbolt file
    return body + hashlib.sha256(body).digest()


def test_kubeadm_renewal_goes_one_control_plane_at_a_time_waiting_for_readyz(
    cluster: Cluster, tmp_path: Path
) -> None:
    state = StateDir("ops", root=tmp_path)
    write_private(state.path / "admin.conf", b"old")
    log: list[str] = []

    def logged(host: str, reply: Reply) -> Any:
        def answer(call: Call) -> Reply:
            log.append(f"{host}: {call.target.split(';')[0][:40]}")
            return reply

        return answer

    ts = {}
    for h in ("cp1", "cp2", "cp3"):
        ts[h] = ScriptedTransport(h, [
            ("kubeadm certs renew all", logged(h, Reply("renewed\n"))),
            (re.compile(r"set -e; mkdir -p /etc/kubernetes/hakube-manifests-aside.*"),
             logged(h, Reply())),
            (re.compile(r".* endpoint health --cluster -w json"), logged(h, Reply(HEALTHY))),
            (re.compile(r"for i in \$\(seq 120\); do curl -sfk .*127\.0\.0\.1:6443/readyz.*"),
             logged(h, Reply())),
        ], files={ADMIN_CONF: b"renewed admin.conf"})  # fmt: skip
    result = asyncio.run(renew(cluster, state, etcd=True, kubeadm=True, transports=dict(ts)))
    hosts_in_order = [line.split(":")[0] for line in log]
    assert hosts_in_order == ["cp1"] * 4 + ["cp2"] * 4 + ["cp3"] * 4
    # The restarted stacked member is healthy again before the apiserver is asked for /readyz.
    assert [line.split(": ", 1)[1][:12] for line in log[:4]] == [
        "kubeadm cert", "set -e", "CONTAINER_RU", "for i in $(s"
    ]  # fmt: skip
    # Stacked etcd is kubeadm's: its static pod restarts with the others, one node at a time.
    restart = next(c for c in ts["cp2"].commands if "manifests-aside" in c)
    assert "etcd.yaml" in restart
    assert "kube-apiserver.yaml" in restart
    # No fixed pause: the old processes are waited out before the manifests come back.
    assert "sleep 20" not in restart
    for process in ("kube-apiserver", "kube-scheduler", "kube-controller", "etcd"):
        assert f"pgrep -x {process} " in restart
    assert result.skipped == ["etcd: stacked (kubeadm's certificates, renewed with them)"]
    assert (state.path / "admin.conf").read_bytes() == b"renewed admin.conf"


HEALTHY = json.dumps(
    [{"endpoint": f"https://10.88.0.1{i}:2379", "health": True} for i in (1, 2, 3)]
)


def test_manifests_come_back_even_when_an_old_process_outlives_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restart script run for real, kubelet's directories under tmp_path: a process that
    will not go fails the restart, but its manifest is back in place (the node keeps serving)."""
    from hakube.workflows import apiserver, certs

    monkeypatch.setattr(apiserver, "GONE_SECONDS", 1)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for name in ("kube-apiserver", "sleep"):
        (manifests / f"{name}.yaml").write_text(name)
    t = ScriptedTransport("cp1", [(re.compile(".*"), Reply())])
    c = load_cluster_data(CLUSTER).cluster
    ctx = Context.create(
        RunData(cluster=c, secrets=Secrets("", "", "", ""), state=StateDir("ops", root=tmp_path)),
        {"cp1": t},
    )
    asyncio.run(certs._restart_static_pods(ctx, c.hosts[0], ("kube-apiserver", "sleep"), None))
    script = t.commands[0].replace("/etc/kubernetes", str(tmp_path))
    with subprocess.Popen(["sleep", "30"]) as alive:  # an "old process" that outlives the wait
        try:
            res = subprocess.run(
                ["bash", "-c", script], check=False, capture_output=True, text=True
            )
        finally:
            alive.kill()
    assert res.returncode == 1
    assert "sleep still runs" in res.stderr
    assert sorted(p.name for p in manifests.iterdir()) == ["kube-apiserver.yaml", "sleep.yaml"]
    assert not (tmp_path / "hakube-manifests-aside").exists()
    # Without such a process the same script moves both out and back and succeeds.
    quick = script.replace("pgrep -x sleep", "pgrep -x hkt-none")
    ok = subprocess.run(["bash", "-c", quick], check=False)
    assert ok.returncode == 0
    assert sorted(p.name for p in manifests.iterdir()) == ["kube-apiserver.yaml", "sleep.yaml"]


def test_a_node_whose_apiserver_does_not_come_back_stops_the_roll(
    cluster: Cluster, tmp_path: Path
) -> None:
    state = StateDir("ops", root=tmp_path)
    write_private(state.path / "admin.conf", b"old")
    ts = {
        h: ScriptedTransport(
            h,
            [
                ("kubeadm certs renew all", "ok"),
                (re.compile(r"set -e; mkdir -p .*"), ""),
                (re.compile(r".* endpoint health --cluster -w json"), HEALTHY),
                (re.compile(r"for i in .*readyz.*"), Reply(exit_status=1)),
            ],
        )
        for h in ("cp1", "cp2", "cp3")
    }
    with pytest.raises(Exception, match="exited 1"):
        asyncio.run(renew(cluster, state, etcd=False, kubeadm=True, transports=dict(ts)))
    assert ts["cp2"].commands == []


def test_a_whole_snapshot_passes_and_truncated_or_corrupt_ones_are_refused() -> None:
    good = snapshot_bytes()
    check_snapshot_bytes(good, "s.db")
    with pytest.raises(OpsInputError, match="truncated"):
        check_snapshot_bytes(good[:1000], "s.db")
    corrupt = bytearray(good)
    corrupt[100] ^= 0xFF
    with pytest.raises(OpsInputError, match="corrupt"):
        check_snapshot_bytes(bytes(corrupt), "s.db")


def test_restore_of_a_bad_file_contacts_no_host(cluster: Cluster, tmp_path: Path) -> None:
    external = load_cluster_data({**CLUSTER, "etcd": {"topology": "external"}}).cluster
    bad = tmp_path / "half.db"
    bad.write_bytes(snapshot_bytes()[:700])
    ts = {h.name: ScriptedTransport(h.name) for h in external.hosts}
    with pytest.raises(OpsInputError, match="Nothing was stopped"):
        asyncio.run(run_restore(external, StateDir("ops", root=tmp_path), bad,
                                transports=dict(ts)))  # fmt: skip
    assert all(t.calls == [] for t in ts.values())
    # Stacked etcd only exists once kubeadm init ran (admin.conf fetched into the state dir).
    with pytest.raises(OpsInputError, match="Kubernetes is not installed"):
        asyncio.run(run_restore(cluster, StateDir("ops", root=tmp_path), bad))


def test_a_snapshot_changed_since_it_was_saved_is_refused(tmp_path: Path) -> None:
    snap = tmp_path / "s.db"
    snap.write_bytes(snapshot_bytes())
    (tmp_path / "s.json").write_text(
        '{"path": "s.db", "sha256": "00", "revision": 5, "total_keys": 1, "size": 1,'
        ' "member": "cp1", "created": "x"}'
    )
    with pytest.raises(OpsInputError, match="changed since"):
        read_snapshot(snap)


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    import os

    for i in range(5):
        p = tmp_path / f"s{i}.db"
        p.write_bytes(b"x")
        (tmp_path / f"s{i}.json").write_text("{}")
        os.utime(p, (1000 + i, 1000 + i))
    removed = prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["s0.db", "s1.db", "s2.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s3.db", "s3.json", "s4.db", "s4.json"]


def test_reset_takes_the_hosts_block_out_and_puts_swap_back() -> None:
    hosts = "127.0.0.1 localhost\n# BEGIN hakube\n10.0.0.10 api\n# END hakube\n::1 ip6\n"
    assert remove_block(hosts) == "127.0.0.1 localhost\n::1 ip6\n"
    fstab = "/dev/vda1 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n#/old none swap sw 0 0\n"
    off = remove_swap(fstab)
    assert SWAP_MARK in off
    assert restore_swap(off) == fstab


FACTS = Path(__file__).resolve().parent.parent / "data" / "facts" / "debian12-container.txt"


def _facts(etcd: str = "active") -> tuple[re.Pattern[str], str]:
    """The facts rule of a sample host whose etcd unit is `etcd` (the sample's is starting)."""
    text = FACTS.read_text().replace(
        "Id=etcd.service\nLoadState=loaded\nActiveState=activating",
        f"Id=etcd.service\nLoadState=loaded\nActiveState={etcd}",
    )
    return re.compile(r"\ns\(\) \{.*", re.S), text


def test_reset_stops_releases_holds_purges_and_takes_the_hosts_block_out(tmp_path: Path) -> None:
    """The per-host reset on a sample host (also what `--host` runs once the host has left)."""
    external = load_cluster_data({**CLUSTER, "etcd": {"topology": "external"}}).cluster
    state = StateDir("ops", root=tmp_path)
    state.secrets()
    facts = _facts()
    ts: dict[str, Transport] = {
        name: ScriptedTransport(name, [facts, (re.compile(r".*"), Reply())])
        for name in ("cp1", "cp2", "cp3")
    }
    from hakube.workflows.reset import reset

    result = asyncio.run(reset(external, state, transports=ts))
    host = next(h for h in result.hosts if h.host == "cp3")
    # The sample host runs etcd, HAProxy, keepalived and containerd; its one hold (containerd,
    # as apply holds it) must be released or apt refuses the purge; kubectl is only "rc" there
    # (config left), so it is not purged again.
    assert host.actions[:3] == [
        "stop and disable keepalived, haproxy, etcd, containerd",
        "release the hold on containerd",
        "purge keepalived, haproxy, etcd-server, containerd",
    ]
    assert host.actions[3].startswith("remove ")
    assert host.actions[4:] == ["remove the hakube block from /etc/hosts"]
    cp3 = ts["cp3"]
    assert isinstance(cp3, ScriptedTransport)
    hosts_file = cp3.files["/etc/hosts"].content.decode()
    assert "hakube" not in hosts_file
    assert "127.0.1.1\tcp1" in hosts_file
    assert result.archived_state is not None
    assert not state.path.exists()


def test_resetting_one_host_without_a_record_is_refused_before_any_host_is_contacted(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Taking one host out needs the record (its etcd member, the backends it is in): without
    it the host's data would be wiped while the cluster still counts it."""
    from hakube.workflows.reset import reset

    state = StateDir("ops", root=tmp_path)
    state.secrets()
    with pytest.raises(OpsInputError, match="no record of cluster 'ops'"):
        asyncio.run(reset(cluster, state, host="cp3", transports={}))


def test_reset_of_an_unknown_host_is_bad_input(cluster: Cluster, tmp_path: Path) -> None:
    from hakube.workflows.reset import reset

    with pytest.raises(OpsInputError, match="--host 'cp9' is not in the cluster file"):
        asyncio.run(reset(cluster, StateDir("ops", root=tmp_path), host="cp9", transports={}))


def test_certs_check_shows_a_host_that_failed_without_its_secrets(
    cluster: Cluster, tmp_path: Path
) -> None:
    from hakube.transport.base import TransportError
    from hakube.workflows.certs import check

    state = StateDir("ops", root=tmp_path)
    secret = state.secrets().vrrp_password

    def broken(call: Call) -> Reply:
        raise TransportError("cp2", f"channel closed while running a command with {secret}")

    ts = {h: ScriptedTransport(h, [(re.compile(".*", re.S), Reply())]) for h in ("cp1", "cp3")}
    ts["cp2"] = ScriptedTransport("cp2", [(re.compile(".*", re.S), broken)])
    report = asyncio.run(check(cluster, state, transports=dict(ts)))
    assert list(report.unreachable) == ["cp2"]
    assert "channel closed" in report.unreachable["cp2"]
    assert secret not in repr(report.as_dict())


def test_day2_commands_use_the_recorded_init_host_not_the_first_control_plane(
    cluster: Cluster, tmp_path: Path
) -> None:
    # After an init-host hand-over (or a reorder) admin.conf and kubectl live on the recorded
    # host; the first control plane of the file may never have run kubeadm init.
    state = StateDir("ops", root=tmp_path)
    assert known_cluster(cluster, state).init_host.name == "cp1"  # nothing recorded yet
    assert not state.exists()  # a day-2 read creates no record
    rec = state.record()
    rec.init_host = "cp2"
    state.save_record(rec)
    assert known_cluster(cluster, StateDir("ops", root=tmp_path)).init_host.name == "cp2"
    rec.init_host = "gone"
    state.save_record(rec)
    with pytest.raises(PhaseError, match="gone ran kubeadm init"):
        known_cluster(cluster, StateDir("ops", root=tmp_path))
