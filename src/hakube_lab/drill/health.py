"""Is the HA setup whole? Units active, HAProxy backends UP, exactly one reachable VIP owner
(vip mode), the lab balancer's backends UP (cloud-lb).

Read through the hosts' namespaces (nsenter, `ip -n`), so an isolated host is still seen.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hakube.facts.haproxy import parse_show_stat, show_stat
from hakube.render.haproxy import STATS_SOCKET
from hakube.render.keepalived import priorities
from hakube.spec.model import Cluster, EndpointMode
from hakube_lab.addressing import LabError
from hakube_lab.lab import Lab
from hakube_lab.standin import UNIT as STANDIN_UNIT

#: HAProxy's tcplog lines (journald, tag haproxy) whose termination state starts with D: the
#: session was closed by HAProxy because its server was marked DOWN (`on-marked-down
#: shutdown-sessions`), also while it was still connecting there and would have been retried.
KILLED_AT_DOWN_RE = " [0-9]+ D. [0-9]+/[0-9]+/"
KILLED_AT_DOWN = (
    "journalctl -q -o cat -t haproxy --since @{since} --until @{until} "
    f"| grep -cE '{KILLED_AT_DOWN_RE}'; true"
)
#: HAProxy sessions that did not end normally (tcplog termination state other than "--"),
#: server state changes, keepalived state changes and why (health script results, effective
#: priority) since `{since}` (epoch seconds).
LB_LOG = (
    "journalctl -q -o short-precise --since @{since} -t haproxy -t Keepalived_vrrp "
    "| grep -vE ' [0-9]+ -- [0-9]+/' "
    "| grep -E ' [0-9]+ [^ ]{{2}} [0-9]+/|is (UP|DOWN)|Entering|VRRP_Script|effective priority' "
    "| tail -n 40; true"
)


@dataclass
class Health:
    ok: bool
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    backends_down: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class HealthCheck:
    def __init__(self, cluster: Cluster, lab: Lab, stats_socket: str = STATS_SOCKET) -> None:
        self.cluster = cluster
        self.lab = lab
        self.show_stat = show_stat(stats_socket)
        self.lb_names = [h.name for h in cluster.lb_hosts]
        self.vip_mode = cluster.endpoint.mode is EndpointMode.VIP
        #: Hosts whose HAProxy backends are read: the LB hosts, and a cloud-lb lab's balancer.
        self.balancers = list(self.lb_names)
        if lab.plan.slb is not None and cluster.endpoint.mode is EndpointMode.CLOUD_LB:
            self.balancers.append(lab.plan.slb.name)

    def vip_holders(self) -> list[str]:
        """LB hosts holding the VIP with their cable in."""
        vip = str(self.cluster.endpoint.vip)
        out = []
        for name in self.lb_names:
            h = self.lab.host(name)
            cmd = ["ip", "-n", h.netns, "-o", "-4", "addr", "show"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=5)
            up = Path(f"/sys/class/net/{h.veth}/operstate")
            if f"inet {vip}/" in res.stdout and up.exists() and up.read_text().strip() == "up":
                out.append(name)
        return out

    def _on_balancers(self, cmd: str) -> list[tuple[str, str]]:
        """(host, output) of a shell command on every balancer that answers."""
        out = []
        for host in self.balancers:
            try:
                res = self.lab.nsenter(host, ["sh", "-c", cmd], check=False, timeout=10)
            except (LabError, subprocess.SubprocessError):
                continue  # a host that is down has no log to read: its HAProxy died with it
            out.append((host, res.stdout))
        return out

    def killed_at_down(self, since: float, until: float) -> int:
        """Sessions the balancers closed because their server went DOWN, between two wall-clock
        times (whole seconds, widened outwards), summed over the balancers that answer."""
        cmd = KILLED_AT_DOWN.format(since=int(since), until=int(until) + 1)
        return sum(int(text.strip() or 0) for _host, text in self._on_balancers(cmd))

    def lb_log(self, since: float) -> list[str]:
        """What the balancers logged since a wall-clock time that explains a failed run:
        sessions that did not end normally, server and VRRP state changes (`LB_LOG`)."""
        outputs = self._on_balancers(LB_LOG.format(since=int(since)))
        return [f"{host}: {line}" for host, text in outputs for line in text.splitlines()]

    def _units_of(self, host: str) -> list[str]:
        c = self.cluster
        units = []
        if host in self.balancers:
            units.append("haproxy")
        if host in self.lb_names and self.vip_mode:
            units.append("keepalived")
        if host in {h.name for h in c.etcd_hosts}:
            units.append("etcd")
        if host in {h.name for h in c.control_planes}:
            units.append(STANDIN_UNIT)
        return units

    def check(
        self, skip: Sequence[str] = (), backends: bool = True, *, settled: bool = False
    ) -> Health:
        """Units active on every host (but `skip`), backends UP, exactly one VIP owner.

        `settled`: also no backend on its way down ("UP 1/2": a check failed and the next
        may take it out), i.e. HAProxy's checks have caught up with a fault that is over."""
        h = Health(ok=True)
        hosts = [x.name for x in self.cluster.hosts] + [
            b for b in self.balancers if b not in self.lb_names
        ]
        for host in [x for x in hosts if x not in skip]:
            units = self._units_of(host)
            cmd = f"systemctl is-active {' '.join(units)}; echo ---; " + (
                self.show_stat if backends and host in self.balancers else "true"
            )
            try:
                res = self.lab.nsenter(host, ["sh", "-c", cmd], check=False, timeout=10)
                states, _, stats = res.stdout.partition("---")
            except Exception as e:
                h.problems.append(f"{host}: unreachable ({e})")
                continue
            h.units[host] = dict(zip(units, states.split(), strict=False))
            for u in units:
                if h.units[host].get(u) != "active":
                    h.problems.append(f"{host}: {u} {h.units[host].get(u, 'unknown')}")
            if backends and host in self.balancers:
                found = parse_show_stat(stats.strip(), host)
                down = [f"{host}→{b.server}" for b in found if not b.status.startswith("UP")]
                h.backends_down += down
                if not found:
                    h.problems.append(f"{host}: no HAProxy stats")
                elif down:
                    h.problems.append(f"{host}: backends not UP: {', '.join(down)}")
                # "UP 1/2": UP for clients now, but a check failed and the next may take it out.
                going = [b for b in found if settled and b.status.startswith("UP ")]
                changing = [f"{host}→{b.server} ({b.status})" for b in going]
                if changing:
                    h.problems.append(f"{host}: backends failing checks: {', '.join(changing)}")
        if not skip and self.vip_mode:
            owners = self.vip_holders()
            if len(owners) != 1:
                h.problems.append(f"VIP held by {len(owners)} reachable hosts: {owners}")
            elif self.cluster.endpoint.vrrp.preempt and not h.problems:
                # With preemption (and its delay) the highest-priority host takes the VIP back a
                # few seconds after it is whole again: not settled until it did.
                prios = priorities(self.cluster)
                home = max(prios, key=lambda n: prios[n])
                if owners[0] != home:
                    h.problems.append(f"VIP on {owners[0]}, not yet back on {home}")
        h.ok = not h.problems
        return h

    def wait_whole(self, timeout: float = 60.0) -> Health:
        """Check until the setup is whole and settled or `timeout` passes; the last result."""
        deadline = time.monotonic() + timeout
        h = self.check(settled=True)
        while not h.ok and time.monotonic() < deadline:
            time.sleep(0.5)
            h = self.check(settled=True)
        return h
