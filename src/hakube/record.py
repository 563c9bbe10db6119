"""The recorded cluster: what hakube did *and verified*, beside what the cluster file wants.

The record lives in the state directory (``cluster.json``, 0600, replaced atomically). It holds
the cluster's UUID (also written to ``/etc/hakube/cluster-id`` on every host, so a host of
another cluster, or a state directory of another cluster with the same name, is refused), the
host that ran ``kubeadm init``, the nodes and etcd members that joined and were seen healthy,
the package versions installed per host, and the settings that cannot change after init.

Entries are added only after verification: a crash between "did" and "verified" leaves no
entry, so the next run checks again instead of assuming.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hakube.facts.host import HOST_ID_PATH
from hakube.fileio import write_private
from hakube.render.etcd import client_endpoints
from hakube.spec.model import Cluster, EtcdTopology

RECORD_FILE = "cluster.json"
KUBE_PACKAGES = ("kubelet", "kubeadm", "kubectl")

#: Settings kubeadm bakes into certificates, kubeconfigs and running components at init, and
#: why changing them in the file cannot be applied to a running cluster.
IMMUTABLE_WHY = {
    "cluster name": "it names the state directory and is in kubeadm-config",
    "control-plane endpoint": "it is in the API server certificate and in every kubeconfig",
    "pod subnet": "every node's pod CIDR and the CNI were allocated from it",
    "service subnet": "the kubernetes service IP and cluster DNS IP (in certificates) are in it",
    "DNS domain": "it is in the API server certificate and in every pod's resolv.conf",
    "etcd topology": "moving etcd between stacked and external is a migration hakube does not do",
}


def immutable_settings(cluster: Cluster) -> dict[str, str]:
    return {
        "cluster name": cluster.name,
        "control-plane endpoint": cluster.control_plane_endpoint,
        "pod subnet": str(cluster.network.pod_subnet),
        "service subnet": str(cluster.network.service_subnet),
        "DNS domain": cluster.kubernetes.dns_domain,
        "etcd topology": cluster.etcd.topology.value,
    }


class RecordError(ValueError):
    """The cluster file, the state directory and the hosts disagree about what the cluster is."""


@dataclass
class ClusterRecord:
    cluster_id: str
    name: str
    created_at: float = field(default_factory=time.time)
    #: The host that ran (or, for a cluster adopted from an older hakube, had run) kubeadm init.
    init_host: str | None = None
    #: When kubeadm init succeeded (None: adopted from an older hakube, time unknown).
    init_at: float | None = None
    #: Settings fixed when the first control plane was initialised (see IMMUTABLE_WHY).
    fixed: dict[str, str] = field(default_factory=dict)
    #: Node name -> "control-plane" or "worker", once the node object was seen.
    nodes: dict[str, str] = field(default_factory=dict)
    #: etcd member names seen in the member list and healthy.
    etcd_members: list[str] = field(default_factory=list)
    #: Host -> package -> installed version, as the package manager reported it.
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Host -> its cluster-file entry, saved once the host answered with this cluster's id, so
    #: that a host deleted from the file can still be reached to remove it (hakube.membership).
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Hosts removed from the cluster, with when, and who took over as init host if they were it.
    removed: list[dict[str, Any]] = field(default_factory=list)
    #: External etcd: the client endpoints kubeadm-config and every joined apiserver were last
    #: set to (None: unknown, so the next apply checks them on the hosts).
    etcd_endpoints: list[str] | None = None
    #: Phase -> hosts it completed on in a real run (`hakube apply phase` checks its needs).
    phases_done: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def new(cls, name: str) -> ClusterRecord:
        return cls(cluster_id=str(uuid.uuid4()), name=name)

    @classmethod
    def from_json(cls, text: str, source: Path) -> ClusterRecord:
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as e:
            raise RecordError(
                f"{source} is not a hakube cluster record ({e}); restore it from a backup, "
                "it holds the cluster's identity"
            ) from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    # Checks ----------------------------------------------------------------------------------

    def check_settings(self, cluster: Cluster) -> list[str]:
        """Problems with settings that differ from the ones fixed at init (old, new, why)."""
        now = immutable_settings(cluster)
        return [
            f"{key} cannot change after kubeadm init ({IMMUTABLE_WHY[key]}): it was "
            f"{old!r}, the cluster file now says {now[key]!r}; put the old value back"
            for key, old in sorted(self.fixed.items())
            if key in now and now[key] != old
        ]

    def check_host_id(self, host: str, found: str) -> str | None:
        """The problem with a host whose /etc/hakube/cluster-id names another cluster."""
        if not found or found == self.cluster_id:
            return None
        return (
            f"{HOST_ID_PATH} says this host belongs to cluster {found}, but the state "
            f"directory of {self.name!r} records cluster {self.cluster_id}: two clusters must "
            "never share hosts or a CA. Check that this is the right cluster file and state "
            f"directory; if the host was wiped for reuse, delete {HOST_ID_PATH} on {host}"
        )

    # Updates (callers save afterwards) ---------------------------------------------------------

    def initialised(self, host: str, cluster: Cluster, at: float | None) -> None:
        self.init_host = host
        self.init_at = at
        self.fixed = immutable_settings(cluster)
        if at is not None and cluster.etcd.topology is EtcdTopology.EXTERNAL:
            self.etcd_endpoints = client_endpoints(cluster)  # this init wrote the file's list

    def joined(self, node: str, role: str) -> None:
        self.nodes[node] = role

    def etcd_seen(self, names: list[str]) -> None:
        self.etcd_members = sorted(set(self.etcd_members) | set(names))

    def phase_done(self, phase: str, hosts: list[str]) -> None:
        self.phases_done[phase] = sorted(set(self.phases_done.get(phase, [])) | set(hosts))

    def installed(self, host: str, versions: dict[str, str]) -> None:
        self.versions.setdefault(host, {}).update(versions)

    # Membership changes (hakube.membership, hakube.workflows.remove) -----------------------------

    def reached(self, entries: dict[str, dict[str, Any]]) -> None:
        self.hosts.update(entries)

    def hand_init_over(self, successor: str) -> None:
        """The init host leaves: its role (the admin.conf hakube uses; init never runs again)
        passes to `successor`, a control plane that joined with the same certificates."""
        self.removed.append({"init_host_was": self.init_host, "init_host_now": successor,
                             "at": time.time()})  # fmt: skip
        self.init_host = successor

    def forget(self, host: str) -> None:
        """`host` was removed (etcd member gone, node deleted, host reset or unreachable)."""
        entry: dict[str, Any] = {"host": host, "at": time.time()}
        self.nodes.pop(host, None)
        self.etcd_members = [m for m in self.etcd_members if m != host]
        self.versions.pop(host, None)
        self.hosts.pop(host, None)
        for done in self.phases_done.values():
            if host in done:
                done.remove(host)
        self.removed.append(entry)


def upstream_version(package_version: str) -> str:
    """The upstream part of a deb/rpm version: ``1.30.1-1.1`` and ``1:1.30.1-150500.1.1`` are
    both ``1.30.1`` (compared exactly, so that 1.30.1 never matches 1.30.10)."""
    v = package_version.split(":", 1)[-1]
    return v.split("-", 1)[0]


def version_problems(wanted: str, installed: dict[str, str]) -> list[str]:
    """Installed Kubernetes packages at another version than the file's (exact match)."""
    out = []
    for p in KUBE_PACKAGES:
        have = installed.get(p)
        if have and upstream_version(have) != wanted:
            out.append(
                f"{p} {upstream_version(have)} is installed but kubernetes.version is {wanted}: "
                "upgrade is not supported yet; set kubernetes.version back to "
                f"{upstream_version(have)}"
            )
    return out


def load_record(path: Path) -> ClusterRecord | None:
    f = path / RECORD_FILE
    try:
        text = f.read_text()
    except FileNotFoundError:
        return None
    return ClusterRecord.from_json(text, f)


def save_record(path: Path, record: ClusterRecord) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path / RECORD_FILE, record.to_json().encode())
