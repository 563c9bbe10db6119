"""Real hosts: SSH, isolation of the lab network, VRRP multicast, persistence over stop/start."""

from __future__ import annotations

import time

import pytest

from hakube_lab import Lab

pytestmark = pytest.mark.lab

PY_CONNECT = (
    "python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(2)\n"
    'try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print("ok")\n'
    "except OSError as e:\n    print(e.errno, e.strerror)' "
)


def test_ssh_answers_on_every_host_with_pinned_keys(lab3: Lab) -> None:
    for h in lab3.hosts:
        out = lab3.run(h.name, "hostname; systemctl is-system-running || true").stdout.split()
        assert out[0] == h.name
        assert out[1] in ("running", "degraded")
    kh = lab3.known_hosts.read_text()
    assert all(h.address in kh for h in lab3.hosts)
    assert oct(lab3.key_file.stat().st_mode & 0o777) == "0o600"


def test_hosts_reach_each_other_but_nothing_outside_the_bridge(lab3: Lab) -> None:
    cp2 = lab3.host("cp2").address
    assert lab3.run("cp1", PY_CONNECT + f"{cp2} 22").stdout.strip() == "ok"
    assert "default" not in lab3.run("cp1", "ip route show table all").stdout
    # No route, so the kernel refuses at once and no packet leaves the host.
    res = lab3.run("cp1", "ip route get 192.0.2.1", check=False)
    assert res.returncode != 0
    assert "Network is unreachable" in res.stderr
    # 101 = ENETUNREACH: refused locally, nothing is sent.
    assert lab3.run("w1", PY_CONNECT + "198.51.100.7 80").stdout.startswith("101 ")
    assert lab3.run("w1", "cat /etc/apt/sources.list").stdout.strip() == (
        f"deb [trusted=yes] {lab3.plan.mirror_url} ./"
    )


KEEPALIVED_CONF = """\
vrrp_instance lab {{
    state BACKUP
    interface host0
    virtual_router_id 77
    priority {prio}
    vrrp_version 3
    advert_int 0.1
    virtual_ipaddress {{
        {vip}/24 dev host0
    }}
}}
"""


def _vip_holders(lab: Lab, names: list[str]) -> list[str]:
    vip = str(lab.plan.vip)
    return [n for n in names if f" {vip}/" in lab.run(n, "ip -4 -o addr show dev host0").stdout]


def _wait_holders(lab: Lab, names: list[str], want: list[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    holders: list[str] = []
    while time.monotonic() < deadline:
        holders = _vip_holders(lab, names)
        if holders == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"VIP on {holders}, wanted {want}")


def test_vrrp_multicast_passes_and_the_vip_moves(lab3: Lab) -> None:
    pair = ["cp1", "cp2"]
    for name, prio in zip(pair, (150, 100), strict=True):
        lab3.run(
            name,
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q keepalived",
            timeout=300,
        )
        lab3.run(
            name,
            "cat > /etc/keepalived/keepalived.conf && systemctl restart keepalived",
            input_text=KEEPALIVED_CONF.format(prio=prio, vip=lab3.plan.vip),
        )
    # Exactly one holder proves the adverts cross the bridge: without them both would be MASTER.
    _wait_holders(lab3, pair, ["cp1"])
    time.sleep(1)
    assert _vip_holders(lab3, pair) == ["cp1"]
    lab3.stop("cp1")
    _wait_holders(lab3, ["cp2"], ["cp2"], timeout=5)
    lab3.start("cp1")
    # keepalived came back with the host (its files are in the overlay) and preempts.
    _wait_holders(lab3, pair, ["cp1"])


def test_files_survive_stop_and_start(lab3: Lab) -> None:
    lab3.run("w1", "echo kept > /root/persist.txt && sync")
    lab3.stop("w1")
    st = {h["name"]: h for h in lab3.status()["hosts"]}["w1"]
    assert (st["running"], st["link_up"]) == (False, False)
    assert lab3.run("w1", "true", check=False, timeout=30).returncode != 0
    lab3.start("w1")
    assert lab3.run("w1", "cat /root/persist.txt").stdout.strip() == "kept"


def test_isolate_cuts_and_heal_restores_the_link(lab3: Lab) -> None:
    w1 = lab3.host("w1").address
    lab3.isolate("w1")
    try:
        out = lab3.run("cp1", PY_CONNECT + f"{w1} 22").stdout
        assert out.strip() != "ok"
        # Still running: reachable from inside without the network.
        assert lab3.nsenter("w1", ["hostname"]).stdout.strip() == "w1"
    finally:
        lab3.heal("w1")
    lab3.wait_ssh(["w1"], timeout=30)
    assert lab3.run("cp1", PY_CONNECT + f"{w1} 22").stdout.strip() == "ok"
