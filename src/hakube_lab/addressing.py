"""Pure address and name planning for a lab: no I/O, so it is unit-tested without root."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SUBNET = "10.123.0.0/24"
#: Where `lab up` without --subnet looks for a free /24, DEFAULT_SUBNET first.
AUTO_RANGE = "10.123.0.0/16"
DEFAULT_NAME = "demo"
MIRROR_PORT = 8080
#: Interface name the hosts see for their end of the veth (also the VIP interface).
HOST_INTERFACE = "host0"

# Fixed offsets make addresses predictable from the host name alone (cp2 is always .12).
BRIDGE_OFFSET = 1
CONTROL_PLANE_OFFSET = 11
WORKER_OFFSET = 21
VIP_OFFSET = 100
#: Spare hosts (s1, s2, ...) run like the others but are not in the lab's cluster file: hosts
#: to add to a cluster later, or to replace one with.
SPARE_OFFSET = 111
#: cloud-lb labs: the host that models the cloud's L4 balancer (Alibaba SLB) sits just below cp1.
SLB_OFFSET = 10
MAX_CONTROL_PLANES = WORKER_OFFSET - CONTROL_PLANE_OFFSET
MAX_WORKERS = VIP_OFFSET - WORKER_OFFSET
MAX_SPARES = 40
SPARE = "spare"
#: The balancer host of a cloud-lb lab: not a cluster host, not in the cluster file.
SLB = "slb"
#: How the lab's cluster reaches the API (the product's endpoint modes the lab can model).
ENDPOINT_MODES = ("vip", "cloud-lb", "local-lb")
#: Roles of lab hosts that are not in the cluster file.
NOT_IN_CLUSTER = (SPARE, SLB)

# Lab names end up in 15-character interface names ("hk" + name + "-" + host), so they are short.
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")


class LabError(Exception):
    """A lab operation failed with a message meant for the user."""


class LabInputError(LabError):
    """The user named something that is not there or not allowed (a lab, a host, a name):
    bad input, refused before anything is touched (exit 2)."""


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise LabInputError(
            f"lab name {name!r} is invalid: use 1-8 characters a-z/0-9 starting with a letter "
            "(it becomes part of 15-character interface names)"
        )
    return name


def bridge_name(lab: str) -> str:
    return f"hk{lab}-br"


def link_prefix(lab: str) -> str:
    """Every link a lab creates starts with this, so `down` can find leftovers after a crash."""
    return f"hk{lab}-"


def veth_name(lab: str, host: str) -> str:
    return f"{link_prefix(lab)}{host}"


def netns_prefix(lab: str) -> str:
    return f"hk-{lab}-"


def netns_name(lab: str, host: str) -> str:
    return f"{netns_prefix(lab)}{host}"


@dataclass(frozen=True)
class HostPlan:
    name: str
    role: str  # "control-plane", "worker", or "spare"/"slb" (not in the cluster file)
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class LabPlan:
    name: str
    subnet: ipaddress.IPv4Network
    hosts: tuple[HostPlan, ...]
    endpoint_mode: str = "vip"

    @property
    def slb(self) -> HostPlan | None:
        """The cloud-lb lab's balancer host (None in the other modes)."""
        return next((h for h in self.hosts if h.role == SLB), None)

    @property
    def bridge(self) -> str:
        return bridge_name(self.name)

    @property
    def bridge_ip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + BRIDGE_OFFSET

    @property
    def vip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + VIP_OFFSET

    @property
    def mirror_url(self) -> str:
        return f"http://{self.bridge_ip}:{MIRROR_PORT}/"

    def host(self, name: str) -> HostPlan:
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise LabInputError(f"lab {self.name} has no host {name!r} (hosts: {known})")


def parse_subnet(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise LabError(f"subnet {cidr!r} is not a valid network: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise LabError(f"subnet {cidr} must be IPv4")
    if net.prefixlen > 24:
        raise LabError(f"subnet {cidr} is too small: the lab needs a /24 or larger (VIP at .100)")
    if not net.is_private or net.is_loopback or net.is_link_local:
        raise LabError(f"subnet {cidr} must be a private (RFC 1918) range")
    return net


def plan_lab(
    name: str,
    control_planes: int,
    workers: int,
    subnet: str,
    spares: int = 0,
    endpoint_mode: str = "vip",
) -> LabPlan:
    validate_name(name)
    if endpoint_mode not in ENDPOINT_MODES:
        raise LabInputError(
            f"endpoint mode {endpoint_mode!r} is not one the lab models: use "
            + ", ".join(ENDPOINT_MODES)
        )
    if not 0 <= spares <= MAX_SPARES:
        raise LabError(f"spare hosts must be 0..{MAX_SPARES}, not {spares}")
    if not 1 <= control_planes <= MAX_CONTROL_PLANES:
        raise LabError(f"control planes must be 1..{MAX_CONTROL_PLANES}, not {control_planes}")
    if not 0 <= workers <= MAX_WORKERS:
        raise LabError(f"workers must be 0..{MAX_WORKERS}, not {workers}")
    net = parse_subnet(subnet)
    base = net.network_address
    hosts = [
        HostPlan(f"cp{i}", "control-plane", base + CONTROL_PLANE_OFFSET + i - 1)
        for i in range(1, control_planes + 1)
    ] + [HostPlan(f"w{i}", "worker", base + WORKER_OFFSET + i - 1) for i in range(1, workers + 1)]
    hosts += [HostPlan(f"s{i}", SPARE, base + SPARE_OFFSET + i - 1) for i in range(1, spares + 1)]
    if endpoint_mode == "cloud-lb":
        hosts.append(HostPlan(SLB, SLB, base + SLB_OFFSET))
    return LabPlan(name, net, tuple(hosts), endpoint_mode)


def find_overlaps(
    subnet: ipaddress.IPv4Network, routes: Iterable[Mapping[str, Any]], own_devices: set[str]
) -> list[str]:
    """Routes (as `ip -j route show table all` prints them) that overlap `subnet`.

    The default route is ignored (it "overlaps" everything by definition but only catches what no
    narrower route claims); so are routes on the lab's own bridge, so re-running `up` works.
    """
    found: list[str] = []
    for r in routes:
        dst = str(r.get("dst", ""))
        if dst in ("", "default") or r.get("dev") in own_devices:
            continue
        if r.get("type") in ("multicast", "unreachable", "blackhole", "prohibit", "throw"):
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.overlaps(subnet):
            dev = r.get("dev", "?")
            found.append(f"{dst} dev {dev}" + (f" table {r['table']}" if "table" in r else ""))
    return found


def pick_subnet(
    labs: Iterable[ipaddress.IPv4Network],
    routes: Iterable[Mapping[str, Any]],
    addresses: Iterable[ipaddress.IPv4Address],
) -> str:
    """The first /24 of AUTO_RANGE that no lab, route or interface address of this machine uses.

    `labs` are the subnets recorded by other labs (running or not: their state says they may
    come back), `routes` as `ip -j route show table all` prints them, `addresses` every IPv4
    address on the machine's interfaces.
    """
    taken = list(labs)
    addrs = list(addresses)
    route_list = list(routes)
    for candidate in ipaddress.IPv4Network(AUTO_RANGE).subnets(new_prefix=24):
        if any(candidate.overlaps(t) for t in taken) or any(a in candidate for a in addrs):
            continue
        if find_overlaps(candidate, route_list, set()):
            continue
        return str(candidate)
    raise LabError(
        f"no free /24 left in {AUTO_RANGE} (other labs, addresses and routes use them all); "
        "pass --subnet with a free private range, e.g. --subnet 10.124.0.0/24"
    )
