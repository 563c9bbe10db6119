"""reset: take down what apply and kubeadm installed, host by host; archive the state dir.

Per host, in order: `kubeadm reset -f` (where kubeadm is installed) and the tutorial's cleanup
(CNI config and links, iptables/IPVS rules, root's kubeconfig); hakube's units stopped and
disabled; package holds released and the packages hakube installs for its roles purged; every
file apply writes removed, with the directories hakube owns and etcd's data; the hakube block
out of /etc/hosts and swap lines hakube commented out of /etc/fstab put back.

Not undone (the host's earlier state is not recorded): the hostname apply may have set, the
runtime value of sysctls (their hakube file is removed), a firewalld apply disabled, and tools
that are usually there anyway (curl, ca-certificates, socat, conntrack).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hakube.facts.host import HostFacts
from hakube.membership import Leaving, Membership, MembershipError, recorded_roles, without
from hakube.phases.base import RenderInput
from hakube.phases.context import Context
from hakube.phases.remove import Handover, Removal, RemoveHosts, coordinator
from hakube.record import load_record
from hakube.render.host import SWAP_MARK, remove_block, restore_swap
from hakube.render.keepalived import TRACK_DIR
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.workflows.apply import ApplyLocked, _removal, apply_phases, cluster_lock
from hakube.workflows.ops import OpsError, OpsInputError, require_reachable, session

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


async def leave_cluster(ctx: Context, errors: dict[str, str], target: Host) -> None:
    """`target` leaves the cluster the way `hakube node remove` takes a host out (the same
    phases): refused when it would break etcd quorum or remove the last control plane; the VIP
    handed to another LB host; Node drained and deleted; etcd member removed (checked); kubeadm
    reset and the tutorial's cleanup; checked clean; forgotten by the record, so that the next
    apply joins it again (it stays in the cluster file)."""
    survivors = without(ctx.run.cluster, [target.name])
    record = load_record(ctx.run.state.path)
    roles = tuple(recorded_roles(record).get(target.name, [])) if record else ()
    leaving = Leaving(target.name, roles)
    try:
        # apply's own: the init host's role passes to a joined control plane first.
        removal = (
            _removal(survivors, record, Membership(leaving=(leaving,)), [target])
            if record
            else Removal((leaving,), {target.name: target})
        )
    except MembershipError as e:
        raise OpsInputError(f"{e}; or reset the whole cluster (without --host)") from None
    run = dataclasses.replace(ctx.run, cluster=survivors, record=record)
    sub = dataclasses.replace(ctx, run=run)
    coord = coordinator(survivors)
    require_reachable(errors, [coord])
    # The removal reads the survivors' etcd units and the leaving host's facts.
    for h in [target, *survivors.etcd_hosts]:
        if h.name not in errors:
            await sub.facts.gather(h)
    for phase in (Handover(removal), RemoveHosts(removal)):
        sub.report.phase = phase.name
        await phase.run(sub, coord)
    ctx.report.phase = "reset"


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
    targets = [cluster.host(host)] if host else list(cluster.hosts)
    result = ResetResult()
    result.not_undone = [
        "hostname, sysctl runtime values and a disabled firewalld are left as apply set them",
        "curl, ca-certificates, socat and conntrack stay installed",
    ]
    try:
        with cluster_lock(state):
            async with session(cluster, state, phase="reset", **reach) as (
                ctx,
                errors,
            ):
                require_reachable(errors, targets)
                if host:
                    await leave_cluster(ctx, errors, targets[0])
                result.hosts = list(await asyncio.gather(*(reset_host(ctx, h) for h in targets)))
    except ApplyLocked as e:
        raise OpsError(str(e)) from None
    if host is None:
        archived = archive_state(state)
        result.archived_state = str(archived) if archived else None
    return result
