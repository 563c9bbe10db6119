"""Load-balancer phases: HAProxy and keepalived, one LB host at a time, then the VIP answers."""

from __future__ import annotations

import asyncio
import shlex

from hakube.facts.host import HostFacts
from hakube.phases.base import Phase, PhaseError
from hakube.phases.context import Context
from hakube.render.base import RenderedFile
from hakube.render.haproxy import render_haproxy
from hakube.render.keepalived import (
    TRACK_DIR,
    TRACK_FILE,
    render_haproxy_tracking,
    render_keepalived,
)
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, EndpointMode, Host


class HAProxyPhase(Phase):
    name = "lb/haproxy"
    summary = "HAProxy installed, config validated on the host, reloaded if changed"
    serial = True  # rolling: the other LB hosts keep serving while one reloads

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.lb_hosts

    def files(
        self, cluster: Cluster, host: Host, secrets: Secrets, facts: HostFacts | None = None
    ) -> list[RenderedFile]:
        return [*render_haproxy(cluster, host, secrets), *render_haproxy_tracking(cluster, host)]

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.run.cluster
        await ctx.do.ensure_packages(host, ["haproxy", "socat"])
        written = await ctx.do.ensure_files(host, self.files_for(ctx, host))
        f = ctx.facts[host]
        running = f.unit("haproxy").running
        if written.daemon_reload:
            await ctx.do.daemon_reload(host)
        if running and "haproxy" in written.units:
            await ctx.do.sh(host, "reload haproxy", "systemctl reload-or-restart haproxy")
        elif not running or f.unit("haproxy").enabled != "enabled":
            await ctx.do.sh(host, "start haproxy", "systemctl enable -q --now haproxy")
        if c.endpoint.mode is EndpointMode.VIP and c.endpoint.vrrp.track_haproxy_state:
            # A reload does not run ExecStartPost: seed the tracked file from the real state,
            # or keepalived would stay in FAULT and nobody would take the VIP.
            await _sync_state_file(ctx, host)
        if not ctx.run.dry_run and (written.units or written.daemon_reload):
            await _wait_listening(ctx, host, c.endpoint.port)


async def _sync_state_file(ctx: Context, host: Host) -> None:
    res = await ctx.facts.read(
        host,
        f"systemctl is-active -q haproxy && want=0 || want=1; "
        f'cur=$(cat {TRACK_FILE} 2>/dev/null); echo "$want $cur"',
    )
    want, _, cur = res.stdout.strip().partition(" ")
    if want != cur:
        await ctx.do.sh(
            host,
            f"seed {TRACK_FILE} with {want}",
            f"mkdir -p {TRACK_DIR} && echo {want} > {TRACK_FILE}",
        )


async def _wait_listening(ctx: Context, host: Host, port: int, timeout: float = 15) -> None:
    cmd = (
        f"for i in $(seq {int(timeout * 5)}); do "
        f"ss -ltnH 'sport = :{port}' | grep -q . && exit 0; sleep 0.2; done; exit 1"
    )
    res = await ctx.facts.read(host, cmd, check=False)
    if not res.ok:
        raise PhaseError(f"HAProxy does not listen on port {port} after {timeout:.0f} s")


class KeepalivedPhase(Phase):
    name = "lb/keepalived"
    summary = "keepalived (VRRP VIP) installed, config validated on the host, reloaded if changed"
    serial = True

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.lb_hosts if cluster.endpoint.mode is EndpointMode.VIP else []

    def files(
        self, cluster: Cluster, host: Host, secrets: Secrets, facts: HostFacts | None = None
    ) -> list[RenderedFile]:
        return render_keepalived(cluster, host, secrets)

    async def run(self, ctx: Context, host: Host) -> None:
        await ctx.do.ensure_packages(host, ["keepalived"])
        written = await ctx.do.ensure_files(host, self.files_for(ctx, host))
        u = ctx.facts[host].unit("keepalived")
        if u.running and "keepalived" in written.units:
            # SIGHUP: keepalived re-reads its config without dropping the VIP it holds.
            await ctx.do.sh(host, "reload keepalived", "systemctl reload keepalived")
        elif not u.running or u.enabled != "enabled":
            await ctx.do.sh(host, "start keepalived", "systemctl enable -q --now keepalived")


class WaitVIP(Phase):
    name = "lb/vip"
    summary = "exactly one LB host holds the VIP and it answers on the frontend port"

    def targets(self, cluster: Cluster) -> list[Host]:
        if cluster.endpoint.mode is not EndpointMode.VIP:
            return []
        return cluster.lb_hosts[:1]

    async def run(self, ctx: Context, host: Host) -> None:
        if ctx.run.dry_run:
            return
        owners = await wait_vip_owner(ctx, timeout=20)
        if len(owners) != 1:
            raise PhaseError(
                f"the VIP {ctx.run.cluster.endpoint.vip} is held by {len(owners)} hosts "
                f"({', '.join(owners) or 'none'}): check keepalived with "
                "`journalctl -u keepalived` on the LB hosts"
            )
        port = ctx.run.cluster.endpoint.port
        vip = ctx.run.cluster.endpoint.vip
        # Connect from another LB host (or the owner): the VIP must answer on the L2 segment.
        probe = next((h for h in ctx.run.cluster.lb_hosts if h.name != owners[0]), host)
        cmd = (
            f"for i in $(seq 50); do timeout 1 bash -c "
            f"{shlex.quote(f'exec 3<>/dev/tcp/{vip}/{port}')} 2>/dev/null && exit 0; "
            f"sleep 0.2; done; exit 1"
        )
        res = await ctx.facts.read(probe, cmd, check=False)
        if not res.ok:
            raise PhaseError(f"{vip}:{port} does not accept connections from {probe.name}")


async def vip_owners(ctx: Context) -> list[str]:
    vip = str(ctx.run.cluster.endpoint.vip)

    async def holds(h: Host) -> bool:
        res = await ctx.facts.read(h, f"ip -o -4 addr show | grep -qF 'inet {vip}/'", check=False)
        return res.ok

    hosts = ctx.run.cluster.lb_hosts
    found = await asyncio.gather(*(holds(h) for h in hosts))
    return [h.name for h, ok in zip(hosts, found, strict=True) if ok]


async def wait_vip_owner(ctx: Context, timeout: float) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    owners = await vip_owners(ctx)
    while len(owners) != 1 and loop.time() < deadline:
        await asyncio.sleep(0.3)
        owners = await vip_owners(ctx)
    return owners
