"""certs check|renew: every certificate's expiry, and renewal that keeps the cluster serving.

hakube's external etcd certificates are issued again from the etcd CA in the state directory
and rolled one member at a time, each restart waited out until every member is healthy, so
quorum never drops. kubeadm's certificates are renewed by `kubeadm certs renew all` on each
control-plane node in turn, then that node's control-plane static pods are restarted and its
apiserver must answer /readyz before the next node starts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hakube.facts.ops import OpsQuery, ops_script, parse_ops
from hakube.fileio import write_private
from hakube.phases.context import Context
from hakube.phases.etcd import wait_healthy
from hakube.phases.kubeadm import ADMIN_CONF
from hakube.pki.etcd import EtcdPKI, etcd_members
from hakube.render.base import RenderedFile
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.workflows.apiserver import (
    GONE_SECONDS,
    READY_SECONDS,
    move_aside,
    move_back,
    wait_gone,
    wait_readyz,
)
from hakube.workflows.apply import ApplyLocked, cluster_lock
from hakube.workflows.etcd_access import EtcdAccess, etcd_access
from hakube.workflows.ops import OpsError, OpsInputError, known_cluster, require_reachable, session
from hakube.workflows.status import CERT_WARN_DAYS, CertStatus, cert_status

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hakube.workflows.ops import Reach

#: The control-plane static pods that read kubeadm's certificates at start.
STATIC_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


@dataclass
class CertsReport:
    certs: list[CertStatus] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def expired(self) -> list[CertStatus]:
        return [c for c in self.certs if c.days_left is not None and c.days_left < 0]

    @property
    def expiring(self) -> list[CertStatus]:
        return [
            c for c in self.certs if c.days_left is not None and 0 <= c.days_left < CERT_WARN_DAYS
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "certs": [asdict(c) for c in self.certs],
            "expired": len(self.expired),
            "expiring_within_30_days": len(self.expiring),
            "unreachable": self.unreachable,
        }


async def check(
    cluster: Cluster, state: StateDir, *, now: dt.datetime | None = None, **reach: Unpack[Reach]
) -> CertsReport:
    """One round trip per host; certificates are parsed here, keys are never read."""
    when = now or dt.datetime.now(dt.UTC)
    report = CertsReport()
    script = ops_script(OpsQuery(certs=True))
    async with session(cluster, state, **reach) as (ctx, errors):
        report.unreachable = dict(errors)
        hosts = [h for h in cluster.hosts if h.name not in errors]
        results = await asyncio.gather(
            *(ctx.facts.read(h, script, check=False) for h in hosts), return_exceptions=True
        )
    for h, res in zip(hosts, results, strict=True):
        if isinstance(res, BaseException):
            report.unreachable[h.name] = ctx.report.redactor.redact(str(res))
            continue
        report.certs += [cert_status(h.name, c, when) for c in parse_ops(res.stdout).certs]
    return report


@dataclass
class RenewResult:
    renewed: list[str] = field(default_factory=list)  # "host: what"
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def renew_etcd(ctx: Context, errors: dict[str, str], result: RenewResult) -> None:
    c = ctx.run.cluster
    hosts = c.etcd_hosts
    require_reachable(errors, hosts)
    etcd_dir = ctx.run.state.pki_dir / "etcd"
    if not (etcd_dir / "ca.crt").exists():
        raise OpsInputError(
            f"no etcd CA in {etcd_dir}: renew runs from the machine (state dir) that applied "
            "the cluster"
        )
    # Quorum is only kept by a rolling restart if every member is healthy to begin with.
    await wait_healthy(ctx, hosts[0], whole_cluster=True, timeout=10)
    fresh = EtcdPKI.load(etcd_dir, etcd_members(c)).renewed()
    fresh.save(etcd_dir)
    for h in hosts:
        files = fresh.etcd_host_files(h.name)
        what = "write renewed etcd certificates (server, peer, client)"
        await ctx.do.change(h, what, _writer(files))
        await ctx.do.sh(h, "restart etcd on its renewed certificates", "systemctl restart etcd")
        await wait_healthy(ctx, h, whole_cluster=True, timeout=60)
        result.renewed.append(f"{h.name}: etcd server, peer and healthcheck-client")
    view = known_cluster(c, ctx.run.state)
    if view.kubernetes:
        # kube-apiserver's etcd client certificate; it is picked up when the apiservers are
        # restarted one at a time by the kubeadm renewal that follows.
        for h in c.control_planes:
            for f in fresh.control_plane_files():
                await ctx.do.change(h, f"write renewed {f.path}", _writer([f]))
            result.renewed.append(f"{h.name}: apiserver-etcd-client")


def _writer(files: list[RenderedFile]) -> Callable[[Transport], Awaitable[None]]:
    """A change that writes `files` as they are: renewed certificates replace the old ones."""

    async def put(t: Transport) -> None:
        for f in files:
            await t.put(f.path, f.content.encode(), mode=f.mode, owner=f.owner)

    return put


async def _restart_static_pods(
    ctx: Context, host: Host, pods: tuple[str, ...], etcd: EtcdAccess | None
) -> None:
    """kubelet stops a static pod whose manifest leaves its directory and starts it again when
    the manifest is back (kubeadm's documented way after `certs renew`). Each old process must
    be gone before the manifests return, or /readyz could be answered by the apiserver still
    serving the old certificate; `etcd` (stacked) is waited healthy before the apiserver."""
    aside = "/etc/kubernetes/hakube-manifests-aside"
    names = [f"{p}.yaml" for p in pods]
    # The kernel keeps 15 characters of a process name (kube-controller-manager's is cut).
    gone = " && ".join(f"( {wait_gone(p[:15])} )" for p in pods)
    await ctx.do.sh(
        host,
        f"restart the control-plane static pods ({', '.join(pods)}), each gone before it returns",
        # The manifests go back even when a process outlives the wait: the exit status says so.
        f"{move_aside(names, aside)}; ok=0; {{ {gone}; }} || ok=$?; {move_back(names, aside)}; "
        "exit $ok",
        timeout=GONE_SECONDS * len(pods) + 30,
    )
    if etcd is not None:
        await wait_healthy(ctx, host, whole_cluster=True, timeout=READY_SECONDS,
                           etcdctl_prefix=etcd.ctl_prefix, members=len(etcd.hosts))  # fmt: skip
    await wait_readyz(ctx, host)


async def renew_kubeadm(ctx: Context, errors: dict[str, str], result: RenewResult) -> None:
    c = ctx.run.cluster
    require_reachable(errors, c.control_planes)
    view = known_cluster(c, ctx.run.state)
    # Stacked etcd's certificates are kubeadm's too; one member restarts at a time.
    pods = STATIC_PODS if view.external_etcd else (*STATIC_PODS, "etcd")
    stacked = None if view.external_etcd else etcd_access(c, kubernetes=True)
    for h in c.control_planes:
        await ctx.do.sh(h, "kubeadm certs renew all", "kubeadm certs renew all")
        await _restart_static_pods(ctx, h, pods, stacked)
        result.renewed.append(f"{h.name}: kubeadm certificates and kubeconfigs")
    if not ctx.run.dry_run:
        # admin.conf carries a client certificate that was just renewed.
        data = await ctx.facts.get(view.init_host, ADMIN_CONF)
        write_private(ctx.run.state.path / "admin.conf", data)


async def renew(
    cluster: Cluster,
    state: StateDir,
    *,
    etcd: bool = True,
    kubeadm: bool = True,
    **reach: Unpack[Reach],
) -> RenewResult:
    view = known_cluster(cluster, state)
    result = RenewResult()
    try:
        with cluster_lock(state):
            async with session(cluster, state, phase="certs/renew", **reach) as (ctx, errors):
                if etcd and view.external_etcd:
                    await renew_etcd(ctx, errors, result)
                elif etcd:
                    result.skipped.append(
                        "etcd: stacked (kubeadm's certificates, renewed with them)"
                    )
                if kubeadm and view.kubernetes:
                    await renew_kubeadm(ctx, errors, result)
                elif kubeadm:
                    result.skipped.append(
                        "kubeadm: Kubernetes is not installed (no admin.conf in the state dir)"
                    )
    except ApplyLocked as e:
        raise OpsError(str(e)) from None
    return result
