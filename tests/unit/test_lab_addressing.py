"""Address planning and the overlap check of `hakube lab` (pure, no root)."""

from __future__ import annotations

import ipaddress

import pytest

from hakube_lab.addressing import (
    LabError,
    bridge_name,
    find_overlaps,
    netns_name,
    parse_subnet,
    plan_lab,
    veth_name,
)


def test_plan_puts_control_planes_at_11_workers_at_21_vip_at_100() -> None:
    plan = plan_lab("demo", 3, 2, "10.123.0.0/24")
    assert [(h.name, str(h.address), h.role) for h in plan.hosts] == [
        ("cp1", "10.123.0.11", "control-plane"),
        ("cp2", "10.123.0.12", "control-plane"),
        ("cp3", "10.123.0.13", "control-plane"),
        ("w1", "10.123.0.21", "worker"),
        ("w2", "10.123.0.22", "worker"),
    ]
    assert str(plan.bridge_ip) == "10.123.0.1"
    assert str(plan.vip) == "10.123.0.100"
    assert plan.mirror_url == "http://10.123.0.1:8080/"


def test_many_workers_stay_below_the_vip() -> None:
    plan = plan_lab("big", 9, 79, "10.50.0.0/16")
    addrs = [h.address for h in plan.hosts]
    assert len(set(addrs)) == len(addrs)
    assert max(addrs) < plan.vip
    with pytest.raises(LabError, match="workers"):
        plan_lab("big", 3, 80, "10.50.0.0/16")
    with pytest.raises(LabError, match="control planes"):
        plan_lab("big", 0, 1, "10.50.0.0/16")


@pytest.mark.parametrize("name", ["Demo", "1lab", "toolongname", "a-b", ""])
def test_bad_lab_names_are_refused(name: str) -> None:
    with pytest.raises(LabError, match="lab name"):
        plan_lab(name, 1, 0, "10.123.0.0/24")


def test_interface_names_fit_in_15_characters() -> None:
    for host in ("cp9", "w79"):
        assert len(veth_name("abcdefgh", host)) <= 15
    assert len(bridge_name("abcdefgh")) <= 15
    # Prefixes must not let one lab's scan pick up another lab's links.
    assert not veth_name("demo2", "cp1").startswith("hkdemo-")
    assert netns_name("demo", "cp1") == "hk-demo-cp1"


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.123.0.0/25", "too small"),
        ("10.123.0.1/24", "not a valid network"),
        ("8.8.8.0/24", "private"),
        ("fd00::/64", "IPv4"),
        ("nonsense", "not a valid network"),
    ],
)
def test_bad_subnets_are_refused(cidr: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        parse_subnet(cidr)


ROUTES = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel"},
    {"type": "local", "dst": "192.0.2.2", "dev": "eth0", "table": "local"},
    {"dst": "10.123.0.0/24", "dev": "hkdemo-br"},
    {"type": "multicast", "dst": "224.0.0.0/4", "dev": "eth0"},
    {"dst": "10.0.0.0/8", "dev": "tun0"},
]


def test_overlap_reports_routes_but_not_default_or_own_bridge() -> None:
    net = ipaddress.IPv4Network("10.123.0.0/24")
    assert find_overlaps(net, ROUTES, {"hkdemo-br"}) == ["10.0.0.0/8 dev tun0"]
    free = ipaddress.IPv4Network("172.31.0.0/24")
    assert find_overlaps(free, ROUTES, set()) == []
    taken = ipaddress.IPv4Network("192.0.2.0/24")
    assert find_overlaps(taken, ROUTES, set()) == [
        "192.0.2.0/24 dev eth0",
        "192.0.2.2 dev eth0 table local",
    ]
