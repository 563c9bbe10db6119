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

from hakube.record import ClusterRecord
from hakube.spec.model import Cluster, EtcdTopology, Role


class MembershipError(ValueError):
    """The file and the record disagree about who is in the cluster; nothing was changed."""


@dataclass(frozen=True)
class Leaving:
    """A recorded host that is no longer in the cluster file."""

    name: str
    #: What the record says it is: "control-plane", "worker", "etcd member", "init host".
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
