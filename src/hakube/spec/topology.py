"""Derived topology: which hosts play which part, and where each host finds the API.

Everything downstream asks these (through the `Cluster` accessors) instead of re-deriving roles
from the schema.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from hakube.spec import model as m

if TYPE_CHECKING:
    from hakube.spec.model import Cluster, Host, SSHSettings


def host(cluster: Cluster, name: str) -> Host:
    for h in cluster.hosts:
        if h.name == name:
            return h
    raise KeyError(name)


def control_planes(cluster: Cluster) -> list[Host]:
    return [h for h in cluster.hosts if h.has(m.Role.CONTROL_PLANE)]


def workers(cluster: Cluster) -> list[Host]:
    return [h for h in cluster.hosts if h.has(m.Role.WORKER)]


def nodes(cluster: Cluster) -> list[Host]:
    """Hosts that run kubelet: control-plane nodes and workers."""
    return [h for h in cluster.hosts if h.has(m.Role.CONTROL_PLANE) or h.has(m.Role.WORKER)]


def lb_hosts(cluster: Cluster) -> list[Host]:
    """Hosts running HAProxy (and keepalived in vip mode).

    Explicit `lb` roles win; otherwise the control-plane nodes, as in the tutorial. In
    local-lb mode every node balances for itself.
    """
    mode = cluster.endpoint.mode
    if mode is m.EndpointMode.LOCAL_LB:
        return list(cluster.hosts)
    if mode in (m.EndpointMode.CLOUD_LB, m.EndpointMode.NONE):
        return []
    explicit = [h for h in cluster.hosts if h.has(m.Role.LB)]
    return explicit or cluster.control_planes


def etcd_hosts(cluster: Cluster) -> list[Host]:
    if cluster.etcd.topology is m.EtcdTopology.STACKED:
        return []
    if cluster.etcd.hosts is not None:
        names = set(cluster.etcd.hosts)
        return [h for h in cluster.hosts if h.name in names]
    explicit = [h for h in cluster.hosts if h.has(m.Role.ETCD)]
    return explicit or cluster.control_planes


# Membership by name: hosts are unique by name, and pydantic's deep equality would make
# `host in cluster.lb_hosts` quadratic in a large cluster.


def is_control_plane(cluster: Cluster, host: Host) -> bool:
    return host.name in {h.name for h in cluster.control_planes}


def is_lb(cluster: Cluster, host: Host) -> bool:
    return host.name in {h.name for h in cluster.lb_hosts}


def is_etcd(cluster: Cluster, host: Host) -> bool:
    return host.name in {h.name for h in cluster.etcd_hosts}


def interface_of(cluster: Cluster, host: Host) -> str:
    return host.interface or cluster.endpoint.interface


def ssh_for(cluster: Cluster, host: Host) -> SSHSettings:
    """Cluster-wide ssh settings with the host's overrides applied."""
    if host.ssh is None:
        return cluster.ssh
    overrides = host.ssh.model_dump(exclude_none=True)
    return cluster.ssh.model_copy(update=overrides)


def api_name(cluster: Cluster) -> str:
    return cluster.endpoint.name or f"api.{cluster.name}.hakube.internal"


def control_plane_endpoint(cluster: Cluster) -> str:
    """host:port written as kubeadm's controlPlaneEndpoint; always the DNS name.

    A name (resolved through /etc/hosts per host) lets cloud-lb point control-plane nodes at
    themselves and workers at the balancer, and lets the VIP change without new certificates.
    """
    return f"{cluster.api_name}:{cluster.endpoint_port}"


def endpoint_port(cluster: Cluster) -> int:
    mode = cluster.endpoint.mode
    if mode is m.EndpointMode.CLOUD_LB:
        return cluster.endpoint.lb_port
    if mode is m.EndpointMode.NONE:
        return m.APISERVER_PORT
    return cluster.endpoint.port


def endpoint_address_for(cluster: Cluster, host: Host) -> ipaddress.IPv4Address:
    """What the API name resolves to on this host (its /etc/hosts entry)."""
    mode = cluster.endpoint.mode
    if mode is m.EndpointMode.VIP:
        assert cluster.endpoint.vip is not None
        return cluster.endpoint.vip
    if mode is m.EndpointMode.CLOUD_LB:
        # The SLB cannot hairpin: a backend must never reach itself through it.
        if host.has(m.Role.CONTROL_PLANE):
            return ipaddress.IPv4Address("127.0.0.1")
        assert cluster.endpoint.lb_address is not None
        return cluster.endpoint.lb_address
    if mode is m.EndpointMode.LOCAL_LB:
        return ipaddress.IPv4Address("127.0.0.1")
    return cluster.control_planes[0].address


def host_subnet(cluster: Cluster) -> ipaddress.IPv4Network:
    if cluster.network.host_subnet is not None:
        return cluster.network.host_subnet
    addrs = [int(h.address) for h in cluster.hosts]
    prefix = 24
    while prefix > 0:
        net = ipaddress.IPv4Network((min(addrs), prefix), strict=False)
        if all(ipaddress.IPv4Address(a) in net for a in addrs):
            return net
        prefix -= 1
    return ipaddress.IPv4Network("0.0.0.0/0")
