"""What a lab reports about itself: per-host memory, links and state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hakube_lab import faults, network
from hakube_lab import host as hostmod

if TYPE_CHECKING:
    from hakube_lab.lab import Lab


def memory_pss(lab: Lab, host: str) -> int:
    """Bytes of PSS of every process of the host (shared pages split between sharers)."""
    return hostmod.memory_pss(lab.paths(host))


def memory_rss(lab: Lab, host: str) -> int:
    """Bytes of RSS summed over the host's processes: a pessimistic upper bound."""
    return hostmod.memory_rss(lab.paths(host))


def status(lab: Lab) -> dict[str, Any]:
    hosts = []
    for h in lab.hosts:
        running = hostmod.is_running(lab.paths(h.name))
        hosts.append(
            {
                "name": h.name,
                "role": h.role,
                "address": h.address,
                "running": running,
                "link_up": network.link_is_up(h.veth),
                "memory_mb": round(memory_pss(lab, h.name) / 2**20, 1) if running else 0.0,
                "loss": faults.loss_of(lab, h.name) if network.netns_exists(h.netns) else None,
            }
        )
    return {
        "name": lab.name,
        "subnet": str(lab.plan.subnet),
        "bridge": lab.plan.bridge,
        "bridge_up": network.link_exists(lab.plan.bridge),
        "endpoint_mode": lab.plan.endpoint_mode,
        "vip": str(lab.plan.vip) if lab.plan.endpoint_mode == "vip" else None,
        "slb": None if lab.plan.slb is None else str(lab.plan.slb.address),
        "mirror": lab.plan.mirror_url,
        "state_dir": str(lab.state_dir),
        "cluster_file": str(lab.cluster_file),
        "hosts": hosts,
    }
