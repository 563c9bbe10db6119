"""reset: take down what apply and kubeadm installed, host by host; archive the state dir.

Per host, in order: `kubeadm reset -f` (where kubeadm is installed) and the tutorial's cleanup
(CNI config and links, iptables/IPVS rules, root's kubeconfig); hakube's units stopped and
disabled; package holds released and the packages hakube installs for its roles purged; every
file apply writes removed, with the directories hakube owns and etcd's data; the hakube block
out of /etc/hosts and swap lines hakube commented out of /etc/fstab put back.

`--host` resets one host: it first leaves the cluster as `hakube node remove` takes it out (the
survivors' `apply --prune`, `leave_cluster`), then is reset as above; the state dir stays.

Not undone (the host's earlier state is not recorded): the hostname apply may have set, the
runtime value of sysctls (their hakube file is removed), a firewalld apply disabled, and tools
that are usually there anyway (curl, ca-certificates, socat, conntrack).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hakube.facts.host import HostFacts
from hakube.membership import membership, without
from hakube.phases.base import RenderInput
from hakube.phases.context import Context
from hakube.phases.etcd_endpoints import EtcdEndpoints
from hakube.record import load_record
from hakube.render.host import SWAP_MARK, remove_block, restore_swap
from hakube.render.keepalived import TRACK_DIR
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.workflows.apply import ApplyLocked, apply, apply_phases, cluster_lock
from hakube.workflows.ops import Live, OpsError, OpsInputError, live_session, require_reachable

#: Units apply enables (the runtime and kubelet included).
UNITS = ("keepalived", "haproxy", "etcd", "kubelet", "containerd", "docker")
#: Packages apply installs for a role; generic tools it may add are left installed.
ROLE_PACKAGES = (
    "keepalived",
    "haproxy",
    "etcd-server",
    "etcd-client",
    "kubelet",
    "kubeadm",
    "kubectl",
    "containerd",
    "docker.io",
)
#: Directories hakube or kubeadm own outright.
DIRS = (
    "/etc/hakube",
    "/var/lib/hakube",
    "/etc/etcd",
    TRACK_DIR,
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/etc/cni/net.d",
    "/root/.kube",
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hakube.workflows.ops import Reach
#: What the purged packages leave behind once hakube's files are gone (runtime files, empty
#: directories); removed with them.
PACKAGE_LEFTOVERS = ("/etc/keepalived", "/etc/haproxy", "/var/lib/haproxy")
#: Links the CNI plugins hakube installs (flannel, calico) leave behind.
CNI_LINKS = ("cni0", "flannel.1", "vxlan.calico", "tunl0")


@dataclass
class HostReset:
    host: str
    actions: list[str] = field(default_factory=list)


@dataclass
class ResetResult:
    hosts: list[HostReset] = field(default_factory=list)
    archived_state: str | None = None
    #: `--host`: the phases it left the cluster through (`apply --prune` on the survivors).
    left_through: list[str] = field(default_factory=list)
    not_undone: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def managed_paths(ctx: Context, host: Host) -> list[str]:
    """Every file any apply phase writes or manages on `host`."""
    c = ctx.run.cluster
    paths: set[str] = set()
    for p in apply_phases():
        if host.name in {t.name for t in p.targets(c)}:
            paths.update(f.path for f in p.files(RenderInput(c, host, ctx.run.secrets)))
            paths.update(path for path, _ in p.extra_paths(c, host))
    return sorted(paths)


async def reset_host(ctx: Context, host: Host) -> HostReset:
    q = shlex.quote
    out = HostReset(host.name)
    paths = managed_paths(ctx, host)
    f: HostFacts = await ctx.facts.gather(host, paths)

    async def step(description: str, command: str) -> None:
        out.actions.append(description)
        await ctx.do.sh(host, description, command)

    if "kubeadm" in f.packages:
        await step(
            "kubeadm reset -f, then the tutorial's cleanup (CNI links, iptables and IPVS rules)",
            "kubeadm reset -f; "
            + "; ".join(f"ip link delete {link} 2>/dev/null" for link in CNI_LINKS)
            + "; (iptables -F && iptables -t nat -F && iptables -t mangle -F && iptables -X) "
            "2>/dev/null; ipvsadm --clear 2>/dev/null; true",
        )
    units = [u for u in UNITS if f.unit(u).loaded]
    if units:
        await step(
            f"stop and disable {', '.join(units)}",
            f"systemctl disable --now {' '.join(f'{u}.service' for u in units)}",
        )
    # apply holds the service packages and kubeadm/packages the Kubernetes ones: purge needs
    # every hold on a role package released first.
    held = sorted(set(ROLE_PACKAGES) & f.held)
    if held:
        await step(f"release the hold on {', '.join(held)}", f"apt-mark unhold {' '.join(held)}")
    pkgs = [p for p in ROLE_PACKAGES if p in f.packages]
    if pkgs:
        purge = (
            f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {' '.join(pkgs)} && "
            "DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -q"
            if f.package_family == "apt"
            else f"yum remove -y {' '.join(pkgs)}"
        )
        await step(f"purge {', '.join(pkgs)}", purge)
    data = ctx.run.cluster.etcd.data_dir if ctx.run.cluster.is_etcd(host) else None
    dirs = [*DIRS, *([data, f"{data}.before-restore-*"] if data else [])]
    if pkgs:
        dirs += PACKAGE_LEFTOVERS
    present = [p for p in paths if p in f.files]
    await step(
        f"remove {len(present)} file(s) apply wrote and hakube's directories",
        "rm -rf -- "
        + " ".join(q(p) for p in paths)
        + " "
        + " ".join(d if d.endswith("*") else q(d) for d in dirs)
        + "; rmdir /etc/systemd/system/haproxy.service.d /etc/systemd/system/keepalived.service.d"
        " 2>/dev/null; "
        "systemctl daemon-reload; systemctl reset-failed 2>/dev/null; true",
    )
    hosts = remove_block(f.etc_hosts)
    if hosts.rstrip() != f.etc_hosts.rstrip():
        content = hosts.encode()
        out.actions.append("remove the hakube block from /etc/hosts")
        await ctx.do.put(
            host, "remove the hakube block from /etc/hosts", "/etc/hosts", content, 0o644
        )
    if SWAP_MARK in f.fstab:
        content = restore_swap(f.fstab).encode()
        out.actions.append("put back the swap lines commented out in /etc/fstab")
        await ctx.do.put(
            host, "put back the swap lines hakube commented out in /etc/fstab", "/etc/fstab",
            content, 0o644,
        )  # fmt: skip
    return out


#: What `apply --prune` runs for the survivors around a removal, besides the removal's own two
#: phases: the load balancers (backends and VRRP peers without the host, rolled while its
#: apiserver still answers) and the apiservers' etcd lists (no apiserver asks a removed member).
LEAVE_PHASES = ("lb", EtcdEndpoints.name)


async def leave_cluster(live: Live, target: Host) -> list[str]:
    """`target` leaves the cluster the way `hakube node remove` takes a host out, through
    `apply --prune` on the survivors (the phases that act on a removal only, `LEAVE_PHASES`):
    refused when it would break etcd quorum or remove the last control plane; the VIP handed to
    another LB host; the survivors' HAProxy and keepalived rolled without it; the apiservers'
    etcd lists without its member; Node drained and deleted; etcd member removed (checked);
    kubeadm reset and the tutorial's cleanup, checked clean; forgotten by the record, so that
    the next apply joins it again (it stays in the cluster file). Returns the phases run."""
    state = live.ctx.run.state
    record = load_record(state.path)
    assert record is not None  # reset() refuses --host without one
    survivors = without(live.ctx.run.cluster, [target.name])
    others = sorted(x.name for x in membership(survivors, record).leaving if x.name != target.name)
    if others:
        raise OpsInputError(
            f"{', '.join(others)} left the cluster file but are still recorded: remove them "
            "with `hakube apply --prune` first (reset --host takes out one host). Nothing was "
            "changed"
        )
    try:
        result = await apply(
            survivors, state=state, only=LEAVE_PHASES, prune=True, leaving_from=[target],
            emit=live.ctx.report.sink, transports=live.conns,
        )  # fmt: skip
    except ApplyLocked as e:
        raise OpsError(str(e)) from None
    except ValueError as e:  # the record refuses the file (RecordError, MembershipError)
        raise OpsInputError(f"{e}; or reset the whole cluster (without --host)") from None
    if not result.ok:
        failed = "; ".join(f"{f.host} {f.phase}: {f.message}" for f in result.failures)
        raise OpsError(
            f"{target.name} did not leave the cluster, so nothing of it was reset: {failed}"
        )
    return result.phases_run


def archive_state(state: StateDir) -> Path | None:
    if not state.path.exists():
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = state.path.with_name(f"{state.path.name}.reset-{stamp}")
    state.path.rename(target)
    return target


async def reset(
    cluster: Cluster,
    state: StateDir,
    *,
    host: str | None = None,
    **reach: Unpack[Reach],
) -> ResetResult:
    if host is not None and host not in {h.name for h in cluster.hosts}:
        names = ", ".join(h.name for h in cluster.hosts)
        raise OpsInputError(f"--host {host!r} is not in the cluster file (hosts: {names})")
    if host is not None and load_record(state.path) is None:
        raise OpsInputError(
            f"no record of cluster {cluster.name!r} in {state.path}: taking one host out needs "
            "it (its etcd member, the backends it is in). Run reset --host from the machine "
            "that applied the cluster, or reset the whole cluster. Nothing was changed"
        )
    targets = [cluster.host(host)] if host else list(cluster.hosts)
    result = ResetResult()
    result.not_undone = [
        "hostname, sysctl runtime values and a disabled firewalld are left as apply set them",
        "curl, ca-certificates, socat and conntrack stay installed",
    ]
    try:
        async with live_session(cluster, state, phase="reset", **reach) as live:
            require_reachable(live.errors, targets)
            # One hold from the leave to the reset: an apply in between would join the host
            # again (it is still in the file, no longer in the record) just before its reset.
            with cluster_lock(state):
                if host:
                    result.left_through = await leave_cluster(live, targets[0])
                resets = (reset_host(live.ctx, h) for h in targets)
                result.hosts = list(await asyncio.gather(*resets))
    except ApplyLocked as e:
        raise OpsError(str(e)) from None
    if host is None:
        archived = archive_state(state)
        result.archived_state = str(archived) if archived else None
    return result
