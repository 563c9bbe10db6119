"""Day-2 commands on real lab hosts (3 control-plane hosts, external etcd, keepalived, HAProxy).

The lab cannot run kubeadm/kubelet: /readyz comes from the LAB-ONLY apiserver stand-in, which
answers only while etcd has quorum, so the probe through the VIP also watches etcd. The cluster
CA is put where kubeadm init would put it, so the openssl pipeline runs for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakube.facts.haproxy import SHOW_STAT, parse_show_stat
from hakube.membership import without
from hakube.phases.base import Event, EventKind
from hakube.render.haproxy import HAPROXY_CFG
from hakube.render.keepalived import KEEPALIVED_CONF
from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Redactor
from hakube.workflows.apply import apply, ssh_transports
from hakube.workflows.certs import renew
from hakube.workflows.credentials import CLUSTER_CA, checked_ca_hash
from hakube.workflows.ops import OpsError, OpsInputError, session
from hakube.workflows.reset import reset
from hakube.workflows.snapshot import run_restore, run_save
from hakube.workflows.status import expected_files
from hakube_lab import Lab, running_lab
from hakube_lab.drill.probes import Probes
from hakube_lab.drill.report import Request, longest_gap
from hakube_lab.drill.scenarios import Settings
from hakube_lab.membership import vip_owner
from hakube_lab.standin import REMOVE as REMOVE_STANDIN
from hakube_lab.standin import endpoints_command, install_all

pytestmark = pytest.mark.lab

HAKUBE = [sys.executable, "-m", "hakube.cli"]
SKIP = ["kubeadm", "cni"]
ETCDCTL = (
    "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt "
    "--cert=/etc/etcd/pki/healthcheck-client.crt --key=/etc/etcd/pki/healthcheck-client.key"
)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("hkd2", control_planes=3, workers=0, subnet="10.123.221.0/24") as lab:
        yield lab


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


def cluster_of(lab: Lab) -> Cluster:
    return load_cluster_file(lab.cluster_file).cluster


def converge(cluster: Cluster, state: StateDir) -> None:
    async def go() -> None:
        async with ssh_transports(cluster, trust_new_hosts=False, redactor=Redactor()) as (t, e):
            assert not e
            await install_all(cluster, state, t)
        result = await apply(cluster, state=state, skip=SKIP)
        assert result.ok, result.failures

    asyncio.run(go())


@pytest.fixture(scope="module")
def state(lab: Lab, root: Path) -> StateDir:
    cluster = cluster_of(lab)
    s = StateDir(cluster.name, root=root)
    converge(cluster, s)
    return s


def hakube(lab: Lab, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HAKUBE, *args, "-f", str(lab.cluster_file)],
        capture_output=True, text=True, env={**os.environ, "HAKUBE_STATE_DIR": str(root)},
        check=False, timeout=120,
    )  # fmt: skip


def wait_healthy(lab: Lab, root: Path, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        res = hakube(lab, root, "status", "--output", "json")
        data: dict[str, object] = json.loads(res.stdout)
        if res.returncode == 0 or time.monotonic() > deadline:
            return data
        time.sleep(1)


def test_status_is_healthy_then_degraded_when_haproxy_stops(
    lab: Lab, root: Path, state: StateDir
) -> None:
    data = wait_healthy(lab, root)
    assert data["healthy"] is True, data["problems"]
    assert len(data["vip_owners"]) == 1  # type: ignore[arg-type]
    assert len(data["etcd"]) == 3  # type: ignore[arg-type]
    assert data["drift"] == []
    lab.run("cp2", "systemctl stop haproxy")
    try:
        res = hakube(lab, root, "status")
        assert res.returncode == 1, res.stdout
        assert "cp2: haproxy is inactive" in res.stdout
    finally:
        lab.run("cp2", "systemctl start haproxy")
    assert wait_healthy(lab, root)["healthy"] is True


def test_openssl_pipeline_on_a_control_plane_agrees_with_hakubes_ca_hash(
    lab: Lab, state: StateDir
) -> None:
    cluster = cluster_of(lab)
    pki = state.cluster_pki()
    cp1 = cluster.control_planes[0]

    async def go(ca: bytes) -> str:
        async with session(cluster, state) as (ctx, errors):
            assert not errors
            # Where kubeadm init puts the cluster CA hakube pre-generates.
            await ctx.do.put(
                cp1, "the cluster CA, as kubeadm init writes it", CLUSTER_CA, ca, 0o644
            )
            return await checked_ca_hash(ctx, cp1)

    try:
        assert asyncio.run(go(pki.ca.cert_pem)) == pki.ca_cert_hash
        other = StateDir("other", root=state.path.parent / "other").cluster_pki()
        with pytest.raises(OpsError, match="does not carry the cluster's CA"):
            asyncio.run(go(other.ca.cert_pem))
    finally:
        lab.run("cp1", "rm -rf /etc/kubernetes")


def put_keys(lab: Lab, count: int) -> None:
    batches = []
    for start in range(0, count, 100):
        puts = "".join(f"put /h11/k{i} v{i}\\n" for i in range(start, min(start + 100, count)))
        batches.append(f"printf '\\n{puts}\\n\\n' | {ETCDCTL} txn >/dev/null")
    lab.run("cp1", " && ".join(batches))


def read_keys(lab: Lab, host: str) -> dict[str, str]:
    out = lab.run(host, f"{ETCDCTL} get /h11/ --prefix").stdout.splitlines()
    return dict(zip(out[::2], out[1::2], strict=True))


def test_snapshot_restores_1000_keys_after_every_data_dir_is_destroyed(
    lab: Lab, root: Path, state: StateDir, tmp_path: Path
) -> None:
    cluster = cluster_of(lab)
    put_keys(lab, 1000)
    info = asyncio.run(run_save(cluster, state))
    assert Path(info.path).stat().st_mode & 0o777 == 0o600
    assert info.revision > 0
    # A truncated copy is refused before anything stops.
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(Path(info.path).read_bytes()[: info.size // 2])
    with pytest.raises(OpsInputError, match="truncated"):
        asyncio.run(run_restore(cluster, state, truncated))
    assert lab.run("cp3", "systemctl is-active etcd").stdout.strip() == "active"

    for h in ("cp1", "cp2", "cp3"):
        lab.run(h, f"systemctl stop etcd && rm -rf {cluster.etcd.data_dir}")
    before = time.monotonic_ns() // 1000
    result = asyncio.run(run_restore(cluster, state, Path(info.path)))
    after = time.monotonic_ns() // 1000
    assert result.revision >= info.revision
    keys = read_keys(lab, "cp3")
    assert len(keys) == 1000
    assert all(keys[f"/h11/k{i}"] == f"v{i}" for i in range(1000))
    # The apiservers (the stand-in, under the kube-apiserver unit name a binary install has)
    # went down before etcd came back and were started only after it was healthy; the hosts
    # share one kernel, so systemd's monotonic timestamps compare with this process's clock.
    assert result.apiservers == {"cp1": "unit", "cp2": "unit", "cp3": "unit"}
    for h in ("cp1", "cp2", "cp3"):
        api, etcd = unit_times(lab, h, "kube-apiserver"), unit_times(lab, h, "etcd")
        assert before < api["InactiveEnter"] < etcd["ActiveEnter"] < api["ActiveEnter"] < after, h
        assert lab.run(h, "curl -sfk https://127.0.0.1:6443/readyz").stdout == "ok"
    assert wait_healthy(lab, root)["healthy"] is True


def unit_times(lab: Lab, host: str, unit: str) -> dict[str, int]:
    props = ("ActiveEnter", "InactiveEnter")
    args = " ".join(f"-p {p}TimestampMonotonic" for p in props)
    out = lab.run(host, f"systemctl show {args} {unit}").stdout
    values = dict(line.split("=", 1) for line in out.split())
    return {p: int(values[f"{p}TimestampMonotonic"]) for p in props}


def test_etcd_certificate_renewal_keeps_the_api_answering(
    lab: Lab, root: Path, state: StateDir, tmp_path: Path
) -> None:
    cluster = cluster_of(lab)
    before = {c["path"]: c["expires"] for c in wait_healthy(lab, root)["certs"]}  # type: ignore[attr-defined]
    probes = Probes(lab, cluster, tmp_path / "renew", Settings(), cafile=None, duration=120)
    try:
        time.sleep(1)
        result = asyncio.run(renew(cluster, state, etcd=True, kubeadm=False))
        time.sleep(1)
    finally:
        probes.stop()
    requests = probes.requests()
    assert len(requests) > 100
    assert [r for r in requests if not r.ok] == []
    assert len(result.renewed) == 3
    after = wait_healthy(lab, root)
    assert after["healthy"] is True
    server = "/etc/etcd/pki/server.crt"
    renewed = {c["path"]: c["expires"] for c in after["certs"] if c["host"] == "cp1"}  # type: ignore[attr-defined]
    assert renewed[server] > before[server]


LEFTOVERS = r"""
find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /var/lib/apt/lists \
  -o -path /var/cache -o -path /usr/share/doc \) -prune -o \( -iname '*hakube*' \
  -o -iname '*keepalived*' -o -iname '*haproxy*' -o -path '/etc/etcd*' \
  -o -path '/var/lib/etcd*' -o -path /etc/kubernetes \) -print 2>/dev/null \
  | grep -v hakube-lab
grep -l hakube /etc/hosts /etc/fstab
systemctl list-unit-files --no-legend | grep -E 'haproxy|keepalived|etcd|hakube|containerd'
apt-mark showhold
ip -o link | grep -E 'cni0|flannel|calico|tunl0'
ip -o addr | grep -F ' VIP/'
true
"""


def standins_ask(lab: Lab, cluster: Cluster) -> None:
    """LAB ONLY: the stand-ins' etcd list is `cluster`'s members, as the skipped
    kubeadm/etcd-endpoints phase makes real apiservers' --etcd-servers follow the members
    (before a member goes: a removed member that still runs answers unhealthy)."""
    for h in cluster.control_planes:
        lab.run(h.name, endpoints_command(cluster))


def test_reset_of_the_vip_owner_takes_it_out_under_the_probe_and_apply_joins_it_again(
    lab: Lab, root: Path, state: StateDir, tmp_path: Path
) -> None:
    """reset --host on the host that holds the VIP (the hardest one to take out), with the
    drill's probe asking /readyz through the VIP the whole time."""
    cluster = cluster_of(lab)
    target = vip_owner(lab, cluster)
    assert target is not None
    survivors = without(cluster, [target])
    names = [h.name for h in survivors.control_planes]
    standins_ask(lab, survivors)
    changes: list[Event] = []
    probes = Probes(lab, cluster, tmp_path / "reset-host", Settings(), cafile=None, duration=150)
    try:
        time.sleep(1)
        start = time.monotonic()
        result = asyncio.run(reset(cluster, state, host=target, emit=changes.append))
        end = time.monotonic()
        time.sleep(1)
    finally:
        probes.stop()
    requests = [r for r in probes.requests() if start <= r.t <= end]
    failed = [r for r in requests if not r.ok]
    holders = {h for s in probes.samples() if start <= s.t <= end for h in s.holders}
    print(f"reset --host {target}: {end - start:.1f} s, {len(requests)} requests through the "
          f"VIP, {len(failed)} failed, longest gap {longest_gap(requests, start, end):.3f} s, "
          f"VIP holders {sorted(holders)}")  # fmt: skip
    if failed:  # what happened around each failure, on the probe's clock
        for t, what in timeline(changes, probes, failed, start):
            print(f"  +{t:6.2f} s {what}")
    assert [h.host for h in result.hosts] == [target]
    assert result.left_through[0] == "remove/handover"
    assert result.left_through[-1] == "remove/hosts"
    assert result.archived_state is None
    assert state.path.exists()
    # The VIP answered throughout and went to a survivor.
    assert len(requests) > 50
    assert failed == [], failed[:5]
    assert vip_owner(lab, survivors) in names
    assert lab.run(target, "ip -o -4 addr show").stdout.count(f"inet {cluster.endpoint.vip}/") == 0
    # etcd: the survivors list only themselves; the record forgot the host.
    members = json.loads(lab.run(names[0], f"{ETCDCTL} member list -w json").stdout)["members"]
    assert sorted(m["name"] for m in members) == names
    record = state.record()
    assert target not in record.etcd_members
    assert target not in record.hosts
    # The survivors' load balancers carry what apply writes for the cluster without the host:
    # HAProxy lists only the survivors, keepalived has no peer at the host's address.
    secrets = state.secrets()
    for name in names:
        backends = parse_show_stat(lab.run(name, SHOW_STAT).stdout, name)
        assert sorted({b.server for b in backends}) == names, name
        for f in expected_files(survivors, secrets, survivors.host(name)):
            if f.path in (HAPROXY_CFG, KEEPALIVED_CONF):
                assert lab.run(name, f"cat {f.path}").stdout == f.content, (name, f.path)
    # Nothing of hakube is left on the host once the lab's own stand-in is gone.
    remove_standin(lab, target)
    script = LEFTOVERS.replace("VIP", str(cluster.endpoint.vip))
    assert lab.run(target, script).stdout.strip() == ""
    # It is still in the file but no longer recorded: the next apply joins it again.
    converge(cluster, state)
    data = wait_healthy(lab, root, timeout=60)
    assert data["healthy"], data["problems"]
    assert sorted(m["name"] for m in data["etcd"]) == ["cp1", "cp2", "cp3"]  # type: ignore[attr-defined]
    assert data["drift"] == []


def timeline(
    changes: list[Event], probes: Probes, failed: list[Request], start: float
) -> list[tuple[float, str]]:
    out = [(e.at - start, f"{e.host} {e.phase}: {e.message}") for e in changes
           if e.kind is EventKind.CHANGE]  # fmt: skip
    holders: tuple[str, ...] = ()
    for v in probes.samples():
        if v.holders != holders:
            out.append((v.t - start, f"VIP on {','.join(v.holders) or 'nobody'}"))
            holders = v.holders
    out += [(r.t - start, f"FAILED ({r.end - r.t:.2f} s): {' | '.join(r.errors)}") for r in failed]
    return sorted(out)


def remove_standin(lab: Lab, host: str) -> None:
    """The lab's stand-in is not hakube's to remove (`lab up`/converge installs it again)."""
    lab.run(host, REMOVE_STANDIN)


def test_reset_leaves_no_hakube_trace_and_apply_converges_again(
    lab: Lab, root: Path, state: StateDir
) -> None:
    cluster = cluster_of(lab)
    for h in ("cp1", "cp2", "cp3"):
        remove_standin(lab, h)
    result = asyncio.run(reset(cluster, state))
    assert result.archived_state is not None
    assert not state.path.exists()
    assert Path(result.archived_state).is_dir()
    script = LEFTOVERS.replace("VIP", str(cluster.endpoint.vip))
    for h in ("cp1", "cp2", "cp3"):
        assert lab.run(h, script).stdout.strip() == "", h
    converge(cluster, state)
