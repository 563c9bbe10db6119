"""External etcd: after a member change, kubeadm-config's etcd endpoints and each joined control
plane's kube-apiserver --etcd-servers follow the file, one control plane at a time.

kubeadm, the kubelet and kube-apiserver cannot run here: the scripted transport answers with
the shapes they produce. The manifest and the ClusterConfiguration below are laid out as
kubeadm 1.31 writes them (arguments sorted, four-space list indent in the manifest; keys sorted
in the ConfigMap); addresses are this test's own.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import yaml
from test_phases_kubeadm import CLUSTER_DATA, make_ctx
from test_phases_verify import FIELDS, row, server

from hakube.phases.base import PhaseError, gather_hosts
from hakube.phases.etcd_endpoints import (
    GET_CLUSTER_CONFIGURATION,
    PATCH_FILE,
    RESTART_SECONDS,
    EtcdEndpoints,
    restarted_with,
    with_endpoints,
    with_etcd_servers,
)
from hakube.phases.kubeadm import APISERVER_MANIFEST
from hakube.phases.remove import Removal
from hakube.spec.load import load_cluster_data
from hakube.spec.model import APISERVER_PORT, Cluster
from hakube.state import StateDir
from hakube.transport.scripted import FakeFile, Reply, ScriptedTransport
from hakube.workflows.apiserver import READYZ_PROBE
from hakube.workflows.apply import apply_phases, with_removal

OLD = "https://10.88.0.11:2379,https://10.88.0.12:2379,https://10.88.0.13:2379"
NEW = OLD + ",https://10.88.0.14:2379,https://10.88.0.15:2379"

MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: {address}:6443
  creationTimestamp: null
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address={address}
    - --allow-privileged=true
    - --authorization-mode=Node,RBAC
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --enable-admission-plugins=NodeRestriction
    - --enable-bootstrap-token-auth=true
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt
    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key
    - --etcd-servers={servers}
    - --kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt
    - --kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key
    - --secure-port=6443
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-cluster-ip-range=10.96.0.0/12
    image: registry.k8s.io/kube-apiserver:v1.31.4
    imagePullPolicy: IfNotPresent
    name: kube-apiserver
status: {{}}
"""

CLUSTER_CONFIGURATION = """apiServer:
  certSANs:
  - api.lab.hakube.internal
  - 10.88.0.10
apiVersion: kubeadm.k8s.io/v1beta4
caCertificateValidityPeriod: 87600h0m0s
certificateValidityPeriod: 8760h0m0s
certificatesDir: /etc/kubernetes/pki
clusterName: lab
controlPlaneEndpoint: api.lab.hakube.internal:8443
controllerManager: {}
dns: {}
encryptionAlgorithm: RSA-2048
etcd:
  external:
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    endpoints:
    - https://10.88.0.11:2379
    - https://10.88.0.12:2379
    - https://10.88.0.13:2379
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
imageRepository: registry.k8s.io
kind: ClusterConfiguration
kubernetesVersion: v1.31.4
networking:
  dnsDomain: cluster.local
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
proxy: {}
scheduler: {}
"""

WAIT = re.compile(r"for i in \$\(seq \d+\); do \( for p in \$\(pgrep -x kube-apiserver\).*", re.S)
PATCH = re.compile(r"kubectl .* -n kube-system patch configmap kubeadm-config --type merge .*")
HOLDS_VIP = re.compile(r"ip -o -4 addr show \| grep -qF 'inet 10\.88\.0\.10/'")
SHOW = re.compile(r"echo 'show stat' \| socat .*")


def show_stat(*up: str) -> str:
    """Every control plane of the file as a server: `up` UP, the others (joining) DOWN."""
    lines = ["# " + "".join(f + "," for f in FIELDS)]
    for i, name in enumerate(("cp1", "cp2", "cp3", "cp4", "cp5"), start=1):
        status = "UP" if name in up else "DOWN"
        lines.append(server(name, status, "L7OK", f"10.88.0.1{i}:6443", sid=str(i)))
    lines.append(row(pxname="kube-apiserver", svname="BACKEND", status="UP"))
    return "\n".join(lines) + "\n"


def five() -> Cluster:
    data: dict[str, Any] = {**CLUSTER_DATA}
    data["hosts"] = [*CLUSTER_DATA["hosts"]] + [
        {"name": f"cp{i}", "address": f"10.88.0.1{i}", "roles": ["control-plane"]} for i in (4, 5)
    ]
    return load_cluster_data(data).cluster


@pytest.fixture
def state(tmp_path: Any) -> StateDir:
    return StateDir("lab", root=tmp_path)


def recorded(state: StateDir, cluster: Cluster, endpoints: list[str] | None) -> None:
    rec = state.record()
    rec.initialised("cp1", cluster, at=1.0)
    rec.joined("cp2", "control-plane")
    rec.joined("cp3", "control-plane")
    rec.etcd_endpoints = endpoints
    state.save_record(rec)


def transports(cluster: Cluster) -> dict[str, ScriptedTransport]:
    ts = {}
    for h in cluster.control_planes:
        t = ScriptedTransport(h.name)
        t.files[APISERVER_MANIFEST] = FakeFile(
            MANIFEST.format(address=h.address, servers=OLD).encode(), 0o600
        )
        t.on(WAIT, Reply()).on(SHOW, Reply(stdout=show_stat("cp1", "cp2", "cp3")))
        t.on(HOLDS_VIP, Reply(exit_status=0 if h.name == "cp1" else 1))
        ts[h.name] = t
    ts["cp1"].on(GET_CLUSTER_CONFIGURATION, Reply(stdout=CLUSTER_CONFIGURATION))
    ts["cp1"].on(PATCH, Reply())
    return ts


def run_phase(cluster: Cluster, state: StateDir, ts: dict[str, ScriptedTransport],
              *, dry_run: bool = False) -> dict[str, BaseException]:  # fmt: skip
    phase = EtcdEndpoints()
    ctx = make_ctx(cluster, state, ts, phase.name, dry_run=dry_run)

    async def go() -> dict[str, BaseException]:
        failures = await gather_hosts(
            phase.hosts(ctx), lambda h: phase.run(ctx, h), serial=phase.serial
        )
        if not failures:
            await phase.finish(ctx)
        return failures

    return asyncio.run(go())


def test_a_new_etcd_host_reaches_the_configmap_then_each_apiserver_one_at_a_time(
    state: StateDir,
) -> None:
    cluster = five()
    recorded(state, cluster, OLD.split(","))
    ts = transports(cluster)
    assert [h.name for h in EtcdEndpoints().hosts(make_ctx(cluster, state, ts, "x"))] == [
        "cp1",
        "cp2",
        "cp3",
    ]  # fmt: skip  (cp4 and cp5 join later, with the ConfigMap's list)
    assert run_phase(cluster, state, ts) == {}
    patch = json.loads(ts["cp1"].files[PATCH_FILE].content)
    config = yaml.safe_load(patch["data"]["ClusterConfiguration"])
    assert config["etcd"]["external"]["endpoints"] == NEW.split(",")
    assert config["kubernetesVersion"] == "v1.31.4"  # the rest of the document is kept
    assert ts["cp1"].files[PATCH_FILE].mode == 0o600
    for name, t in ts.items():
        if name in ("cp4", "cp5"):  # only the front is read there (their backends: DOWN)
            assert not any(c.kind in ("put", "get") for c in t.calls)
            assert all(SHOW.fullmatch(c) or HOLDS_VIP.fullmatch(c) for c in t.commands)
            continue
        new = t.files[APISERVER_MANIFEST].content.decode()
        address = cluster.host(name).address
        assert new == MANIFEST.format(address=address, servers=NEW)
        assert t.files[APISERVER_MANIFEST].mode == 0o600
    # The ConfigMap first, then host by host: the next manifest only once the previous
    # apiserver runs with the new list and the front serves again.
    cp1 = ts["cp1"].calls
    patched = next(i for i, c in enumerate(cp1) if PATCH.fullmatch(c.target))
    written = next(
        i for i, c in enumerate(cp1) if c.kind == "put" and c.target == APISERVER_MANIFEST
    )
    assert patched < written
    waits = [c.target for c in ts["cp2"].calls if c.kind == "run" and WAIT.fullmatch(c.target)]
    assert len(waits) == 1
    assert f"--etcd-servers={NEW}" in waits[0]
    assert state.record().etcd_endpoints == NEW.split(",")


def test_the_next_control_plane_waits_for_the_previous_apiserver(state: StateDir) -> None:
    cluster = five()
    recorded(state, cluster, OLD.split(","))
    ts = transports(cluster)
    ts["cp1"].rules.insert(0, (WAIT, Reply(exit_status=1)))
    failures = run_phase(cluster, state, ts)
    assert list(failures) == ["cp1"]
    assert "did not come back" in str(failures["cp1"])
    assert ts["cp2"].files[APISERVER_MANIFEST].content.decode().count(OLD + "\n") == 1
    assert state.record().etcd_endpoints == OLD.split(",")  # the next apply tries again


def test_nothing_runs_when_the_recorded_list_is_the_files(state: StateDir) -> None:
    cluster = five()
    recorded(state, cluster, NEW.split(","))
    ts = transports(cluster)
    assert EtcdEndpoints().hosts(make_ctx(cluster, state, ts, "x")) == []


def test_an_unknown_list_is_checked_and_current_hosts_are_left_alone(state: StateDir) -> None:
    cluster = load_cluster_data(CLUSTER_DATA).cluster
    recorded(state, cluster, None)  # a record from before hakube kept the list
    ts = transports(cluster)
    assert run_phase(cluster, state, ts) == {}
    assert not any(c.kind == "put" for t in ts.values() for c in t.calls)
    assert state.record().etcd_endpoints == OLD.split(",")


def test_a_dry_run_reads_and_reports_but_writes_nothing(state: StateDir) -> None:
    cluster = five()
    recorded(state, cluster, OLD.split(","))
    ts = transports(cluster)
    assert run_phase(cluster, state, ts, dry_run=True) == {}
    assert not any(c.kind == "put" for t in ts.values() for c in t.calls)
    assert not any(PATCH.fullmatch(c) or WAIT.fullmatch(c) for t in ts.values() for c in t.commands)


def test_a_shorter_list_replaces_a_longer_one_exactly() -> None:
    old = MANIFEST.format(address="10.88.0.11", servers=NEW)
    new = with_etcd_servers(old, OLD)
    assert new == MANIFEST.format(address="10.88.0.11", servers=OLD)
    assert with_etcd_servers(new, OLD) is None


def test_a_manifest_without_exactly_one_etcd_servers_is_refused() -> None:
    old = MANIFEST.format(address="10.88.0.11", servers=OLD)
    with pytest.raises(PhaseError, match="0 --etcd-servers= arguments"):
        with_etcd_servers(old.replace(f"    - --etcd-servers={OLD}\n", ""), NEW)
    with pytest.raises(PhaseError, match="2 --etcd-servers= arguments"):
        with_etcd_servers(old + f"    - --etcd-servers={OLD}\n", NEW)


def test_a_stacked_cluster_configuration_is_refused_with_the_fix() -> None:
    stacked = CLUSTER_CONFIGURATION.replace(
        CLUSTER_CONFIGURATION[CLUSTER_CONFIGURATION.index("etcd:") : CLUSTER_CONFIGURATION.index(
            "imageRepository")], "etcd:\n  local:\n    dataDir: /var/lib/etcd\n"
    )  # fmt: skip
    with pytest.raises(PhaseError, match="topology: stacked"):
        with_endpoints(stacked, NEW.split(","))
    assert with_endpoints(CLUSTER_CONFIGURATION, OLD.split(",")) is None


def test_the_lists_change_after_the_lb_roll_and_before_members_leave_or_join() -> None:
    names = [p.name for p in with_removal(apply_phases(), Removal((), {}))]
    assert names.index("lb/vip") < names.index("kubeadm/etcd-endpoints")
    assert names.index("kubeadm/etcd-endpoints") < names.index("remove/hosts")
    assert names.index("remove/hosts") < names.index("etcd")
    assert names.index("etcd") < names.index("kubeadm/join-control-planes")


def test_the_restart_wait_is_the_projects_readyz_wait_on_the_apiserver_port() -> None:
    # One /readyz wait in the project (the day-2 restarts use it too), on APISERVER_PORT.
    wait = restarted_with("https://10.88.0.11:2379")
    assert f"https://127.0.0.1:{APISERVER_PORT}/readyz" in READYZ_PROBE
    assert f" && {READYZ_PROBE} && exit 0; sleep 1; done; exit 1" in wait
    assert wait.startswith(f"for i in $(seq {RESTART_SECONDS}); do ( for p in $(pgrep -x ")
    assert "--etcd-servers=https://10.88.0.11:2379" in wait
