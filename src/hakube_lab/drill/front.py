"""Where the drill's client stands and what it reaches, per endpoint mode.

vip: the probe runs in the machine's root namespace and reaches the VIP over the lab bridge
(outside every lab host: no scenario can break the observer). cloud-lb: the probe runs inside a
worker's network namespace and reaches the balancer's address, as kubelet on that worker would
(workers resolve the API name to the balancer). local-lb: the probe runs inside a worker's
network namespace and reaches the worker's own HAProxy on 127.0.0.1. Without a VIP the drill
breaks a control-plane node (not a VIP owner); the scenarios that exist to move a VIP
(haproxy-down, keepalived-down) and the soak (it counts false VIP failovers) are skipped with the
reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hakube.spec.model import Cluster, EndpointMode
from hakube_lab.drill.scenarios import SOAK, DrillError
from hakube_lab.lab import Lab

#: Where the probes stand in vip mode.
VANTAGE_BRIDGE = "the machine, over the lab bridge (outside every lab host)"
#: Scenarios whose point is that the balancer routes around a lost backend: without a VIP the
#: requests in the last second of the break must all succeed.
ROUTE_AROUND = ("apiserver-down", "host-down", "isolate")
#: Scenarios that break the VIP machinery itself (keepalived, or the HAProxy that holds the VIP).
VIP_ONLY = ("haproxy-down", "keepalived-down")


@dataclass(frozen=True)
class Front:
    mode: EndpointMode
    address: str
    port: int
    #: The name the probe checks the server certificate for.
    tls_name: str
    #: The network namespace the probe runs in (None: the machine's own).
    netns: str | None
    vantage: str

    @property
    def has_vip(self) -> bool:
        return self.mode is EndpointMode.VIP


def front_of(cluster: Cluster, lab: Lab) -> Front:
    ep = cluster.endpoint
    mode = ep.mode
    if mode is EndpointMode.VIP:
        vip = str(ep.vip)
        return Front(mode, vip, ep.port, vip, None, f"{VANTAGE_BRIDGE}, to {vip}:{ep.port}")
    if mode not in (EndpointMode.CLOUD_LB, EndpointMode.LOCAL_LB):
        raise DrillError(f"the drill has nothing to fail over in endpoint mode {mode}")
    if not cluster.workers:
        raise DrillError(
            f"endpoint mode {mode} is drilled from a worker's namespace, and the cluster has no "
            f"worker: bring the lab up with --workers 1 or more"
        )
    worker = cluster.workers[0].name
    netns = lab.host(worker).netns
    if mode is EndpointMode.CLOUD_LB:
        address = str(ep.lb_address)
        port = ep.lb_port
        where = f"the balancer {address}:{port}"
    else:
        address, port = "127.0.0.1", ep.port
        where = f"{worker}'s own HAProxy on 127.0.0.1:{port}"
    vantage = f"inside worker {worker}'s network namespace ({netns}), to {where}"
    return Front(mode, address, port, cluster.api_name, netns, vantage)


def target_host(cluster: Cluster, front: Front, vip_holders: Sequence[str]) -> str:
    """The host a scenario breaks: the VIP owner, or without a VIP the first control plane."""
    if front.has_vip:
        if not vip_holders:
            raise DrillError("nobody holds the VIP before the break")
        return vip_holders[0]
    return cluster.control_planes[0].name


def summary(text: str, front: Front) -> str:
    """A scenario's summary as it applies here: without a VIP the run breaks a control plane."""
    if front.has_vip:
        return text
    text = text.replace("the VIP owner", "a control plane")
    return text.replace("the owner's", "a control plane's")


def inapplicable(front: Front, names: Sequence[str]) -> dict[str, str]:
    """Scenarios that mean nothing in this endpoint mode, each with the reason."""
    if front.has_vip:
        return {}
    out: dict[str, str] = {}
    for n in names:
        if n == SOAK:
            out[n] = f"the soak counts false VIP failovers; endpoint mode {front.mode} has no VIP"
        elif n in VIP_ONLY:
            out[n] = f"its point is a VIP move; endpoint mode {front.mode} has no VIP"
    return out
