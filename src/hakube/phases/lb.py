"""Load-balancer phases: HAProxy and keepalived, one LB host at a time, then the VIP answers."""

from __future__ import annotations

import asyncio
import re
import shlex

from hakube.facts.haproxy import SHOW_STAT, parse_show_stat
from hakube.facts.host import FileState, Unit
from hakube.phases.base import Phase, PhaseError, RenderInput
from hakube.phases.context import Context, Written, sha256
from hakube.render.base import RenderedFile
from hakube.render.haproxy import render_haproxy
from hakube.render.keepalived import (
    INIT_MARKER,
    KEEPALIVED_CONF,
    SCHED_DROPIN,
    TRACK_DIR,
    TRACK_FILE,
    render_haproxy_tracking,
    render_keepalived,
    scheduling_command,
)
from hakube.spec.model import Cluster, EndpointMode, Host


async def mark_initialised(ctx: Context, host: Host) -> None:
    """Once the init is recorded, end the health check's "every backend DOWN" exception."""
    rec = ctx.run.record
    vip_mode = ctx.run.cluster.endpoint.mode is EndpointMode.VIP
    if rec is None or rec.init_host is None or not vip_mode:
        return
    content = f"{rec.cluster_id} initialised on {rec.init_host}\n"
    want = FileState(sha256(content), 0o644, "root:root")
    if host in ctx.facts and ctx.facts[host].files.get(INIT_MARKER) == want:
        return
    await ctx.do.put(
        host,
        f"write {INIT_MARKER} (health check: all API servers DOWN now fails)",
        INIT_MARKER,
        content.encode(),
        0o644,
    )
    if host in ctx.facts:
        ctx.facts[host].files[INIT_MARKER] = want


def vip_holder(ctx: Context) -> str | None:
    """The LB host holding the VIP when the facts were read (None before facts or without)."""
    vip = ctx.run.cluster.endpoint.vip
    for h in ctx.run.cluster.lb_hosts:
        if vip is not None and h in ctx.facts and ctx.facts[h].has_address(str(vip)):
            return h.name
    return None


def owner_last(ctx: Context, hosts: list[Host]) -> list[Host]:
    """The VIP owner is updated last, so the VIP moves at most once during a roll."""
    owner = vip_holder(ctx)
    return sorted(hosts, key=lambda h: h.name == owner)


async def front_problems(ctx: Context) -> list[str]:
    """What keeps the front from serving now: not exactly one VIP holder; once the cluster is
    initialised (recorded), any API server backend not UP on any LB host."""
    c = ctx.run.cluster
    problems: list[str] = []
    if c.endpoint.mode is EndpointMode.VIP:
        owners = await vip_owners(ctx)
        if len(owners) != 1:
            problems.append(f"the VIP is held by {len(owners)} hosts ({', '.join(owners)})")
    rec = ctx.run.record
    if rec is not None and rec.init_host is not None:
        # A control plane that joins later in this run has no apiserver yet: DOWN is right.
        joined = {rec.init_host, *(n for n, role in rec.nodes.items() if role == "control-plane")}
        for lb in c.lb_hosts:
            res = await ctx.facts.read(lb, SHOW_STAT, check=False)
            backends = parse_show_stat(res.stdout, lb.name)
            down = [f"{b.server} {b.status}" for b in backends
                    if b.server in joined and not b.status.startswith("UP")]  # fmt: skip
            if not backends or down:
                problems.append(f"{lb.name}: backends {', '.join(down) or 'unreadable'}")
    return problems


#: How long a roll waits for the front to serve again before it stops.
SETTLE_SECONDS = 60.0


async def settle(ctx: Context, after: Host) -> None:
    """Between two LB hosts of a roll: wait until the front serves again, or stop the roll."""
    timeout = SETTLE_SECONDS
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    problems = await front_problems(ctx)
    while problems and loop.time() < deadline:
        await asyncio.sleep(1)
        problems = await front_problems(ctx)
    if problems:
        raise PhaseError(
            f"after updating {after.name} the front did not settle within {timeout:.0f} s: "
            f"{'; '.join(problems)}. The roll stops here, so the LB hosts not yet updated keep "
            "their working config"
        )


def front_is_live(ctx: Context, unit: str) -> bool:
    """Some LB host already runs `unit`: changes roll one host at a time so the others serve.
    On a first install nothing serves yet, and every LB host is set up at once."""
    return any(h in ctx.facts and ctx.facts[h].unit(unit).running for h in ctx.run.cluster.lb_hosts)


class _Rolling(Phase):
    """An LB phase: all hosts at once on a first install; on a live front the LB phases roll
    together one host at a time, the VIP owner last, and the front serves again (one VIP
    holder, every backend UP) before the next host."""

    serial = True
    roll = "lb"
    unit: str

    def rolling(self, ctx: Context) -> bool:
        return front_is_live(ctx, self.unit)

    def hosts(self, ctx: Context) -> list[Host]:
        return owner_last(ctx, self.targets(ctx.run.cluster))

    async def between_hosts(self, ctx: Context, host: Host) -> None:
        await settle(ctx, host)


class HAProxyPhase(_Rolling):
    """HAProxy installed, config validated on the host, reloaded if changed; on a live front one
    host at a time together with keepalived, VIP owner last, front serving again before the next"""

    name = "lb/haproxy"
    needs = ("packages",)
    unit = "haproxy"

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.lb_hosts

    def packages(self, cluster: Cluster, host: Host) -> list[str]:
        return ["haproxy", "socat"]

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return [
            *render_haproxy(on.cluster, on.host, on.secrets),
            *render_haproxy_tracking(on.cluster, on.host),
        ]

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.run.cluster
        await ctx.do.ensure_packages(host, self.packages(c, host))
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


class KeepalivedPhase(_Rolling):
    """keepalived (VRRP VIP) installed, config validated on the host, reloaded if changed; on a
    live front one host at a time together with HAProxy, VIP owner last; VRRP-incompatible changes
    as a planned stop of every LB host, then start"""

    name = "lb/keepalived"
    needs = ("packages", "lb/haproxy")
    unit = "keepalived"

    def __init__(self) -> None:
        self._planned = asyncio.Lock()
        self._checked = False

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.lb_hosts if cluster.endpoint.mode is EndpointMode.VIP else []

    def packages(self, cluster: Cluster, host: Host) -> list[str]:
        return ["keepalived"]

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [(INIT_MARKER, 0o644)]

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return render_keepalived(on.cluster, on.host, on.secrets)

    async def run(self, ctx: Context, host: Host) -> None:
        await ctx.do.ensure_packages(host, self.packages(ctx.run.cluster, host))
        async with self._planned:
            if not self._checked:
                self._checked = True
                await self._stop_all_if_incompatible(ctx)
        await mark_initialised(ctx, host)
        written = await ctx.do.ensure_files(host, self.files_for(ctx, host))
        await keepalived_follows(ctx, host, written)

    async def _stop_all_if_incompatible(self, ctx: Context) -> None:
        """Hosts with the old and the new VRRP settings cannot share a VRRP group: each would
        see no peer and become MASTER (two VIP holders mid-roll). Such a change stops keepalived
        on every LB host first; the roll then starts them one at a time."""
        reasons: set[str] = set()
        lbs = ctx.run.cluster.lb_hosts
        running = [h for h in lbs if h in ctx.facts and ctx.facts[h].unit(self.unit).running]
        for h in running:
            new = next(f for f in self.files_for(ctx, h) if f.path == KEEPALIVED_CONF)
            if ctx.facts.file_is_current(h, new):
                continue
            old = await ctx.facts.read(h, f"cat {KEEPALIVED_CONF}", check=False)
            reasons.update(vrrp_incompatible(old.stdout, new.content))
        if not reasons:
            return
        why = "; ".join(sorted(reasons))
        for h in running:
            await ctx.do.sh(
                h,
                f"stop keepalived (planned: {why} cannot run beside the old settings; every "
                "LB host stops, then each starts with the new config)",
                "systemctl stop keepalived",
            )
            f = ctx.facts[h]
            f.units[self.unit] = Unit(self.unit, True, "inactive", f.unit(self.unit).enabled)


async def keepalived_follows(ctx: Context, host: Host, written: Written, note: str = "") -> None:
    """What written keepalived files need next: systemd re-reads a changed drop-in; a running
    keepalived re-reads its config (SIGHUP keeps the VIP it holds) and its processes get the
    drop-in's scheduling now (a restart would give the VIP away); a stopped one is started."""
    u = ctx.facts[host].unit("keepalived")
    if written.daemon_reload:
        await ctx.do.daemon_reload(host)
    if u.running and "keepalived" in written.units:
        await ctx.do.sh(host, f"reload keepalived{note}", "systemctl reload keepalived")
    if u.running and SCHED_DROPIN in written.paths:
        rt = ctx.run.cluster.endpoint.vrrp.rt_priority
        how = f"real-time (SCHED_RR {rt})" if rt else "normal"
        await ctx.do.sh(host, f"{how} scheduling for the running keepalived, as its drop-in",
                        scheduling_command(rt))  # fmt: skip
    if not u.running or u.enabled != "enabled":
        await ctx.do.sh(host, "start keepalived", "systemctl enable -q --now keepalived")


def _vrrp_settings(conf: str) -> dict[str, str]:
    out = {"unicast": "unicast" if re.search(r"^\s*unicast_peer\b", conf, re.M) else "multicast"}
    for key in ("vrrp_version", "virtual_router_id"):
        m = re.search(rf"^\s*{key}\s+(\S+)", conf, re.M)
        out[key] = m.group(1) if m else "default"
    return out


def vrrp_incompatible(old: str, new: str) -> list[str]:
    """The VRRP settings whose change splits one VRRP group in two (old → new)."""
    a, b = _vrrp_settings(old), _vrrp_settings(new)
    names = {"vrrp_version": "VRRP version", "virtual_router_id": "router id", "unicast": "mode"}
    return [f"{names[k]} {a[k]} → {b[k]}" for k in names if a[k] != b[k]]


class WaitVIP(Phase):
    """exactly one LB host holds the VIP and it answers on the frontend port"""

    name = "lb/vip"
    needs = ("lb/keepalived",)

    def targets(self, cluster: Cluster) -> list[Host]:
        if cluster.endpoint.mode is not EndpointMode.VIP:
            return []
        return cluster.lb_hosts[:1]

    async def run(self, ctx: Context, host: Host) -> None:
        if ctx.run.dry_run:
            return
        owner = await sole_vip_owner(ctx, timeout=20)
        port = ctx.run.cluster.endpoint.port
        vip = ctx.run.cluster.endpoint.vip
        # Connect from another LB host (or the owner): the VIP must answer on the L2 segment.
        probe = next((h for h in ctx.run.cluster.lb_hosts if h.name != owner), host)
        cmd = (
            f"for i in $(seq 50); do timeout 1 bash -c "
            f"{shlex.quote(f'exec 3<>/dev/tcp/{vip}/{port}')} 2>/dev/null && exit 0; "
            f"sleep 0.2; done; exit 1"
        )
        # Up to 50 tries of at most 1.2 s: the command's own limit must be longer than that.
        res = await ctx.facts.read(probe, cmd, check=False, timeout=90)
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


async def sole_vip_owner(ctx: Context, timeout: float, after: str = "") -> str:
    """The one LB host holding the VIP within `timeout` s; else a PhaseError naming the holders
    (`after`: what just happened, to start the message with)."""
    owners = await wait_vip_owner(ctx, timeout)
    if len(owners) != 1:
        raise PhaseError(
            f"{after}the VIP {ctx.run.cluster.endpoint.vip} is held by {len(owners)} hosts "
            f"({', '.join(owners) or 'none'}): check keepalived with `journalctl -u keepalived` "
            "on the LB hosts, then re-run"
        )
    return owners[0]
