"""LAB ONLY: the cloud-lb lab's balancer host, a model of a cloud L4 balancer (Alibaba SLB).

Not part of the product: on a real site the cloud provides the balancer and hakube only points
the cluster at it (`endpoint.mode: cloud-lb`). In the lab, host "slb" runs HAProxy in TCP mode
with plain TCP health checks at the settings of Alibaba SLB's defaults (every 2 s, 3 failures
to take a backend out, 3 successes to put it back, 5 s check and connect timeout, round robin,
no retry on another backend). Like SLB, it cannot hairpin: an explicit iptables rule in the slb
host's namespace drops every connection a backend (control-plane node) opens to the balancer's
listener, so a backend that connects to it gets no answer at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hakube.render.haproxy import HAPROXY_CFG, STATS_SOCKET
from hakube.spec.model import APISERVER_PORT
from hakube_lab.addressing import LabError
from hakube_lab.clusterfile import SLB_PORT
from hakube_lab.faults import delete_tagged, netns_iptables, tagged_rules

if TYPE_CHECKING:
    from hakube_lab.lab import Lab
    from hakube_lab.lifecycle import Log

#: Alibaba SLB's default health check for TCP listeners.
CHECK_INTERVAL_S = 2
CHECK_FALL = 3
CHECK_RISE = 3
CHECK_TIMEOUT_S = 5
#: How long the lab SLB may keep sending new connections to a dead backend.
DETECT_MAX_S = CHECK_INTERVAL_S * CHECK_FALL + CHECK_TIMEOUT_S
#: Marks the no-hairpin rules, so a second `lab up` replaces exactly those.
NO_HAIRPIN = "hakube-lab-slb-no-hairpin"


def slb_config(lab: Lab) -> str:
    slb = lab.plan.slb
    assert slb is not None
    servers = "".join(
        f"    server {h.name} {h.address}:{APISERVER_PORT}\n"
        for h in lab.plan.hosts
        if h.role == "control-plane"
    )
    return (
        "# LAB ONLY (hakube lab up --endpoint-mode cloud-lb): the lab's model of a cloud L4\n"
        "# balancer (Alibaba SLB, TCP listener with its default health check). Not written by\n"
        "# the product; on a real site the cloud runs the balancer.\n"
        "global\n"
        "    log /dev/log local0\n"
        "    user haproxy\n"
        "    group haproxy\n"
        "    daemon\n"
        "    maxconn 4000\n"
        f"    stats socket {STATS_SOCKET} mode 600 level admin\n\n"
        "defaults\n"
        "    mode tcp\n"
        "    log global\n"
        "    option dontlognull\n"
        f"    timeout connect {CHECK_TIMEOUT_S}s\n"
        "    timeout client 15m\n"
        "    timeout server 15m\n"
        f"    timeout check {CHECK_TIMEOUT_S}s\n\n"
        "frontend slb-api\n"
        f"    bind {slb.address}:{SLB_PORT}\n"
        "    default_backend control-planes\n\n"
        "backend control-planes\n"
        "    balance roundrobin\n"
        f"    default-server check inter {CHECK_INTERVAL_S}s fall {CHECK_FALL} rise {CHECK_RISE}\n"
        f"{servers}"
    )


def no_hairpin(lab: Lab) -> None:
    """Drop connections any backend opens to the balancer's listener (replacing earlier rules)."""
    slb = lab.plan.slb
    assert slb is not None
    delete_tagged(lab, "slb", NO_HAIRPIN, ("INPUT",))
    for h in lab.plan.hosts:
        if h.role == "control-plane":
            # Only connections the backend opens to the listener: the replies to the balancer's
            # own health checks and forwarded connections come from the same address.
            netns_iptables(lab, "slb", "-I", "INPUT", "-s", f"{h.address}/32",
                           "-d", f"{slb.address}/32", "-p", "tcp", "--dport", str(SLB_PORT),
                           "-m", "comment", "--comment", NO_HAIRPIN, "-j", "DROP")  # fmt: skip


def hairpin_blocked_sources(lab: Lab) -> list[str]:
    """The backend addresses whose packets to the balancer the slb host drops."""
    out = []
    for rule in tagged_rules(lab, "slb", NO_HAIRPIN, ("INPUT",)):
        parts = rule.split()
        if "-s" in parts and parts[-1] == "DROP":
            out.append(parts[parts.index("-s") + 1].removesuffix("/32"))
    return sorted(out)


def setup(lab: Lab, log: Log) -> None:
    """Install HAProxy on the slb host from the lab mirror, configure it, block hairpins."""
    log("slb: installing the lab's model of a cloud L4 balancer (HAProxy, TCP mode)")
    install = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy socat"
    )
    res = lab.run("slb", install, check=False, timeout=300)
    if res.returncode != 0:
        raise LabError(f"slb: installing haproxy from the lab mirror failed:\n{res.stderr[-2000:]}")
    # Checked before it replaces the live file, then put in place in one rename.
    write = (
        f"cat > {HAPROXY_CFG}.new && haproxy -c -q -f {HAPROXY_CFG}.new && "
        f"mv {HAPROXY_CFG}.new {HAPROXY_CFG} && systemctl enable -q haproxy && "
        "systemctl restart haproxy"
    )
    res = lab.run("slb", write, check=False, input_text=slb_config(lab))
    if res.returncode != 0:
        raise LabError(f"slb: the balancer's haproxy.cfg was refused:\n{res.stderr[-2000:]}")
    no_hairpin(lab)
