"""Membership: who joins and who leaves, from the cluster file against the recorded cluster.

The record (``hakube.record``) holds what hakube did and verified: nodes seen in the API, etcd
members seen healthy, the init host. A host in the file that the record does not know yet joins
on the next apply; a recorded host that left the file is only ever removed on request
(``apply --prune`` or ``hakube node remove``). Without that request apply lists it and changes
nothing, because the renderers work from the file: one host quietly dropped from HAProxy
backends, keepalived peers and ``/etc/hosts`` while its apiserver and etcd member still run is
half a removal, the state real clusters break in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hakube.record import ClusterRecord
from hakube.spec.model import Cluster, EtcdTopology, Host, Role


class MembershipError(ValueError):
    """The file and the record disagree about who is in the cluster; nothing was changed."""


@dataclass(frozen=True)
class Leaving:
    """A recorded host that is no longer in the cluster file."""

    name: str
    #: What the record says it is: "control-plane", "worker", "etcd member", "init host"; for a
    #: host that is none of these (an LB-only host, or one never joined), its roles in the file.
    roles: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.roles)})"


@dataclass(frozen=True)
class Membership:
    #: Nodes in the file that the record has not seen join (only once init is recorded).
    joining_nodes: tuple[str, ...] = ()
    #: External etcd hosts in the file that are not recorded members of a running etcd.
    joining_etcd: tuple[str, ...] = ()
    leaving: tuple[Leaving, ...] = field(default_factory=tuple)

    @property
    def changes(self) -> bool:
        return bool(self.joining_nodes or self.joining_etcd or self.leaving)

    def leaving_names(self) -> list[str]:
        return [left.name for left in self.leaving]

    def lines(self) -> list[str]:
        out = []
        if self.joining_nodes:
            out.append(f"joining as nodes: {', '.join(self.joining_nodes)}")
        if self.joining_etcd:
            out.append(f"joining etcd (as learners, promoted once caught up): "
                       f"{', '.join(self.joining_etcd)}")  # fmt: skip
        if self.leaving:
            out.append(
                "recorded but not in the file: "
                + ", ".join(left.describe() for left in self.leaving)
            )
        return out

    def refusal(self, file_hint: str = "FILE") -> str:
        """Why an apply without --prune changes nothing while recorded hosts left the file."""
        names = self.leaving_names()
        return (
            f"{len(names)} recorded host(s) are not in the cluster file any more: "
            f"{', '.join(left.describe() for left in self.leaving)}. hakube removes hosts "
            "only when asked: run `hakube apply --prune` to remove them (drain, etcd member, "
            "kubeadm reset, load-balancer backends), or `hakube node remove -f "
            f"{file_hint} {names[0]}`, or put them back in the file. Nothing was changed"
        )


def recorded_roles(record: ClusterRecord) -> dict[str, list[str]]:
    """Every host the record knows, with what it is recorded as."""
    out: dict[str, list[str]] = {}
    for node, role in sorted(record.nodes.items()):
        out.setdefault(node, []).append(role)
    for member in record.etcd_members:
        out.setdefault(member, []).append("etcd member")
    if record.init_host:
        out.setdefault(record.init_host, []).append("init host")
    # Hosts apply reached and set up that are neither nodes nor members: an LB-only host (its
    # keepalived may hold the VIP, its HAProxy still runs), or one kubeadm never joined. Their
    # roles as the file gave them; without this, deleting one from the file left it running.
    for name, entry in sorted(record.hosts.items()):
        if name not in out:
            out[name] = [str(r) for r in entry.get("roles", [])] or ["host"]
    return out


def membership(cluster: Cluster, record: ClusterRecord) -> Membership:
    in_file = {h.name for h in cluster.hosts}
    leaving = tuple(
        Leaving(name, tuple(roles))
        for name, roles in recorded_roles(record).items()
        if name not in in_file
    )
    joining_nodes: tuple[str, ...] = ()
    if record.init_host is not None:
        joining_nodes = tuple(
            h.name
            for h in cluster.hosts
            if (h.has(Role.CONTROL_PLANE) or h.has(Role.WORKER)) and h.name not in record.nodes
            and h.name != record.init_host
        )  # fmt: skip
    joining_etcd: tuple[str, ...] = ()
    if cluster.etcd.topology is EtcdTopology.EXTERNAL and record.etcd_members:
        joining_etcd = tuple(
            h.name for h in cluster.etcd_hosts if h.name not in record.etcd_members
        )
    return Membership(joining_nodes, joining_etcd, leaving)


# Hosts that leave -----------------------------------------------------------------------------


def host_entry(host: Host) -> dict[str, Any]:
    """A host's cluster-file entry, as the record keeps it."""
    return host.model_dump(mode="json", exclude_none=True, by_alias=True)


def without(cluster: Cluster, names: list[str]) -> Cluster:
    """The cluster without `names` (the cross-field checks of a cluster file are not applied:
    the survivors of an explicit `node remove` may be an even number, said so at removal)."""
    data = cluster.model_dump(mode="json", exclude_none=True, by_alias=True)
    data["hosts"] = [h for h in data["hosts"] if h["name"] not in names]
    return Cluster.model_validate(data)


def with_hosts(cluster: Cluster, hosts: list[Host]) -> Cluster:
    """The cluster with `hosts` added back: what hakube rendered for them before they left."""
    data = cluster.model_dump(mode="json", exclude_none=True, by_alias=True)
    data["hosts"] += [
        host_entry(h) for h in hosts if h.name not in {x["name"] for x in data["hosts"]}
    ]
    return Cluster.model_validate(data)


def leaving_hosts(record: ClusterRecord, leaving: tuple[Leaving, ...]) -> dict[str, Host | None]:
    """Each leaving host as it was last reached (None: never recorded, cannot be contacted)."""
    out: dict[str, Host | None] = {}
    for left in leaving:
        entry = record.hosts.get(left.name)
        out[left.name] = Host.model_validate(entry) if entry else None
    return out


def init_successor(cluster: Cluster, record: ClusterRecord) -> str | None:
    """Who takes over the init host's role when it leaves: a control plane that joined (it has
    admin.conf and the shared certificates); None when kubeadm never ran."""
    if record.init_host is None:
        return None
    for h in cluster.control_planes:
        if record.nodes.get(h.name) == "control-plane":
            return h.name
    return None


@dataclass(frozen=True)
class EtcdCount:
    """etcd membership as the survivors report it, for the quorum refusal."""

    members: tuple[str, ...]
    healthy: tuple[str, ...]


def quorum_problems(
    cluster_after: Cluster, leaving: tuple[Leaving, ...], etcd: EtcdCount | None
) -> list[str]:
    """Why removing `leaving` would break the cluster, with the numbers; [] when it is safe."""
    out = []
    names = {left.name for left in leaving}
    cps_leaving = [left.name for left in leaving if "control-plane" in left.roles]
    if cps_leaving and not cluster_after.control_planes:
        out.append(
            f"removing {', '.join(cps_leaving)} would remove the last control plane "
            f"({len(cps_leaving)} now, 0 after): add another control plane first"
        )
    if etcd is not None:
        n, h = len(etcd.members), len(etcd.healthy)
        if h < n // 2 + 1:
            out.append(
                f"etcd has no quorum now ({h} of {n} members healthy, {n // 2 + 1} needed): "
                "no member can be removed safely; bring members back first"
            )
        else:
            after = [m for m in etcd.members if m not in names]
            healthy_after = [m for m in etcd.healthy if m not in names]
            need = len(after) // 2 + 1
            if not after or len(healthy_after) < need:
                out.append(
                    f"removing {', '.join(sorted(names & set(etcd.members)))} leaves etcd "
                    f"{len(after)} member(s) with {len(healthy_after)} healthy, and quorum "
                    f"needs {need}: add members or repair the unhealthy ones first"
                )
    return out
