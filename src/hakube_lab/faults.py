"""Faults a drill injects on a lab host: power off/on, cable out/in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hakube_lab import host as hostmod
from hakube_lab import network
from hakube_lab.lifecycle import image_of, start_host
from hakube_lab.system import require_root

if TYPE_CHECKING:
    from hakube_lab.lab import Lab


def stop(lab: Lab, host: str) -> None:
    """Power off: cable out first, then kill every process of the host at once."""
    h = lab.host(host)
    if network.link_exists(h.veth):
        network.set_link(h.veth, up=False)
    paths = lab.paths(host)
    hostmod.power_off(paths)
    hostmod.unmount(paths)


def start(lab: Lab, host: str, *, wait: bool, timeout: float) -> None:
    require_root()
    start_host(lab, image_of(lab), host)
    if wait:
        lab.wait_ssh([host], timeout=timeout)


def set_cable(lab: Lab, host: str, *, plugged: bool) -> None:
    network.set_link(lab.host(host).veth, up=plugged)
