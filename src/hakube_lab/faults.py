"""Faults a drill injects on a lab host: power off/on, cable out/in, random packet loss."""

from __future__ import annotations

import shlex
import shutil
from typing import TYPE_CHECKING

from hakube_lab import host as hostmod
from hakube_lab import network
from hakube_lab.addressing import LabError, LabInputError
from hakube_lab.lifecycle import image_of, start_host
from hakube_lab.system import require_root, require_tools, run

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


#: Marks the lab's loss rules, so `restore` removes exactly those and nothing else.
LOSS_COMMENT = "hakube-lab-loss"
LOSS_CHAINS = ("INPUT", "OUTPUT")


def parse_loss(text: str) -> float:
    """'2%' or '0.02' → 0.02; refuses anything outside (0, 100 %)."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise LabInputError(f"--loss {text!r} is not a number: use e.g. 2% or 0.02") from None
    if not 0 < value < 1:
        raise LabInputError(f"--loss {text!r} must be above 0 and below 100%: use e.g. 2%")
    return value


def netns_iptables(lab: Lab, host: str, *args: str, check: bool = True) -> str:
    # The machine's iptables entered into the host's network namespace: the rules live there,
    # so they go with the namespace when the lab is torn down.
    require_tools(("iptables",))
    netns = lab.host(host).netns
    return run(["ip", "netns", "exec", netns, "iptables", "-w", *args], check=check).stdout


def tagged_rules(lab: Lab, host: str, comment: str, chains: tuple[str, ...]) -> list[str]:
    """The rules of `chains` in the host's namespace that carry the lab's `comment`, as
    `iptables -S` prints them: the lab finds its own rules by their comment."""
    out: list[str] = []
    for chain in chains:
        lines = netns_iptables(lab, host, "-S", chain).splitlines()
        out += [line for line in lines if comment in line]
    return out


def delete_tagged(lab: Lab, host: str, comment: str, chains: tuple[str, ...]) -> None:
    """Remove the rules `tagged_rules` finds; every other rule stays."""
    for rule in tagged_rules(lab, host, comment, chains):
        # `-S` prints "-A CHAIN spec..."; the same spec after -D deletes that one rule.
        netns_iptables(lab, host, "-D", *shlex.split(rule)[1:])


def loss_rules(lab: Lab, host: str) -> list[str]:
    """The lab's loss rules in the host's namespace, as `iptables -S` prints them."""
    return tagged_rules(lab, host, LOSS_COMMENT, LOSS_CHAINS)


def loss_of(lab: Lab, host: str) -> float | None:
    """The random loss the lab put on this host (each direction), or None."""
    if shutil.which("iptables") is None:
        return None  # then `degrade` cannot have put any
    for rule in loss_rules(lab, host):
        parts = rule.split()
        if "--probability" in parts:
            return float(parts[parts.index("--probability") + 1])
    return None


def degrade(lab: Lab, host: str, loss: float) -> None:
    """Drop `loss` of the packets going in and out of the host at random (no netem here).

    INPUT and OUTPUT of the host's own namespace, loopback included: that is every packet the
    host's processes send or receive, its health checks to itself too.
    """
    if not 0 < loss < 1:
        raise LabError(f"loss {loss} must be above 0 and below 1")
    restore(lab, host)
    for chain in LOSS_CHAINS:
        netns_iptables(lab, host, "-I", chain, "-m", "statistic", "--mode", "random",
                  "--probability", f"{loss:.6f}", "-m", "comment", "--comment", LOSS_COMMENT,
                  "-j", "DROP")  # fmt: skip


def restore(lab: Lab, host: str) -> None:
    """Remove the lab's loss rules from the host (other rules stay)."""
    delete_tagged(lab, host, LOSS_COMMENT, LOSS_CHAINS)
