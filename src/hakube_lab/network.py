"""The lab's layer 2: one isolated bridge, a network namespace and a veth per host.

Nothing here ever adds an uplink, NAT or a default route: hosts can reach the bridge subnet and
nothing else, and the machine reaches them only through the bridge's connected route.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hakube_lab.addressing import HOST_INTERFACE, LabError
from hakube_lab.system import run


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = run(["ip", "-j", *args]).stdout.strip()
    data: list[dict[str, Any]] = json.loads(out) if out else []
    return data


def routes() -> list[dict[str, Any]]:
    return _ip_json("-4", "route", "show", "table", "all")


def links() -> list[str]:
    return [str(link["ifname"]) for link in _ip_json("link", "show")]


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def netns_list() -> list[str]:
    return [str(ns["name"]) for ns in _ip_json("netns", "list")]


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def _disable_ipv6(name: str) -> None:
    # Keeps the machine from sending router solicitations and MLD reports into the lab.
    knob = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
    if knob.exists():
        knob.write_text("1\n")


def ensure_bridge(name: str, address: str, prefixlen: int) -> None:
    if not link_exists(name):
        # No STP and no forward delay: ports forward at once. Multicast snooping off: VRRP
        # adverts (224.0.0.18) must flood to every port without IGMP joins.
        run(
            ["ip", "link", "add", name, "type", "bridge", "stp_state", "0",
             "forward_delay", "0", "mcast_snooping", "0"]
        )  # fmt: skip
    _disable_ipv6(name)
    have = {
        (a["local"], a["prefixlen"])
        for link in _ip_json("-4", "addr", "show", "dev", name)
        for a in link.get("addr_info", [])
    }
    if (address, prefixlen) not in have:
        run(["ip", "addr", "add", f"{address}/{prefixlen}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def ensure_netns(name: str) -> None:
    if not netns_exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def ensure_veth(veth: str, netns: str, bridge: str, address: str, prefixlen: int) -> None:
    """veth pair: `veth` on the bridge in the root namespace, HOST_INTERFACE inside `netns`."""
    inner_exists = run(["ip", "-n", netns, "link", "show", HOST_INTERFACE], check=False)
    if not link_exists(veth) or inner_exists.returncode != 0:
        if link_exists(veth):
            run(["ip", "link", "del", veth])
        run(
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", HOST_INTERFACE,
             "netns", netns]
        )  # fmt: skip
    _disable_ipv6(veth)
    run(["ip", "link", "set", veth, "master", bridge])
    have = run(["ip", "-n", netns, "-4", "-o", "addr", "show", "dev", HOST_INTERFACE]).stdout
    if f" {address}/{prefixlen} " not in have:
        run(["ip", "-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", HOST_INTERFACE])
    run(["ip", "-n", netns, "link", "set", HOST_INTERFACE, "up"])


def set_link(veth: str, up: bool) -> None:
    """Cut or restore a host's cable: the bridge side going down drops the carrier inside too."""
    if not link_exists(veth):
        raise LabError(f"link {veth} does not exist (is the lab up?)")
    run(["ip", "link", "set", veth, "up" if up else "down"])


def link_is_up(veth: str) -> bool:
    try:
        flags = Path(f"/sys/class/net/{veth}/flags").read_text()
    except OSError:
        return False
    return bool(int(flags, 16) & 0x1)


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", name], check=False)


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)
