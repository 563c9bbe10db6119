"""Removing hosts that left the cluster file (``apply --prune``, ``hakube node remove``).

Two phases, both run from one surviving host (the coordinator) and both idempotent, so an
interrupted removal is finished by running the same command again:

``remove/handover`` (before the load-balancer phases): refuse with the numbers when the removal
would break etcd quorum or remove the last control plane; then, if a leaving host holds the VIP,
stop its keepalived (it sends a priority-0 advert, so the best backup takes over at once) and
wait until exactly one survivor holds the VIP. The LB phases that follow then roll the
survivors' HAProxy backends and keepalived peers to the file, while the leaving apiserver still
answers: no request is sent to a backend that is going away.

``remove/hosts`` (after them), one leaving host at a time: drain and delete its Node (kubectl
through admin.conf on a survivor), remove its etcd member (external: etcdctl on a survivor;
stacked: ``kubeadm reset`` removes it, then the member list is checked and an orphan removed),
``kubeadm reset -f``, the tutorial's cleanup (CNI config, state and links, kube iptables/IPVS
rules), hakube's own units and files; then check that nothing is left, and forget the host.

A host that cannot be reached is removed from the survivors only; every step on the host itself
is skipped with a warning that says what is left there.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hakube.facts.ops import EtcdAnswers, parse_etcd
from hakube.membership import (
    EtcdCount,
    Leaving,
    quorum_problems,
    with_hosts,
)
from hakube.phases import etcd_join
from hakube.phases.base import Event, EventKind, Phase, PhaseError
from hakube.phases.context import Context, Timeout
from hakube.phases.etcd import endpoint_health
from hakube.phases.kubeadm import ADMIN_CONF, KUBECTL, node_lookup
from hakube.phases.lb import KeepalivedPhase, keepalived_follows, sole_vip_owner
from hakube.pki.layout import ETCD_HOST_PKI_DIR
from hakube.record import ClusterRecord
from hakube.render import render_host
from hakube.render.etcd import etcdctl, render_etcd
from hakube.render.keepalived import TRACK_DIR
from hakube.spec.model import Cluster, EndpointMode, EtcdTopology, Host

#: etcdctl inside a stacked etcd static pod (kubeadm's own certificate paths; its server
#: certificate is a client one too).
STACKED_ETCDCTL = (
    "-n kube-system exec etcd-{node} -- etcdctl --endpoints={endpoints} "
    "--cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/server.crt "
    "--key=/etc/kubernetes/pki/etcd/server.key"
)
#: What `kubeadm reset` leaves behind (FACTS.md), and what the tutorial removes by hand.
KUBE_LEFTOVERS = ("/etc/cni/net.d", "/var/lib/cni", "/var/lib/kubelet", "/etc/kubernetes",
                  "/root/.kube")  # fmt: skip
CNI_LINKS = ("cni0", "flannel.1", "vxlan.calico", "tunl0", "kube-ipvs0")
#: hakube's own directory on every host (cluster id, kubeadm configs).
HAKUBE_DIR = "/etc/hakube"
SERVICES = ("kubelet", "keepalived", "haproxy", "etcd")
KUBE_RULES = "KUBE-|cali-|CNI-|FLANNEL"


@dataclass
class Removal:
    """The leaving hosts, shared by the two phases of one run."""

    leaving: tuple[Leaving, ...]
    #: name -> Host as last reached; None when it was never recorded.
    hosts: dict[str, Host | None]
    #: Names whose SSH connection failed: only the survivors are cleaned up for them.
    unreachable: set[str] = field(default_factory=set)
    #: The survivor that takes the leaving init host's role (None: the init host stays).
    init_successor: str | None = None

    def reachable(self, ctx: Context, name: str) -> Host | None:
        host = self.hosts.get(name)
        return None if host is None or name in self.unreachable else host


def coordinator(cluster: Cluster) -> Host:
    """The surviving host that runs the cluster-wide steps: an etcd host (it has etcdctl and
    the client certificate) or a control plane (admin.conf)."""
    for h in (*cluster.etcd_hosts, *cluster.control_planes, *cluster.hosts):
        return h
    raise PhaseError("no host would be left in the cluster")


def _warn(ctx: Context, host: str, message: str) -> None:
    ctx.report(Event(EventKind.MEMBERSHIP, ctx.report.phase, host, message))


class _RemovePhase(Phase):
    def __init__(self, removal: Removal) -> None:
        self.removal = removal

    def targets(self, cluster: Cluster) -> list[Host]:
        return [coordinator(cluster)] if self.removal.leaving else []

    def leaving(self, ctx: Context) -> Iterator[tuple[Leaving, Host | None]]:
        """Each leaving host, with its entry when it can be reached (None: survivors only)."""
        for left in self.removal.leaving:
            yield left, self.removal.reachable(ctx, left.name)


class Handover(_RemovePhase):
    """refuse a removal that breaks etcd quorum or removes the last control plane; a leaving VIP
    owner hands the VIP to a survivor first"""

    name = "remove/handover"

    async def run(self, ctx: Context, host: Host) -> None:
        await self._same_cluster(ctx)
        problems = quorum_problems(
            ctx.run.cluster, self.removal.leaving, await self._etcd_count(ctx, host)
        )
        if problems:
            raise PhaseError("; ".join(problems) + ". Nothing was removed")
        self._hand_init_over(ctx)
        if ctx.run.cluster.endpoint.mode is EndpointMode.VIP:
            await self._hand_over(ctx)

    def _hand_init_over(self, ctx: Context) -> None:
        """The removal goes ahead: every later phase (and run) uses the successor's admin.conf.
        A dry run hands over in memory only, so its later phases plan as the real run would."""
        rec, successor = ctx.run.record, self.removal.init_successor
        if rec is None or successor is None or rec.init_host is None or rec.init_host == successor:
            return
        # Recorded from now on as the control-plane node it is (the record lists the init host
        # apart from the joined nodes): remove/hosts drains, resets and deletes it like any
        # other, and a run that stops before that finds it again as a leaving control plane.
        rec.joined(rec.init_host, "control-plane")
        rec.hand_init_over(successor)
        if not ctx.run.dry_run:
            ctx.run.state.save_record(rec)

    async def _same_cluster(self, ctx: Context) -> None:
        """Never wipe a host that belongs to another cluster."""
        for left, target in self.leaving(ctx):
            if target is not None and target.name not in ctx.facts:
                found = await ctx.facts.gather(target)
                problem = (
                    ctx.run.record.check_host_id(left.name, found.cluster_id)
                    if ctx.run.record
                    else None
                )
                if problem:
                    raise PhaseError(problem)

    async def _hand_over(self, ctx: Context) -> None:
        vip = str(ctx.run.cluster.endpoint.vip)
        running: list[tuple[Host, bool]] = []
        for left, target in self.leaving(ctx):
            if target is None:
                _warn(ctx, left.name, f"{left.name} is unreachable: if it still held the VIP, "
                                      "keepalived on the survivors has taken it over")  # fmt: skip
            elif ctx.facts[target.name].unit("keepalived").running:
                res = await ctx.facts.read(target, f"ip -o -4 addr show | grep -qF 'inet {vip}/'",
                                     check=False)  # fmt: skip
                running.append((target, res.ok))
        # The owner last: the VIP then goes straight to a survivor, never to another leaver.
        for target, holds in sorted(running, key=lambda x: x[1]):
            what = "hand the VIP over: stop keepalived" if holds else "stop keepalived"
            await ctx.do.sh(target, what, "systemctl stop keepalived")
            if holds and not ctx.run.dry_run:
                await self._new_owner_first(ctx, target)

    async def _new_owner_first(self, ctx: Context, old: Host) -> None:
        """Wait for the survivor that took the VIP and give it its new keepalived config first.

        It was the highest-priority survivor, so the new config (the file without the leavers)
        gives it the top priority; updated before the others, it stays above every survivor at
        each step of the roll that follows and the VIP does not move again.
        """
        after = f"after {old.name} stopped keepalived "
        owner = ctx.run.cluster.host(await sole_vip_owner(ctx, timeout=10, after=after))
        written = await ctx.do.ensure_files(owner, KeepalivedPhase().files_for(ctx, owner))
        await keepalived_follows(ctx, owner, written, " (the new VIP owner first)")

    async def _etcd_count(self, ctx: Context, host: Host) -> EtcdCount | None:
        if ctx.run.cluster.etcd.topology is EtcdTopology.EXTERNAL:
            via = _etcd_via(ctx)
            if via is None:
                return EtcdCount(tuple(ctx.run.record.etcd_members if ctx.run.record else ()), ())
            found = await etcd_join.members(ctx, via)
            healthy_urls = {
                str(e.get("endpoint")) for e in await endpoint_health(ctx, via) if e.get("health")
            }
            return EtcdCount(
                tuple(m.name or "(unstarted)" for m in found),
                tuple(m.name for m in found if set(m.client_urls) & healthy_urls),
            )
        rec = ctx.run.record
        if rec is None or rec.init_host is None:
            return None  # stacked etcd exists only once kubeadm ran
        cps = [n for n, role in rec.nodes.items() if role == "control-plane"]
        if rec.init_host not in cps:
            cps.append(rec.init_host)
        # Leaving hosts without a recorded entry are in `unreachable` too (_connect_leaving).
        down = self.removal.unreachable
        return EtcdCount(tuple(cps), tuple(n for n in cps if n not in down))


class RemoveHosts(_RemovePhase):
    """drain and delete the Node, remove the etcd member, kubeadm reset, CNI/iptables cleanup,
    hakube's units and files; checked, then forgotten"""

    name = "remove/hosts"

    async def run(self, ctx: Context, host: Host) -> None:
        for left, target in self.leaving(ctx):
            if target is None:
                _warn(ctx, left.name, f"{left.name} is unreachable: removed from the survivors "
                                      "only; wipe it before it is used again")  # fmt: skip
            await self._remove(ctx, host, left, target)
            ctx.run.remember(functools.partial(ClusterRecord.forget, host=left.name))

    async def _remove(self, ctx: Context, coord: Host, left: Leaving, target: Host | None) -> None:
        rec = ctx.run.record
        is_node = rec is not None and left.name in rec.nodes
        admin = _admin_host(ctx)
        if is_node and admin is not None:
            await _drain(ctx, admin, left.name, reachable=target is not None)
        if ctx.run.cluster.etcd.topology is EtcdTopology.EXTERNAL:
            await _remove_external_member(ctx, left.name, target)
        elif admin is not None and rec is not None and rec.nodes.get(left.name) == "control-plane":
            await _stacked_lead_elsewhere(ctx, admin, left.name, reachable=target is not None)
        if target is not None:
            await _reset_and_clean(ctx, target, kube=is_node)
        if is_node and admin is not None and ctx.run.cluster.etcd.topology is EtcdTopology.STACKED:
            await _check_stacked_member(ctx, admin, left.name)
        if is_node and admin is not None:
            await ctx.do.sh(admin, f"kubectl delete node {left.name}",
                         f"{KUBECTL} delete node {shlex.quote(left.name)} "
                         "--ignore-not-found")  # fmt: skip
        if target is not None and not ctx.run.dry_run:
            await _check_clean(ctx, target)


def _etcd_via(ctx: Context) -> Host | None:
    """A surviving etcd host whose etcd runs (it has etcdctl and the client certificate)."""
    hosts = ctx.run.cluster.etcd_hosts
    return next((h for h in hosts if h in ctx.facts and ctx.facts[h].unit("etcd").running), None)


def _admin_host(ctx: Context) -> Host | None:
    rec = ctx.run.record
    if rec is None or rec.init_host is None:
        return None
    return next((h for h in ctx.run.cluster.control_planes if h.name == rec.init_host), None)


async def _drain(ctx: Context, admin: Host, node: str, *, reachable: bool) -> None:
    found = await node_lookup(ctx, admin, node)
    if found is None:
        raise PhaseError(
            f"whether the cluster still has a Node {node} cannot be read through {admin.name}'s "
            f"{ADMIN_CONF} (is the API server up?): {node} was not drained and nothing of it "
            "was removed. Re-run once the API server answers"
        )
    if not found:
        return  # deleted by an earlier run
    if not reachable:
        # Its kubelet cannot confirm any eviction: the pods are deleted with the Node object.
        _warn(ctx, node, f"{node} is unreachable: not drained, its pods go with the Node")
        return
    await ctx.do.sh(
        admin,
        f"kubectl drain {node}",
        f"{KUBECTL} drain {shlex.quote(node)} --ignore-daemonsets --delete-emptydir-data "
        "--timeout=300s",
        timeout=Timeout.KUBEADM,
    )


async def _remove_external_member(ctx: Context, name: str, target: Host | None) -> None:
    c = ctx.run.cluster
    via = _etcd_via(ctx)
    if via is None:
        raise PhaseError("no surviving etcd member runs: the member cannot be removed")
    urls = {etcd_join.peer_url(ctx, target)} if target is not None else set()
    listed = await etcd_join.members(ctx, via)
    found = [m for m in listed if m.name == name or urls & set(m.peer_urls)]
    for m in found:
        ctl = functools.partial(etcdctl, c)
        await _lead_elsewhere(ctx, via, m, [x for x in listed if x not in found], ctl)
        await ctx.do.sh(via, f"etcd member remove {name} ({m.hex_id})",
                     etcdctl(c, "member", "remove", m.hex_id))  # fmt: skip
    if found and not ctx.run.dry_run:
        left = [m for m in await etcd_join.members(ctx, via) if m.name == name]
        if left:
            raise PhaseError(f"etcd still lists {name} after member remove; re-run")


async def _lead_elsewhere(
    ctx: Context,
    via: Host,
    leaving: etcd_join.Member,
    staying: list[etcd_join.Member],
    ctl: Callable[..., str],
) -> None:
    """A leaving leader hands the leadership to a survivor first (`etcdctl move-leader`, sent to
    the leader itself). Removed while it leads, it stops at once and the survivors go without a
    leader until one election timeout has passed, and every apiserver's readiness fails
    meanwhile (the lab's membership test: 10 requests failed twice with http 500, every
    survivor's stand-in unready at once, within 2 s of removing a member).

    `ctl(*args, endpoints=...)` is the etcdctl command line `via` runs (hakube's etcdctl for
    external etcd, the one in kubeadm's static pod for stacked)."""
    heirs = [m for m in staying if not m.learner]
    if not leaving.client_urls or not heirs:
        return
    at_leaver = ",".join(leaving.client_urls)
    res = await ctx.facts.read(
        via, ctl("endpoint", "status", "-w", "json", endpoints=at_leaver), check=False
    )
    status = EtcdAnswers({"etcd-status": res.stdout.splitlines()})
    if not res.ok or not parse_etcd(status).is_leader:
        return  # not the leader, or not answering (then it leads nobody)
    heir = next((m for m in heirs if m.name == via.name), heirs[0])
    await ctx.do.sh(via, f"etcd leadership {leaving.name} -> {heir.name}",
                    ctl("move-leader", heir.hex_id, endpoints=at_leaver))  # fmt: skip


def _stacked_etcdctl(admin: Host, *args: str, endpoints: str = "https://127.0.0.1:2379") -> str:
    """etcdctl in `admin`'s etcd pod, asking the member at `endpoints` (default: its own)."""
    pod = STACKED_ETCDCTL.format(node=shlex.quote(admin.name), endpoints=endpoints)
    return " ".join((KUBECTL, pod, *args))


async def _stacked_lead_elsewhere(ctx: Context, admin: Host, name: str, *, reachable: bool) -> None:
    """`kubeadm reset` removes a leaving stacked member: if it leads, it hands the leadership
    to a survivor first, as an external one does (`_lead_elsewhere`)."""
    if not reachable:
        _warn(ctx, name, f"{name} is unreachable: its etcd leadership is not handed over "
                         "(if it leads, etcd elects a new leader once it is removed)")  # fmt: skip
        return
    res = await ctx.facts.read(admin, _stacked_etcdctl(admin, "member", "list", "-w", "json"),
                               check=False)  # fmt: skip
    if not res.ok:
        _warn(ctx, name, f"the stacked etcd members cannot be listed through etcd-{admin.name} "
                         f"({res.stderr.strip() or res.exit_status}): whether {name} leads is "
                         "not known, its leadership is not handed over")  # fmt: skip
        return
    listed = etcd_join.parse_member_list(res.stdout)
    found = [m for m in listed if m.name == name]
    staying = [m for m in listed if m not in found]
    for m in found:
        ctl = functools.partial(_stacked_etcdctl, admin)
        await _lead_elsewhere(ctx, admin, m, staying, ctl)


async def _check_stacked_member(ctx: Context, admin: Host, name: str) -> None:
    """kubeadm reset removes a stacked member when it can reach etcd; an orphan is removed."""
    res = await ctx.facts.read(admin, _stacked_etcdctl(admin, "member", "list", "-w", "json"),
                               check=False)  # fmt: skip
    if not res.ok:
        raise PhaseError(
            f"cannot list the stacked etcd members through etcd-{admin.name} "
            f"({res.stderr.strip() or res.exit_status}): check that no member named {name} is "
            "left (`etcdctl member list`) before adding hosts"
        )
    for m in etcd_join.parse_member_list(res.stdout):
        if m.name == name:
            await ctx.do.sh(admin, f"etcd member remove {name} ({m.hex_id}), left by kubeadm reset",
                         _stacked_etcdctl(admin, "member", "remove", m.hex_id))  # fmt: skip


def hakube_paths(ctx: Context, target: Host) -> list[str]:
    """Every file hakube put on `target`, rendered as it was while the host was a member."""
    before = with_hosts(ctx.run.cluster, [target])
    host = before.host(target.name)
    files = [*render_host(before, host, ctx.run.secrets), *render_etcd(before, host)]
    return sorted({f.path for f in files})


def leftover_paths(ctx: Context, target: Host) -> list[str]:
    """What must not exist on a removed host: hakube's files, kubeadm's and the CNI's state."""
    paths = [*hakube_paths(ctx, target), *KUBE_LEFTOVERS, ctx.run.cluster.etcd.data_dir]
    return sorted(set(paths))


def _cleanup_script(ctx: Context, target: Host, *, kube: bool) -> str:
    q = shlex.quote
    paths = [*leftover_paths(ctx, target), str(ETCD_HOST_PKI_DIR), HAKUBE_DIR, TRACK_DIR]
    steps = []
    if kube:
        steps.append("if command -v kubeadm >/dev/null; then kubeadm reset -f >/dev/null 2>&1; fi")
    steps += [
        f"for u in {' '.join(SERVICES)}; do systemctl disable --now -q $u 2>/dev/null; done",
        f"rm -rf {' '.join(q(p) for p in sorted(set(paths)))}",
        f"for l in {' '.join(CNI_LINKS)}; do ip link delete $l 2>/dev/null; done",
        "if command -v iptables-save >/dev/null && iptables-save | grep -qE "
        f"{q(KUBE_RULES)}; then iptables-save | grep -vE {q(KUBE_RULES)} | iptables-restore; fi",
        "if command -v ipvsadm >/dev/null; then ipvsadm --clear; fi",
        "sed -i '/^# BEGIN hakube$/,/^# END hakube$/d' /etc/hosts",
        "systemctl daemon-reload",
        "true",
    ]
    return "; ".join(steps)


async def _reset_and_clean(ctx: Context, target: Host, *, kube: bool) -> None:
    what = "kubeadm reset -f, " if kube else ""
    await ctx.do.sh(
        target,
        f"{what}stop hakube's services, remove its files, CNI state, links and kube rules",
        _cleanup_script(ctx, target, kube=kube),
        timeout=Timeout.KUBEADM,
    )


async def _check_clean(ctx: Context, target: Host) -> None:
    """Nothing of hakube or Kubernetes runs or remains on the removed host."""
    q = " ".join(shlex.quote(p) for p in leftover_paths(ctx, target))
    cmd = (
        f"ls -d {q} 2>/dev/null; for u in {' '.join(SERVICES)}; do "
        "systemctl is-active -q $u && echo unit:$u; done; grep -q '^# BEGIN hakube$' /etc/hosts "
        "&& echo /etc/hosts block; true"
    )
    res = await ctx.facts.read(target, cmd)
    left = [line for line in res.stdout.splitlines() if line.strip()]
    if left:
        raise PhaseError(f"left on {target.name} after the cleanup: {', '.join(left)}; re-run")
