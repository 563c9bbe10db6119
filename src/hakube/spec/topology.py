"""Derived topology: which hosts play which part, and where each host finds the API.

`Cluster` inherits these views from `Topology`, so call sites read `cluster.lb_hosts`; everything
downstream asks them instead of re-deriving roles from the schema.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from typing import TYPE_CHECKING

from hakube.spec import model as m

if TYPE_CHECKING:
    from hakube.spec.model import Endpoint, Etcd, Host, Network, SSHSettings


class Topology:
    """Views derived from the cluster file; mixed into `Cluster` (the schema lives there)."""

    if TYPE_CHECKING:
        # The schema fields these views read; `Cluster` declares them.
        name: str
        hosts: list[Host]
        endpoint: Endpoint
        etcd: Etcd
        network: Network
        ssh: SSHSettings

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @cached_property
    def control_planes(self) -> list[Host]:
        return [h for h in self.hosts if h.has(m.Role.CONTROL_PLANE)]

    @cached_property
    def workers(self) -> list[Host]:
        return [h for h in self.hosts if h.has(m.Role.WORKER)]

    @cached_property
    def nodes(self) -> list[Host]:
        """Hosts that run kubelet: control-plane nodes and workers."""
        return [h for h in self.hosts if h.has(m.Role.CONTROL_PLANE) or h.has(m.Role.WORKER)]

    @cached_property
    def lb_hosts(self) -> list[Host]:
        """Hosts running HAProxy (and keepalived in vip mode).

        Explicit `lb` roles win; otherwise the control-plane nodes, as in the tutorial. In
        local-lb mode every node balances for itself.
        """
        mode = self.endpoint.mode
        if mode is m.EndpointMode.LOCAL_LB:
            return list(self.hosts)
        if mode in (m.EndpointMode.CLOUD_LB, m.EndpointMode.NONE):
            return []
        explicit = [h for h in self.hosts if h.has(m.Role.LB)]
        return explicit or self.control_planes

    @cached_property
    def etcd_hosts(self) -> list[Host]:
        if self.etcd.topology is m.EtcdTopology.STACKED:
            return []
        if self.etcd.hosts is not None:
            names = set(self.etcd.hosts)
            return [h for h in self.hosts if h.name in names]
        explicit = [h for h in self.hosts if h.has(m.Role.ETCD)]
        return explicit or self.control_planes

    # Membership by name: hosts are unique by name, and pydantic's deep equality would make
    # `host in self.lb_hosts` quadratic in a large self.

    def is_control_plane(self, host: Host) -> bool:
        return host.name in {h.name for h in self.control_planes}

    def is_lb(self, host: Host) -> bool:
        return host.name in {h.name for h in self.lb_hosts}

    def is_etcd(self, host: Host) -> bool:
        return host.name in {h.name for h in self.etcd_hosts}

    def interface_of(self, host: Host) -> str:
        return host.interface or self.endpoint.interface

    def ssh_for(self, host: Host) -> SSHSettings:
        """Cluster-wide ssh settings with the host's overrides applied."""
        if host.ssh is None:
            return self.ssh
        overrides = host.ssh.model_dump(exclude_none=True)
        return self.ssh.model_copy(update=overrides)

    @property
    def api_name(self) -> str:
        return self.endpoint.name or f"api.{self.name}.hakube.internal"

    @property
    def control_plane_endpoint(self) -> str:
        """host:port written as kubeadm's controlPlaneEndpoint; always the DNS name.

        A name (resolved through /etc/hosts per host) lets cloud-lb point control-plane nodes at
        themselves and workers at the balancer, and lets the VIP change without new certificates.
        """
        return f"{self.api_name}:{self.endpoint_port}"

    @property
    def endpoint_port(self) -> int:
        mode = self.endpoint.mode
        if mode is m.EndpointMode.CLOUD_LB:
            return self.endpoint.lb_port
        if mode is m.EndpointMode.NONE:
            return m.APISERVER_PORT
        return self.endpoint.port

    def endpoint_address_for(self, host: Host) -> ipaddress.IPv4Address:
        """What the API name resolves to on this host (its /etc/hosts entry)."""
        mode = self.endpoint.mode
        if mode is m.EndpointMode.VIP:
            assert self.endpoint.vip is not None
            return self.endpoint.vip
        if mode is m.EndpointMode.CLOUD_LB:
            # The SLB cannot hairpin: a backend must never reach itself through it.
            if host.has(m.Role.CONTROL_PLANE):
                return ipaddress.IPv4Address("127.0.0.1")
            assert self.endpoint.lb_address is not None
            return self.endpoint.lb_address
        if mode is m.EndpointMode.LOCAL_LB:
            return ipaddress.IPv4Address("127.0.0.1")
        return self.control_planes[0].address

    @property
    def host_subnet(self) -> ipaddress.IPv4Network:
        if self.network.host_subnet is not None:
            return self.network.host_subnet
        addrs = [int(h.address) for h in self.hosts]
        prefix = 24
        while prefix > 0:
            net = ipaddress.IPv4Network((min(addrs), prefix), strict=False)
            if all(ipaddress.IPv4Address(a) in net for a in addrs):
                return net
            prefix -= 1
        return ipaddress.IPv4Network("0.0.0.0/0")
