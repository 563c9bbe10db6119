"""External etcd: TLS PKI from the state dir, one member per etcd host, healthy before moving on."""

from __future__ import annotations

import asyncio
import json

from hakube.facts.host import HostFacts
from hakube.phases.base import Phase, PhaseError
from hakube.phases.context import Context
from hakube.pki.etcd import etcd_members
from hakube.pki.layout import as_rendered
from hakube.render.base import RenderedFile
from hakube.render.etcd import etcdctl, render_etcd
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, Host
from hakube.transport.base import Transport

ETCD_PACKAGES = ("etcd-server", "etcd-client")


class EtcdPhase(Phase):
    name = "etcd"
    summary = "external etcd cluster: CA, peer/server/client certs, member config, health"

    def __init__(self) -> None:
        # Restarting members of a live cluster one at a time keeps quorum.
        self._restart = asyncio.Lock()

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.etcd_hosts

    def files(
        self, cluster: Cluster, host: Host, secrets: Secrets, facts: HostFacts | None = None
    ) -> list[RenderedFile]:
        return render_etcd(cluster, host)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        root = "/etc/etcd/pki"
        out = [(f"{root}/ca.crt", 0o644)]
        for stem in ("server", "peer", "healthcheck-client"):
            out += [(f"{root}/{stem}.crt", 0o644), (f"{root}/{stem}.key", 0o600)]
        return out

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.run.cluster
        await ctx.do.ensure_packages(host, list(ETCD_PACKAGES))
        pki = ctx.run.state.etcd_pki(etcd_members(c))
        # etcd runs as its own user and must read its keys.
        certs = as_rendered(pki.etcd_host_files(host.name), owner="etcd")
        stale_certs = any(not ctx.facts.file_is_current(host, f) for f in certs)
        await ctx.do.ensure_files(host, certs)
        written = await ctx.do.ensure_files(host, self.files_for(ctx, host))
        u = ctx.facts[host].unit("etcd")
        if u.running and (stale_certs or written):

            async def restart(t: Transport) -> None:
                await t.run("systemctl restart etcd")
                await wait_healthy(ctx, host, whole_cluster=False)

            async with self._restart:
                await ctx.do.change(host, "restart etcd (config changed)", restart)
        elif not u.running or u.enabled != "enabled":
            # --no-block: a new member only reports ready once a quorum of its peers is up,
            # so the first members must not wait for each other.
            await ctx.do.sh(
                host, "start etcd", "systemctl enable -q etcd && systemctl start --no-block etcd"
            )

    async def finish(self, ctx: Context) -> None:
        if ctx.run.dry_run or not ctx.run.cluster.etcd_hosts:
            return
        await wait_healthy(ctx, ctx.run.cluster.etcd_hosts[0], whole_cluster=True)


async def endpoint_health(ctx: Context, host: Host) -> list[dict[str, object]]:
    res = await ctx.facts.read(
        host, etcdctl(ctx.run.cluster, "endpoint", "health", "--cluster", "-w", "json"), check=False
    )
    try:
        data = json.loads(res.stdout or "[]")
    except json.JSONDecodeError:
        return []
    return data if isinstance(data, list) else []


async def member_list(ctx: Context, host: Host) -> list[dict[str, object]]:
    res = await ctx.facts.read(
        host, etcdctl(ctx.run.cluster, "member", "list", "-w", "json"), check=False
    )
    if not res.ok:
        return []
    data = json.loads(res.stdout)
    out: list[dict[str, object]] = data.get("members", [])
    return out


async def wait_healthy(
    ctx: Context, host: Host, *, whole_cluster: bool, timeout: float = 60
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    want = len(ctx.run.cluster.etcd_hosts) if whole_cluster else 1
    last: list[dict[str, object]] = []
    while loop.time() < deadline:
        last = await endpoint_health(ctx, host)
        healthy = [e for e in last if e.get("health") is True]
        if len(healthy) >= want:
            return
        await asyncio.sleep(1)
    detail = "; ".join(f"{e.get('endpoint')}: {e.get('error', 'unhealthy')}" for e in last)
    raise PhaseError(
        f"etcd is not healthy after {timeout:.0f} s ({detail or 'no answer'}): "
        "see `journalctl -u etcd` on the etcd hosts"
    )
