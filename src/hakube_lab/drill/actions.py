"""How each scenario breaks the cluster and restores it, on the lab."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hakube.spec.model import Cluster
from hakube_lab.drill.scenarios import DrillError, Scenario
from hakube_lab.lab import Lab
from hakube_lab.standin import UNIT as STANDIN_UNIT

Action = Callable[[], None]


def _etcd_targets(cluster: Cluster, owner: str, count: int) -> list[str]:
    names = [h.name for h in cluster.etcd_hosts]
    ordered = ([owner] if owner in names else []) + [n for n in names if n != owner]
    return ordered[:count]


def _systemctl(lab: Lab, hosts: Sequence[str], verb: str, unit: str) -> None:
    for host in hosts:
        lab.nsenter(host, ["systemctl", verb, unit], timeout=60)


def _unit_down(lab: Lab, hosts: list[str], unit: str) -> tuple[list[str], Action, Action]:
    return (hosts, lambda: _systemctl(lab, hosts, "stop", unit),
            lambda: _systemctl(lab, hosts, "start", unit))  # fmt: skip


#: The unit each "stop a service" scenario stops on the VIP owner.
_OWNER_UNITS = {
    "haproxy-down": "haproxy",
    "keepalived-down": "keepalived",
    "apiserver-down": STANDIN_UNIT,
}


def actions(
    sc: Scenario, owner: str, cluster: Cluster, lab: Lab
) -> tuple[list[str], Action, Action]:
    """The hosts a scenario breaks, how to break them and how to restore them."""
    if sc.name in _OWNER_UNITS:
        return _unit_down(lab, [owner], _OWNER_UNITS[sc.name])
    if sc.name == "host-down":
        return [owner], lambda: lab.stop(owner), lambda: lab.start(owner, wait=True)
    if sc.name == "isolate":
        return [owner], lambda: lab.isolate(owner), lambda: lab.heal(owner)
    if sc.name in ("etcd-member-down", "etcd-two-down"):
        count = 1 if sc.name == "etcd-member-down" else 2
        return _unit_down(lab, _etcd_targets(cluster, owner, count), "etcd")
    raise DrillError(f"unknown scenario {sc.name!r}")
