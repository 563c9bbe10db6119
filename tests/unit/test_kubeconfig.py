"""kubeconfig: admin.conf re-pointed at the HA endpoint, 0600, or merged as a named context."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import OPS_CLUSTER

from hakube.fileio import write_private
from hakube.phases.kubeadm import ADMIN_CONF
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.scripted import ScriptedTransport
from hakube.workflows.kubeconfig import external_server, write_kubeconfig
from hakube.workflows.ops import OpsError, OpsInputError

ADMIN: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {
            "name": "kubernetes",
            "cluster": {
                "certificate-authority-data": "Q0E=",
                "server": "https://api.ops.hakube.internal:8443",
            },
        }
    ],
    "users": [
        {
            "name": "kubernetes-admin",
            "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"},
        }
    ],
    "contexts": [
        {
            "name": "kubernetes-admin@kubernetes",
            "context": {"cluster": "kubernetes", "user": "kubernetes-admin"},
        }
    ],
    "current-context": "kubernetes-admin@kubernetes",
}


def cluster_of(endpoint: dict[str, Any]) -> Cluster:
    return load_cluster_data({**OPS_CLUSTER, "endpoint": endpoint}).cluster


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    s = StateDir("ops", root=tmp_path / "state")
    write_private(s.path / "admin.conf", yaml.safe_dump(ADMIN).encode())
    return s


VIP = {"mode": "vip", "vip": "10.88.0.10", "port": 8443}


def test_written_0600_pointing_at_the_vip_with_names_of_the_cluster(
    state: StateDir, tmp_path: Path
) -> None:
    out = tmp_path / "ops.kubeconfig"
    r = asyncio.run(write_kubeconfig(cluster_of(VIP), state, out=out, merge_into=None))
    assert out.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(out.read_text())
    assert r.server == "https://10.88.0.10:8443"
    assert doc["clusters"] == [
        {"name": "ops", "cluster": {"certificate-authority-data": "Q0E=",
                                    "server": "https://10.88.0.10:8443"}}
    ]  # fmt: skip
    assert doc["users"][0] == {"name": "ops-admin", "user": ADMIN["users"][0]["user"]}
    assert doc["current-context"] == "ops"


def test_merge_keeps_other_contexts_and_replaces_our_own(state: StateDir, tmp_path: Path) -> None:
    kube = tmp_path / "home" / ".kube" / "config"
    other = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "prod", "cluster": {"server": "https://prod:6443"}},
                     {"name": "ops", "cluster": {"server": "https://stale:1"}}],
        "users": [{"name": "prod", "user": {"token": "x"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
        "current-context": "prod",
    }  # fmt: skip
    kube.parent.mkdir(parents=True)
    kube.write_text(yaml.safe_dump(other))
    asyncio.run(write_kubeconfig(cluster_of(VIP), state, out=None, merge_into=kube))
    doc = yaml.safe_load(kube.read_text())
    assert [c["name"] for c in doc["clusters"]] == ["prod", "ops"]
    assert doc["clusters"][1]["cluster"]["server"] == "https://10.88.0.10:8443"
    assert [c["name"] for c in doc["contexts"]] == ["prod", "ops"]
    assert doc["current-context"] == "prod"  # the operator's choice stays
    assert kube.stat().st_mode & 0o777 == 0o600
    # Merging again changes nothing.
    before = kube.read_text()
    asyncio.run(write_kubeconfig(cluster_of(VIP), state, out=None, merge_into=kube))
    assert kube.read_text() == before


def test_a_broken_kubeconfig_to_merge_into_is_bad_input_and_left_alone(
    state: StateDir, tmp_path: Path
) -> None:
    kube = tmp_path / "config"
    kube.write_text("clusters: [unclosed\n")
    with pytest.raises(OpsInputError, match="not valid YAML"):
        asyncio.run(write_kubeconfig(cluster_of(VIP), state, out=None, merge_into=kube))
    assert kube.read_text() == "clusters: [unclosed\n"


def test_without_a_local_copy_admin_conf_is_fetched_from_the_init_host(tmp_path: Path) -> None:
    state = StateDir("ops", root=tmp_path / "state")
    t = ScriptedTransport("cp1", files={ADMIN_CONF: yaml.safe_dump(ADMIN).encode()})
    out = tmp_path / "k"
    asyncio.run(
        write_kubeconfig(cluster_of(VIP), state, out=out, merge_into=None,
                         transports={"cp1": t})
    )  # fmt: skip
    assert yaml.safe_load(out.read_text())["clusters"][0]["name"] == "ops"
    empty = ScriptedTransport("cp1")
    with pytest.raises(OpsError, match="has `hakube apply` run its kubeadm phases"):
        asyncio.run(
            write_kubeconfig(cluster_of(VIP), state, out=out, merge_into=None,
                             transports={"cp1": empty})
        )  # fmt: skip


def test_endpoints_without_an_outside_address_say_so() -> None:
    server, note = external_server(cluster_of({"mode": "local-lb", "port": 8443}))
    assert server == "https://10.88.0.11:6443"
    assert "not highly available" in note
