"""Stacked etcd (kubeadm's static pods) in `status` and `etcd snapshot`, and the apiservers
stopped around a restore: SCRIPTED, since kubeadm and kubelet cannot run on this machine.

etcd's answers are real ones (a static pod's etcd prints the same JSON): status's (through
etcd's gateway) in tests/data/ops/status-*.txt and etcdctl's in
etcd-cp1-etcdctl-and-gateway.txt were captured from the lab's etcd 3.4.23, and
snapshot-status.json is what Debian's etcdctl 3.4.23 (the lab's) printed for `snapshot status
-w json` of a snapshot taken from an etcd 3.4.23 on loopback holding 20 keys. The shell that
picks the host's etcdctl or the one inside the etcd container runs for real, against fakes of
etcdctl and crictl on PATH.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_status import CLUSTER as CAPTURED_CLUSTER

from hakube.fileio import write_private
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.scripted import Call, FakeFile, Reply, ScriptedTransport
from hakube.workflows.etcd_access import NO_TOOL, etcd_tool
from hakube.workflows.ops import OpsError
from hakube.workflows.snapshot import run_restore, run_save
from hakube.workflows.status import collect

DATA = Path(__file__).resolve().parent.parent / "data" / "ops"
ETCDCTL_CAPTURE = "etcd-cp1-etcdctl-and-gateway.txt"
HOSTS = ("cp1", "cp2", "cp3", "w1", "w2")
STATUS_SCRIPT = re.compile(r"d=\$\(mktemp -d\).*", re.S)

# The captured lab's hosts (names, addresses), with kubeadm's stacked etcd.
CLUSTER: dict[str, Any] = {**CAPTURED_CLUSTER, "etcd": {"topology": "stacked"}}


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster_data(CLUSTER).cluster


def kubeadm_ran(tmp: Path) -> StateDir:
    state = StateDir("hk11c", root=tmp)
    write_private(state.path / "admin.conf", b"apiVersion: v1\n")  # fetched after kubeadm init
    return state


def captured(host: str) -> str:
    return (DATA / f"status-{host}.txt").read_text()


def captured_section(name: str) -> str:
    """etcdctl's answer (`etcd-status`, `etcd-health`, `etcd-members`) captured on cp1."""
    text = (DATA / ETCDCTL_CAPTURE).read_text()
    m = re.search(rf"@@hakube:{re.escape(name)}\n(.*?)\n(?=\n?@@hakube:)", text, re.S)
    assert m, name
    return m.group(1).strip()


# --- status -------------------------------------------------------------------------------


def test_status_reads_stacked_members_through_kubeadms_etcd_certificates(
    cluster: Cluster, tmp_path: Path
) -> None:
    ts = {h: ScriptedTransport(h, [(STATUS_SCRIPT, Reply(captured(h)))]) for h in HOSTS}
    r = asyncio.run(collect(cluster, kubeadm_ran(tmp_path), transports=dict(ts)))
    assert sorted(m.name for m in r.etcd) == ["cp1", "cp2", "cp3"]
    assert [m.name for m in r.etcd if m.leader] == ["cp3"]
    assert all(m.healthy for m in r.etcd)
    assert [p for p in r.problems if "etcd" in p] == []
    cp_script = ts["cp1"].commands[0]
    # kubeadm's member on its fixed client port, with kubeadm's healthcheck client certificate,
    # through the gateway: no etcdctl, so nothing runs inside the static pod.
    assert "/etc/kubernetes/pki/etcd/healthcheck-client.crt" in cp_script
    assert "https://127.0.0.1:2379/v3/maintenance/status" in cp_script
    assert "crictl" not in cp_script
    assert "/etc/etcd/pki/healthcheck-client" not in cp_script
    assert "/v3/maintenance/status" not in ts["w1"].commands[0]


def test_a_stacked_member_that_does_not_answer_is_a_problem(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = {h: captured(h) for h in HOSTS}
    out["cp3"] = captured("cp3-etcd-stopped")
    ts = {h: ScriptedTransport(h, [(STATUS_SCRIPT, Reply(out[h]))]) for h in HOSTS}
    r = asyncio.run(collect(cluster, kubeadm_ran(tmp_path), transports=dict(ts)))
    assert any(p.startswith("etcd cp3: unhealthy (Failed to connect to") for p in r.problems)


def test_stacked_etcd_before_kubeadm_init_is_a_note_and_not_queried(
    cluster: Cluster, tmp_path: Path
) -> None:
    ts = {h: ScriptedTransport(h, [(STATUS_SCRIPT, Reply(captured(h)))]) for h in HOSTS}
    r = asyncio.run(collect(cluster, StateDir("hk11c", root=tmp_path), transports=dict(ts)))
    assert r.etcd == []
    assert any("stacked" in n for n in r.notes)
    assert all("/v3/maintenance/status" not in t.commands[0] for t in ts.values())


# --- which etcdctl -------------------------------------------------------------------------

FAKE_CRICTL = """#!/bin/sh
# ps -q --name '^etcd$' --state running -> a container id, when one "runs"
case "$1" in
  ps) [ -n "$RUNNING" ] && echo "$RUNNING"; exit 0;;
  exec) shift; c=$1; shift
        case " $IN_POD " in *" $1 "*) ;; *) exit 126;; esac
        [ "$2" = version ] && exit 0
        echo "in $c: $*"; exit 0;;
esac
exit 2
"""


def run_tool(
    tmp: Path, mode: str, host_tools: list[str], **env: str
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in host_tools:
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "host {name} API=$ETCDCTL_API: $*"\n')
        tool.chmod(0o755)
    crictl = bin_dir / "crictl"
    crictl.write_text(FAKE_CRICTL)
    crictl.chmod(0o755)
    return subprocess.run(
        f"{etcd_tool(mode)} member list -w json",
        shell=True, capture_output=True, text=True, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
    )  # fmt: skip


def test_the_hosts_etcdctl_is_used_when_it_has_one(tmp_path: Path) -> None:
    res = run_tool(tmp_path, "online", ["etcdctl"], RUNNING="c0ffee", IN_POD="etcdctl")
    assert res.stdout == "host etcdctl API=3: member list -w json\n"


def test_without_one_etcdctl_runs_inside_the_running_etcd_container(tmp_path: Path) -> None:
    res = run_tool(tmp_path, "online", [], RUNNING="c0ffee", IN_POD="etcdctl etcdutl")
    assert res.stdout == "in c0ffee: etcdctl member list -w json\n"


def test_file_work_prefers_etcdutl_where_etcdctl_lost_it(tmp_path: Path) -> None:
    res = run_tool(tmp_path, "offline", [], RUNNING="c0ffee", IN_POD="etcdctl etcdutl")
    assert res.stdout == "in c0ffee: etcdutl member list -w json\n"
    # etcd 3.4's image has no etcdutl; its etcdctl still restores.
    old = run_tool(tmp_path, "offline", [], RUNNING="c0ffee", IN_POD="etcdctl")
    assert old.stdout == "in c0ffee: etcdctl member list -w json\n"


def test_no_tool_and_no_running_container_says_so(tmp_path: Path) -> None:
    res = run_tool(tmp_path, "online", [], RUNNING="", IN_POD="")
    assert res.returncode == NO_TOOL
    assert "no etcdctl on this host and no running etcd container" in res.stderr


# --- snapshots -----------------------------------------------------------------------------


def snapshot_bytes() -> bytes:
    body = bytes(range(256)) * 8  # whole 512-byte blocks, like a bbolt file
    return body + hashlib.sha256(body).digest()


def snapshot_file(tmp: Path) -> Path:
    snap = tmp / "s.db"
    snap.write_bytes(snapshot_bytes())
    return snap


SNAPSHOT_STATUS = (DATA / "snapshot-status.json").read_text().strip()
SNAP_REVISION = json.loads(SNAPSHOT_STATUS)["revision"]


class ControlPlane:
    """A scripted kubeadm control plane: static pods for etcd and kube-apiserver."""

    def __init__(
        self, name: str, log: list[tuple[str, str]], *, fail_restore: bool = False,
        stale: bool = False, no_tool: bool = False,
    ) -> None:  # fmt: skip
        self.name = name
        self.log = log
        self.fail_restore = fail_restore
        self.no_tool = no_tool
        self.stale = stale  # comes back at the captured revision, not the snapshot's
        self.t = ScriptedTransport(name, [(re.compile(r".*", re.S), self.answer)])

    def note(self, what: str, reply: Reply | str = "") -> Reply | str:
        self.log.append((self.name, what))
        return reply

    def answer(self, call: Call) -> Reply | str:
        c = call.target
        if "member list -w json" in c:
            return captured_section("etcd-members")
        if "endpoint health --cluster" in c:
            one = json.loads(captured_section("etcd-health"))[0]
            return json.dumps([{**one, "endpoint": f"https://10.123.246.1{i}:2379"}
                               for i in (1, 2, 3)])  # fmt: skip
        if "endpoint status -w json" in c:
            if self.stale:
                return captured_section("etcd-status")
            return captured_section("etcd-status").replace(
                '"revision":1,', f'"revision":{SNAP_REVISION},'
            )
        if "snapshot save" in c:
            path = c.split("snapshot save ")[1].split()[0]
            self.t.files[path] = FakeFile(snapshot_bytes())
            return self.note("save")
        if "snapshot status" in c:
            if self.no_tool:
                # What the tool prints on a host whose etcd pod is gone and that has no etcdctl.
                return Reply(exit_status=NO_TOOL, stderr="no etcdutl etcdctl on this host and "
                             "no running etcd container to run it in\n")  # fmt: skip
            return SNAPSHOT_STATUS
        if "snapshot restore" in c:
            if self.fail_restore:
                return Reply(exit_status=1, stderr="Error: open /var/lib/etcd: no space left")
            return self.note(f"restore {c.split('snapshot restore ', 1)[1]}")
        if "echo static-pod" in c:
            return "static-pod\n"
        if "hakube-restore-aside" in c and "mkdir" in c:
            pod = "etcd" if "etcd.yaml" in c else "kube-apiserver"
            assert f"pgrep -x {pod}" in c  # waits until the pod's process is gone
            return self.note(f"stop {pod}")
        if "hakube-restore-aside" in c and "/etc/kubernetes/manifests/" in c:
            pod = "etcd" if "etcd.yaml" in c else "kube-apiserver"
            return self.note(f"start {pod}", Reply(delay=0.01))
        if c.startswith("set -e; if [ -e /var/lib/etcd ]"):
            return self.note("swap " + c)
        if "readyz" in c:
            # A delay yields to other hosts' steps, so steps run at once would interleave here.
            return self.note("readyz", Reply(delay=0.01))
        if c.startswith(("install -d", "test -e", "rm -f", "rm -rf")):
            return self.note(c.split()[0] + " " + c.split()[1]) if c.startswith("rm -rf") else ""
        raise AssertionError(f"{self.name}: unexpected command {c!r}")


def control_planes(
    log: list[tuple[str, str]], fail_on: str = "", *, stale: bool = False, no_tool_on: str = ""
) -> tuple[dict[str, ControlPlane], dict[str, Any]]:
    cps = {
        n: ControlPlane(n, log, fail_restore=n == fail_on, stale=stale, no_tool=n == no_tool_on)
        for n in ("cp1", "cp2", "cp3")
    }
    ts: dict[str, Any] = {n: cp.t for n, cp in cps.items()}
    ts |= {w: ScriptedTransport(w) for w in ("w1", "w2")}
    return cps, ts


def test_stacked_save_takes_the_snapshot_in_the_data_dir_the_pod_sees(
    cluster: Cluster, tmp_path: Path
) -> None:
    log: list[tuple[str, str]] = []
    cps, ts = control_planes(log)
    info = asyncio.run(run_save(cluster, kubeadm_ran(tmp_path), transports=ts))
    assert info.member == "cp1"
    assert info.revision == SNAP_REVISION
    assert Path(info.path).read_bytes() == snapshot_bytes()
    assert Path(info.path).stat().st_mode & 0o777 == 0o600
    save = next(c for c in cps["cp1"].t.commands if "snapshot save" in c)
    assert "/etc/kubernetes/pki/etcd/healthcheck-client.key" in save
    assert re.search(r"snapshot save /var/lib/etcd/hakube-snapshot-\d{8}T\d{6}Z\.db$", save)
    assert cps["cp1"].t.commands[-1].startswith("rm -f /var/lib/etcd/hakube-snapshot-")


def test_stacked_restore_stops_apiservers_and_etcd_pods_and_brings_apiservers_back_one_by_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    snap = snapshot_file(tmp_path)
    log: list[tuple[str, str]] = []
    _, ts = control_planes(log)
    result = asyncio.run(run_restore(cluster, kubeadm_ran(tmp_path), snap, transports=ts))
    steps = [(h, what.split()[0] + ("" if " " not in what else " " + what.split()[1]))
             for h, what in log]  # fmt: skip
    kinds = [w for _, w in steps]
    last_restore = max(i for i, w in enumerate(kinds) if w.startswith("restore"))
    first_stop = kinds.index("stop kube-apiserver")
    # Every new data dir is built while everything still runs, then the apiservers go first.
    assert last_restore < first_stop
    assert max(i for i, w in enumerate(kinds) if w == "stop kube-apiserver") < kinds.index(
        "stop etcd"
    )
    assert max(i for i, w in enumerate(kinds) if w == "start etcd") < kinds.index(
        "start kube-apiserver"
    )
    back = [s for s in steps if s[1] in ("start kube-apiserver", "readyz")]
    assert back == [(h, w) for h in ("cp1", "cp2", "cp3")
                    for w in ("start kube-apiserver", "readyz")]  # fmt: skip
    restores = {h: w for h, w in log if w.startswith("restore")}
    tokens = {re.search(r"--initial-cluster-token (\S+)", w).group(1) for w in restores.values()}  # type: ignore[union-attr]
    assert len(tokens) == 1
    assert "--name cp2" in restores["cp2"]
    assert "--initial-advertise-peer-urls https://10.123.246.12:2380" in restores["cp2"]
    assert (
        "--initial-cluster cp1=https://10.123.246.11:2380,cp2=https://10.123.246.12:2380,"
        "cp3=https://10.123.246.13:2380" in restores["cp1"]
    )
    # Restored inside the data dir (the pod's only host path), swapped in once etcd is down.
    data_dir = re.search(r"--data-dir (\S+)", restores["cp1"]).group(1)  # type: ignore[union-attr]
    assert data_dir.startswith("/var/lib/etcd/hakube-restore-")
    swap = next(w for h, w in log if h == "cp1" and w.startswith("swap"))
    stamp = data_dir.rsplit("-", 1)[1]
    assert f"mv /var/lib/etcd /var/lib/etcd.before-restore-{stamp}" in swap
    assert f"mv /var/lib/etcd.before-restore-{stamp}/hakube-restore-{stamp} /var/lib/etcd" in swap
    assert result.apiservers == {"cp1": "static-pod", "cp2": "static-pod", "cp3": "static-pod"}
    assert result.revision == SNAP_REVISION
    assert all(t.calls == [] for n, t in ts.items() if n.startswith("w"))


def test_a_member_that_cannot_restore_stops_nothing_and_cleans_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    snap = snapshot_file(tmp_path)
    log: list[tuple[str, str]] = []
    _, ts = control_planes(log, fail_on="cp3")
    with pytest.raises(Exception, match="no space left"):
        asyncio.run(run_restore(cluster, kubeadm_ran(tmp_path), snap, transports=ts))
    assert not [w for _, w in log if w.startswith(("stop", "swap", "start"))]
    assert sorted(h for h, w in log if w.startswith("rm -rf")) == ["cp1", "cp2", "cp3"]


def test_a_host_with_no_etcd_tool_and_no_etcd_pod_is_told_what_to_install(
    cluster: Cluster, tmp_path: Path
) -> None:
    log: list[tuple[str, str]] = []
    _, ts = control_planes(log, no_tool_on="cp2")
    with pytest.raises(OpsError, match=r"cp2: no etcdutl etcdctl on this host .*etcd-client"):
        asyncio.run(run_restore(cluster, kubeadm_ran(tmp_path), snapshot_file(tmp_path),
                                transports=ts))  # fmt: skip
    assert not [w for _, w in log if w.startswith(("stop", "swap", "start"))]


def test_etcd_back_at_an_older_revision_keeps_the_apiservers_stopped_and_says_where_things_are(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert int(json.loads(captured_section("etcd-status"))[0]["Status"]["header"]["revision"]) < (
        SNAP_REVISION
    )
    log: list[tuple[str, str]] = []
    _, ts = control_planes(log, stale=True)
    with pytest.raises(OpsError) as e:
        asyncio.run(run_restore(cluster, kubeadm_ran(tmp_path), snapshot_file(tmp_path),
                                transports=ts))  # fmt: skip
    msg = str(e.value)
    assert f"not the snapshot's {SNAP_REVISION}" in msg
    assert "kube-apiservers stay stopped" in msg
    assert re.search(r"manifests in /etc/kubernetes/hakube-restore-aside-\d{8}T\d{6}Z", msg)
    assert re.search(r"kept as /var/lib/etcd\.before-restore-\d{8}T\d{6}Z", msg)
    assert [w for _, w in log if w == "start kube-apiserver"] == []
    assert len([w for _, w in log if w == "start etcd"]) == 3


def test_members_that_differ_from_the_cluster_file_are_refused_before_anything_stops(
    tmp_path: Path,
) -> None:
    renamed = {**CLUSTER, "hosts": [{**h, "name": h["name"].replace("cp", "m")}
                                    for h in CLUSTER["hosts"]]}  # fmt: skip
    cluster = load_cluster_data(renamed).cluster
    snap = snapshot_file(tmp_path)
    log: list[tuple[str, str]] = []
    cps = {n: ControlPlane(n, log) for n in ("m1", "m2", "m3")}
    ts: dict[str, Any] = {n: cp.t for n, cp in cps.items()}
    ts |= {w: ScriptedTransport(w) for w in ("w1", "w2")}
    with pytest.raises(OpsError, match="not the ones the restore would create"):
        asyncio.run(run_restore(cluster, kubeadm_ran(tmp_path), snap, transports=ts))
    assert log == []


def test_external_restore_stops_a_kube_apiserver_unit_and_starts_it_after_etcd(
    tmp_path: Path,
) -> None:
    cluster = load_cluster_data({**CLUSTER, "etcd": {"topology": "external"}}).cluster
    snap = snapshot_file(tmp_path)
    state = StateDir("hk11c", root=tmp_path)
    log: list[str] = []

    def answer(host: str) -> Any:
        def reply(call: Call) -> Reply | str:
            c = call.target
            for key, out in (
                ("member list -w json", captured_section("etcd-members")),
                ("endpoint health --cluster", json.dumps(
                    [{"endpoint": f"https://10.123.246.1{i}:2379", "health": True}
                     for i in (1, 2, 3)])),
                ("endpoint status -w json", captured_section("etcd-status").replace(
                    '"revision":1,', f'"revision":{SNAP_REVISION},')),
                ("snapshot status", SNAPSHOT_STATUS),
                ("echo static-pod", "unit\n"),
            ):  # fmt: skip
                if key in c:
                    return out
            for key, what in (
                ("snapshot restore", "restore"),
                ("systemctl stop kube-apiserver", "stop api"),
                ("systemctl start kube-apiserver", "start api"),
                ("systemctl stop etcd", "stop etcd"),
                ("systemctl start --no-block etcd", "start etcd"),
                ("readyz", "readyz"),
            ):
                if key in c:
                    log.append(f"{host} {what}")
                    if what == "restore":
                        assert "/var/lib/etcd.hakube-restore-" in c  # beside the live dir
                    return Reply(delay=0.01)  # yields: steps run at once would interleave
            return ""

        return reply

    ts: dict[str, Any] = {
        h: ScriptedTransport(h, [(re.compile(r".*", re.S), answer(h))])
        for h in ("cp1", "cp2", "cp3")
    }
    ts |= {w: ScriptedTransport(w) for w in ("w1", "w2")}
    result = asyncio.run(run_restore(cluster, state, snap, transports=ts))
    phases = [line.split(" ", 1)[1] for line in log]
    order = ["restore", "stop api", "stop etcd", "start etcd"]
    firsts = [phases.index(p) for p in order]
    lasts = [max(i for i, p in enumerate(phases) if p == x) for x in order]
    assert all(lasts[i] < firsts[i + 1] for i in range(len(order) - 1)), log
    assert log[-6:] == [f"{h} {w}" for h in ("cp1", "cp2", "cp3") for w in ("start api", "readyz")]
    assert result.apiservers == {"cp1": "unit", "cp2": "unit", "cp3": "unit"}
