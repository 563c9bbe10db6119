"""kubeadm config rendering: API versions, endpoints, SANs, etcd, join files."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fakes import ROOT, SECRETS

from hakube.render.kubeadm import (
    CA_HASH_PLACEHOLDER,
    INIT_CONFIG,
    JOIN_CONFIG,
    render_kubeadm,
)
from hakube.spec.load import load_cluster_data, load_cluster_file
from hakube.spec.model import Cluster

HASH = "sha256:" + "ab" * 32


def tutorial(**kubernetes: Any) -> Cluster:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["kubernetes"].update(kubernetes)
    data["hosts"].append({"name": "w1", "address": "192.168.2.220", "roles": ["worker"]})
    return load_cluster_data(data).cluster


def docs(cluster: Cluster, name: str, ca: str | None = HASH) -> dict[str, dict[str, Any]]:
    (f,) = render_kubeadm(cluster, cluster.host(name), SECRETS, ca)
    assert f.mode == 0o600
    assert f.secret
    return {d["kind"]: d for d in yaml.safe_load_all(f.content)}


@pytest.mark.parametrize(
    ("version", "api", "expected"),
    [
        ("1.22.3", None, "v1beta3"),
        ("1.22.3", "v1beta2", "v1beta2"),
        ("1.30.4", None, "v1beta3"),
        ("1.31.2", None, "v1beta4"),
    ],
)
def test_api_version(version: str, api: str | None, expected: str) -> None:
    extra: dict[str, Any] = {"version": version, "runtime": "containerd"}
    if api:
        extra["config_api"] = api
    c = tutorial(**extra)
    for d in docs(c, "server7-master").values():
        if d["kind"] != "KubeletConfiguration":
            assert d["apiVersion"] == f"kubeadm.k8s.io/{expected}"
    assert docs(c, "w1")["JoinConfiguration"]["apiVersion"] == f"kubeadm.k8s.io/{expected}"


def test_v1beta4_extra_args_are_lists_and_timeouts_exist() -> None:
    c = tutorial(version="1.31.2", runtime="containerd")
    init = docs(c, "server7-master")["InitConfiguration"]
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "192.168.2.207"}
    ]
    assert "timeouts" in init
    old = docs(tutorial(), "server7-master")["InitConfiguration"]
    assert old["nodeRegistration"]["kubeletExtraArgs"] == {"node-ip": "192.168.2.207"}
    assert "timeouts" not in old


def test_init_configuration() -> None:
    d = docs(tutorial(), "server7-master")
    init, cc = d["InitConfiguration"], d["ClusterConfiguration"]
    assert init["bootstrapTokens"][0]["token"] == SECRETS.bootstrap_token
    assert init["bootstrapTokens"][0]["ttl"] == "24h0m0s"
    assert init["certificateKey"] == SECRETS.certificate_key
    assert init["localAPIEndpoint"] == {"advertiseAddress": "192.168.2.207", "bindPort": 6443}
    assert init["nodeRegistration"]["criSocket"] == "unix:///var/run/dockershim.sock"
    assert cc["kubernetesVersion"] == "v1.22.3"
    assert cc["controlPlaneEndpoint"] == "vip:16443"
    assert cc["networking"] == {
        "podSubnet": "10.100.0.0/16",
        "serviceSubnet": "10.96.0.0/16",
        "dnsDomain": "cluster.local",
    }
    sans = cc["apiServer"]["certSANs"]
    for san in [
        "vip",
        "192.168.2.199",
        "127.0.0.1",
        *(str(h.address) for h in tutorial().control_planes),
    ]:
        assert san in sans
    assert cc["etcd"] == {"local": {"dataDir": "/var/lib/etcd"}}
    assert d["KubeletConfiguration"]["cgroupDriver"] == "systemd"


def test_join_files() -> None:
    c = tutorial(version="1.30.4", runtime="containerd")
    cp = docs(c, "server8-node1")["JoinConfiguration"]
    assert cp["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "vip:16443",
        "token": SECRETS.bootstrap_token,
        "caCertHashes": [HASH],
    }
    assert cp["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "192.168.2.208", "bindPort": 6443},
        "certificateKey": SECRETS.certificate_key,
    }
    assert cp["nodeRegistration"]["criSocket"] == "unix:///run/containerd/containerd.sock"
    worker = docs(c, "w1")["JoinConfiguration"]
    assert "controlPlane" not in worker
    (f,) = render_kubeadm(c, c.host("w1"), SECRETS, HASH)
    assert f.path == JOIN_CONFIG
    assert str(f.validate) == "kubeadm config validate --config {path}"


def test_missing_ca_hash_is_a_refused_placeholder() -> None:
    c = tutorial()
    (f,) = render_kubeadm(c, c.host("w1"), SECRETS, None)
    assert CA_HASH_PLACEHOLDER in f.content
    assert f.validate is not None
    assert CA_HASH_PLACEHOLDER in str(f.validate)
    (init,) = render_kubeadm(c, c.hosts[0], SECRETS, None)
    assert init.path == INIT_CONFIG


def test_cloud_lb_sans_and_external_etcd() -> None:
    c = load_cluster_file(ROOT / "examples/aliyun.yaml").cluster
    sans = docs(c, "master1")["ClusterConfiguration"]["apiServer"]["certSANs"]
    assert "172.16.0.100" in sans
    assert "apiserver.k8s.internal" in sans
    c = load_cluster_file(ROOT / "examples/local-lb.yaml").cluster
    etcd = docs(c, "cp1")["ClusterConfiguration"]["etcd"]["external"]
    assert etcd["endpoints"] == [f"https://10.0.10.1{i}:2379" for i in (1, 2, 3)]
    assert etcd["caFile"] == "/etc/kubernetes/pki/etcd/ca.crt"
    assert etcd["certFile"] == "/etc/kubernetes/pki/apiserver-etcd-client.crt"
    assert etcd["keyFile"] == "/etc/kubernetes/pki/apiserver-etcd-client.key"


def test_host_labels_become_kubelet_node_labels_on_init_and_join() -> None:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["hosts"][0]["labels"] = {"example.com/rack": "r1", "tier": "front"}
    data["hosts"].append(
        {"name": "w1", "address": "192.168.2.220", "roles": ["worker"], "labels": {"gpu": "yes"}}
    )
    c = load_cluster_data(data).cluster
    init = docs(c, "server7-master")["InitConfiguration"]["nodeRegistration"]["kubeletExtraArgs"]
    assert init["node-labels"] == "example.com/rack=r1,tier=front"
    join = docs(c, "w1")["JoinConfiguration"]["nodeRegistration"]["kubeletExtraArgs"]
    assert join["node-labels"] == "gpu=yes"
    # A host without labels gets no flag at all (kubelet would reject an empty one).
    other = docs(c, "server8-node1")["JoinConfiguration"]["nodeRegistration"]
    assert "node-labels" not in other["kubeletExtraArgs"]
