"""verify: read the live state of the HA pieces and report it (and fail if it is not HA).

`HAState` is what makes that state HA or not; `hakube status` (workflows/status.py) reads the
same pieces another way (one round trip per host) and judges them through the same `HAState`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from hakube.facts.haproxy import SHOW_STAT, Backend, parse_show_stat
from hakube.phases.base import Phase, PhaseError
from hakube.phases.context import Context
from hakube.phases.etcd import endpoint_health, member_list
from hakube.phases.kubeadm import ADMIN_CONF, KUBECTL
from hakube.phases.lb import vip_owners
from hakube.spec.model import Cluster, EndpointMode, Host

SETTLE_SECONDS = 20.0


@dataclass(kw_only=True)
class HAState:
    """The live front of the cluster and the problems found in it so far."""

    vip: str | None = None
    vip_owners: list[str] = field(default_factory=list)
    backends: list[Backend] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def judge_vip(self) -> None:
        """With a VIP, exactly one LB host holds it."""
        if self.vip is not None and len(self.vip_owners) != 1:
            self.problems.append(
                f"VIP {self.vip} is held by {len(self.vip_owners)} hosts "
                f"({', '.join(self.vip_owners)})"
            )

    def add_backends(self, lb: str, found: list[Backend]) -> None:
        """One LB host's HAProxy backends: every one UP."""
        self.backends += found
        down = [b.server for b in found if not b.status.startswith("UP")]
        if down:
            self.problems.append(f"{lb}: HAProxy backends not UP: {', '.join(down)}")

    def judge_nodes(self, cluster: Cluster, nodes: dict[str, str]) -> None:
        """Every control plane and worker is a Ready node."""
        want = [*cluster.control_planes, *cluster.workers]
        not_ready = sorted(h.name for h in want if nodes.get(h.name) != "Ready")
        if not_ready:
            self.problems.append(f"nodes not Ready: {', '.join(not_ready)}")


@dataclass(kw_only=True)
class VerifyReport(HAState):
    etcd_members: list[str] = field(default_factory=list)
    etcd_healthy: list[str] = field(default_factory=list)
    etcd_unhealthy: list[str] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)
    kubernetes: str = "not checked"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Verify(Phase):
    """VIP owner, every HAProxy backend, etcd members and health, nodes Ready"""

    name = "verify"

    def __init__(self) -> None:
        #: What the last run found, for the caller to print.
        self.result: VerifyReport | None = None

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.hosts[:1]

    async def run(self, ctx: Context, host: Host) -> None:
        if ctx.run.dry_run:
            return
        # Just after a change HAProxy needs `rise` checks and keepalived an election: give the
        # cluster a bounded moment to settle before calling it unhealthy.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        report = await build_report(ctx)
        while report.problems and loop.time() < deadline:
            await asyncio.sleep(1)
            report = await build_report(ctx)
        self.result = report
        if report.problems:
            raise PhaseError("the cluster is not healthy:\n  - " + "\n  - ".join(report.problems))


async def build_report(ctx: Context) -> VerifyReport:
    c = ctx.run.cluster
    r = VerifyReport()
    tasks: list[Any] = []
    if c.endpoint.mode is EndpointMode.VIP:
        r.vip = str(c.endpoint.vip)
        tasks.append(_vip(ctx, r))
    tasks += [_haproxy(ctx, h, r) for h in c.lb_hosts]
    if c.etcd_hosts:
        tasks.append(_etcd(ctx, r))
    tasks.append(_kubernetes_nodes(ctx, r))
    await asyncio.gather(*tasks)
    return r


async def _vip(ctx: Context, r: VerifyReport) -> None:
    r.vip_owners = await vip_owners(ctx)
    r.judge_vip()


async def _haproxy(ctx: Context, host: Host, r: VerifyReport) -> None:
    res = await ctx.facts.read(host, SHOW_STAT, check=False)
    found = parse_show_stat(res.stdout, host.name)
    if not found:
        r.problems.append(f"{host.name}: no answer from HAProxy's stats socket")
    r.add_backends(host.name, found)


async def _etcd(ctx: Context, r: VerifyReport) -> None:
    first = ctx.run.cluster.etcd_hosts[0]
    members, health = await asyncio.gather(member_list(ctx, first), endpoint_health(ctx, first))
    r.etcd_members = sorted(str(m.get("name", "?")) for m in members)
    r.etcd_healthy = sorted(str(e.get("endpoint")) for e in health if e.get("health") is True)
    r.etcd_unhealthy = sorted(str(e.get("endpoint")) for e in health if e.get("health") is not True)
    want = len(ctx.run.cluster.etcd_hosts)
    if len(r.etcd_members) != want or len(r.etcd_healthy) != want:
        r.problems.append(
            f"etcd: {len(r.etcd_members)} members, {len(r.etcd_healthy)} healthy (want {want})"
        )


async def _kubernetes_nodes(ctx: Context, r: VerifyReport) -> None:
    first = ctx.run.cluster.control_planes[0]
    if ADMIN_CONF not in ctx.facts[first.name].files and "kubeadm/init" not in ctx.run.selected:
        r.kubernetes = "not installed (kubeadm phases skipped)"
        return
    res = await ctx.facts.read(first, f"{KUBECTL} get nodes -o json", check=False)
    if not res.ok:
        r.kubernetes = "unreachable"
        r.problems.append(f"kubectl get nodes failed: {res.stderr_tail(3)}")
        return
    for item in json.loads(res.stdout).get("items", []):
        name = item["metadata"]["name"]
        conds = {x["type"]: x["status"] for x in item["status"].get("conditions", [])}
        r.nodes[name] = "Ready" if conds.get("Ready") == "True" else "NotReady"
    r.kubernetes = "ok"
    r.judge_nodes(ctx.run.cluster, r.nodes)
