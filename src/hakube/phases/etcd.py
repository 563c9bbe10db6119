"""External etcd: TLS PKI from the state dir, one member per etcd host, healthy before moving on."""

from __future__ import annotations

import asyncio
import json

from hakube.phases import etcd_join
from hakube.phases.base import Phase, PhaseError, RenderInput
from hakube.phases.context import Context, Timeout
from hakube.pki.etcd import etcd_members
from hakube.render.base import RenderedFile
from hakube.render.etcd import etcdctl, render_etcd
from hakube.spec.model import Cluster, Host
from hakube.transport.base import Transport

ETCD_PACKAGES = ("etcd-server", "etcd-client")


class EtcdPhase(Phase):
    """external etcd cluster: CA, peer/server/client certs, member config, health"""

    name = "etcd"
    needs = ("packages",)

    def __init__(self) -> None:
        # Restarting members of a live cluster one at a time keeps quorum.
        self._restart = asyncio.Lock()

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.etcd_hosts

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return render_etcd(on.cluster, on.host)

    def packages(self, cluster: Cluster, host: Host) -> list[str]:
        return list(ETCD_PACKAGES)

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
        files = [
            *pki.etcd_host_files(host.name),
            *self.files_for(ctx, host),
        ]
        u = ctx.facts[host].unit("etcd")
        if u.running:
            files = await etcd_join.keep_bootstrap(ctx, host, files)
        elif (via := etcd_join.live_peer(ctx, host)) is not None:
            async with self._restart:  # etcd takes one learner at a time
                await etcd_join.join(ctx, host, via, files)
            return
        stale = [f for f in files if not ctx.facts.file_is_current(host, f)]
        if u.running and stale:
            # A live member: its new certificates and config are written inside the roll, one
            # member at a time, and the next waits until this one and the whole cluster are
            # healthy again, so quorum is never at risk.

            async def restart(t: Transport) -> None:
                await t.run("systemctl restart etcd", timeout=Timeout.CHANGE)
                await wait_healthy(ctx, host, whole_cluster=True, member=host)

            async with self._restart:
                written = await ctx.do.ensure_files(host, files)
                if written.daemon_reload:
                    await ctx.do.daemon_reload(host)
                await ctx.do.change(host, "restart etcd (certificates or config changed)", restart)
            return
        await ctx.do.ensure_files(host, files)
        if not u.running or u.enabled != "enabled":
            # --no-block: a new member only reports ready once a quorum of its peers is up,
            # so the first members must not wait for each other.
            await ctx.do.sh(
                host, "start etcd", "systemctl enable -q etcd && systemctl start --no-block etcd"
            )

    async def finish(self, ctx: Context) -> None:
        if ctx.run.dry_run or not ctx.run.cluster.etcd_hosts:
            return
        first = ctx.run.cluster.etcd_hosts[0]
        health = await wait_healthy(ctx, first, whole_cluster=True)
        healthy = {str(e.get("endpoint")) for e in health if e.get("health") is True}
        found = await member_list(ctx, first)
        # Recorded only as members seen in the member list whose endpoint is healthy.
        names = [
            str(m.get("name"))
            for m in found
            if m.get("name") and set(map(str, _list(m.get("clientURLs")))) & healthy
        ]
        ctx.run.remember(lambda r: r.etcd_seen(names))


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


async def endpoint_health(
    ctx: Context, host: Host, *, etcdctl_prefix: str | None = None
) -> list[dict[str, object]]:
    """Every member's health as `host`'s member sees it; `etcdctl_prefix` reaches another
    etcd than hakube's external one (kubeadm's stacked members)."""
    prefix = etcdctl_prefix or etcdctl(ctx.run.cluster).rstrip()
    res = await ctx.facts.read(host, f"{prefix} endpoint health --cluster -w json", check=False)
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
    ctx: Context,
    host: Host,
    *,
    whole_cluster: bool,
    member: Host | None = None,
    timeout: float = 60,
    etcdctl_prefix: str | None = None,
    members: int | None = None,
) -> list[dict[str, object]]:
    """Wait until enough members are healthy (and `member`'s own endpoint among them).

    `members` is how many make the whole cluster (default: the external etcd hosts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    want = (members or len(ctx.run.cluster.etcd_hosts)) if whole_cluster else 1
    own = f"https://{member.address}:{ctx.run.cluster.etcd.client_port}" if member else None
    last: list[dict[str, object]] = []
    while loop.time() < deadline:
        last = await endpoint_health(ctx, host, etcdctl_prefix=etcdctl_prefix)
        healthy = {str(e.get("endpoint")) for e in last if e.get("health") is True}
        if len(healthy) >= want and (own is None or own in healthy):
            return last
        await asyncio.sleep(1)
    detail = "; ".join(f"{e.get('endpoint')}: {e.get('error', 'unhealthy')}" for e in last)
    raise PhaseError(
        f"etcd is not healthy after {timeout:.0f} s ({detail or 'no answer'}): "
        "see `journalctl -u etcd` on the etcd hosts"
        + (" (kubeadm's static pod: `crictl logs` of the etcd container)" if etcdctl_prefix else "")
    )
