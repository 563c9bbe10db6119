"""status: the live state of every HA piece, read in one round trip per host. Changes nothing.

Problems (exit 1): a VIP held by other than exactly one host, an LB host whose keepalived or
HAProxy does not answer, a backend not UP, an etcd member unhealthy, missing, alarmed or
without a leader, an expired certificate, a node not Ready, an unreachable host.
Warnings (exit 0): certificates with fewer than 30 days left, drift (files that differ from
what `apply` would write), bootstrap tokens that expire within a day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hakube.facts.haproxy import parse_show_stat
from hakube.facts.host import FileState, facts_script, parse_facts
from hakube.facts.kubeadm import KubeadmOutputError, TokenStatus, parse_token_list
from hakube.facts.ops import (
    ALARM_RE,
    CertFact,
    EtcdClient,
    OpsFacts,
    OpsQuery,
    etcd_id,
    ops_script,
    parse_ops,
)
from hakube.phases.base import RenderInput
from hakube.phases.context import Context, sha256
from hakube.phases.etcd import EtcdPhase
from hakube.phases.etcd_join import as_running
from hakube.phases.kubeadm import ADMIN_CONF, KUBECTL
from hakube.phases.verify import HAState
from hakube.pki.etcd import EtcdPKI, etcd_members
from hakube.render.base import RenderedFile
from hakube.render.etcd import ETCD_ENV_FILE
from hakube.render.haproxy import STATS_SOCKET
from hakube.render.keepalived import priorities
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, EndpointMode, EtcdTopology, Host
from hakube.state import StateDir
from hakube.workflows.apply import apply_phases
from hakube.workflows.etcd_access import etcd_access
from hakube.workflows.ops import ClusterView, Live, known_cluster, live_session, stored_secrets

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hakube.workflows.ops import Reach

CERT_WARN_DAYS = 30
STATUS_FACTS = ("units", "files")
#: The units status judges (on LB hosts).
LB_UNITS = ("haproxy", "keepalived")
#: Phases whose files do not depend on facts (OS family, CA hash), so drift is exact for them.
DRIFT_PHASES = ("prepare", "runtime", "lb/haproxy", "lb/keepalived", "etcd")


@dataclass
class LBStatus:
    host: str
    vip_held: bool | None
    vrrp_state: str | None
    priority: int | None
    configured_priority: int | None
    haproxy: str
    keepalived: str


@dataclass
class EtcdMemberStatus:
    name: str
    id: str
    endpoint: str
    leader: bool
    learner: bool
    raft_index: int
    raft_term: int
    revision: int
    db_size: int
    alarms: list[str]
    healthy: bool
    error: str = ""


@dataclass
class CertStatus:
    host: str
    path: str
    subject: str
    expires: str | None
    days_left: float | None


@dataclass
class Drift:
    host: str
    path: str
    reason: str


@dataclass(kw_only=True)
class StatusReport(HAState):
    cluster: str
    lbs: list[LBStatus] = field(default_factory=list)
    etcd: list[EtcdMemberStatus] = field(default_factory=list)
    certs: list[CertStatus] = field(default_factory=list)
    tokens: list[TokenStatus] | None = None
    nodes: dict[str, str] | None = None
    drift: list[Drift] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, **asdict(self)}


def host_query(cluster: Cluster, view: ClusterView, host: Host) -> OpsQuery:
    vip = cluster.endpoint.mode is EndpointMode.VIP and cluster.is_lb(host)
    on_init = host.name == view.init_host.name and view.kubernetes
    return OpsQuery(
        vip=str(cluster.endpoint.vip) if vip else None,
        vrrp=vip,
        haproxy_socket=STATS_SOCKET if cluster.is_lb(host) else None,
        etcd=local_etcd(cluster, view, host),
        kubectl=KUBECTL if on_init else None,
        kubeadm_tokens=on_init,
        etcd_env=ETCD_ENV_FILE
        if cluster.etcd.topology is EtcdTopology.EXTERNAL and cluster.is_etcd(host)
        else None,
    )


def local_etcd(cluster: Cluster, view: ClusterView, host: Host) -> EtcdClient | None:
    """`host`'s own member: hakube's external one or kubeadm's stacked."""
    access = etcd_access(cluster, kubernetes=view.kubernetes)
    return access.local if access and host.name in {h.name for h in access.hosts} else None


def stored_etcd_pki(cluster: Cluster, state: StateDir) -> EtcdPKI | None:
    """The etcd PKI as stored, for the members that have certificates; never generates."""
    d = state.pki_dir / "etcd"
    if not (d / "ca.crt").exists():
        return None
    have = [m for m in etcd_members(cluster) if (d / "members" / m.name / "server.crt").exists()]
    return EtcdPKI.load(d, have)


def expected_files(
    cluster: Cluster, secrets: Secrets, host: Host, etcd_pki: EtcdPKI | None = None
) -> list[RenderedFile]:
    """What `apply` would write on `host` for the phases drift can judge exactly."""
    out: list[RenderedFile] = []
    for p in apply_phases():
        if p.name in DRIFT_PHASES and host.name in {t.name for t in p.targets(cluster)}:
            out += p.files(RenderInput(cluster, host, secrets))
            if isinstance(p, EtcdPhase) and etcd_pki and host.name in etcd_pki.members:
                out += etcd_pki.etcd_host_files(host.name)
    return out


def expected_by_host(cluster: Cluster, state: StateDir) -> dict[str, list[RenderedFile]] | None:
    """`expected_files` of every host; None without a state dir (drift is then not judged)."""
    secrets = stored_secrets(state)
    if secrets is None:
        return None
    pki = stored_etcd_pki(cluster, state)
    return {h.name: expected_files(cluster, secrets, h, pki) for h in cluster.hosts}


async def read_host(
    ctx: Context, view: ClusterView, host: Host, expected: list[RenderedFile]
) -> tuple[OpsFacts, dict[str, FileState], dict[str, str]]:
    """One round trip: ops facts, checksums of the files apply manages, unit states."""
    paths = [f.path for f in expected]
    # Only an LB host's units are judged; asking systemd about the others cost each worker
    # more than the rest of its status script.
    asked = LB_UNITS if ctx.run.cluster.is_lb(host) else ()
    reads = facts_script(paths, STATUS_FACTS, units=asked)
    script = ops_script(host_query(ctx.run.cluster, view, host), reads)
    res = await ctx.facts.read(host, script, check=False, timeout=30)
    facts = parse_facts(res.stdout)
    units = {name: u.active for name, u in facts.units.items() if u.loaded}
    return parse_ops(res.stdout), facts.files, units


async def collect(
    cluster: Cluster, state: StateDir, *, now: dt.datetime | None = None, **reach: Unpack[Reach]
) -> StatusReport:
    """One status round over a new session."""
    started = time.monotonic()
    # Rendering what apply would write is CPU work that needs no host: it runs in a thread
    # while the SSH handshakes wait on the hosts.
    rendering = asyncio.ensure_future(asyncio.to_thread(expected_by_host, cluster, state))
    try:
        async with live_session(cluster, state, **reach) as live:
            return await status_round(live, rendering, now=now, started=started)
    finally:
        if not rendering.done():
            rendering.cancel()


async def watch(
    cluster: Cluster,
    state: StateDir,
    every: float,
    show: Callable[[StatusReport], None],
    *,
    rounds: int = 0,
    **reach: Unpack[Reach],
) -> StatusReport:
    """A status round every `every` seconds over ONE session, each report to `show`, until
    interrupted (or after `rounds`, when given). Hosts that did not answer are connected again
    before the next round; the others keep their connections."""
    async with live_session(cluster, state, **reach) as live:
        n = 0
        while True:
            started = time.monotonic()
            rendering = asyncio.ensure_future(asyncio.to_thread(expected_by_host, cluster, state))
            report = await status_round(live, rendering, started=started)
            show(report)
            n += 1
            if rounds and n >= rounds:
                return report
            await asyncio.sleep(every)
            await live.reconnect(report.unreachable)


async def status_round(
    live: Live,
    rendering: Awaitable[dict[str, list[RenderedFile]] | None],
    *,
    now: dt.datetime | None = None,
    started: float,
) -> StatusReport:
    cluster, state, ctx = live.ctx.run.cluster, live.ctx.run.state, live.ctx
    view = known_cluster(cluster, state)
    report = StatusReport(cluster=cluster.name, unreachable=dict(live.errors))
    hosts = [h for h in cluster.hosts if h.name not in live.errors]
    expected = await rendering
    mine = expected or {}

    async def one(h: Host) -> tuple[Host, Any]:
        try:
            return h, await read_host(ctx, view, h, mine.get(h.name, []))
        except Exception as e:  # one bad host is a finding, not a crash
            return h, e

    results = await asyncio.gather(*(one(h) for h in hosts))
    read: dict[str, tuple[OpsFacts, dict[str, FileState], dict[str, str]]] = {}
    for h, r in results:
        if isinstance(r, BaseException):
            report.unreachable[h.name] = ctx.report.redactor.redact(str(r))
        else:
            read[h.name] = r
    for name, msg in report.unreachable.items():
        report.problems.append(f"{name}: not reachable ({msg})")
    _judge(cluster, view, read, report, now or dt.datetime.now(dt.UTC))
    if expected is None:
        report.notes.append(
            f"drift not checked: no state directory for {cluster.name!r} at {state.path} "
            "(status compares with what apply from this machine would write)"
        )
    else:
        for h in hosts:
            if h.name in read:
                ops, files, _ = read[h.name]
                # What apply would write: it keeps a member's own first-start settings.
                report.drift += _drift(h.name, as_running(expected[h.name], ops.etcd_env), files)
    for d in report.drift:
        report.warnings.append(f"{d.host}: {d.path} {d.reason} (apply would rewrite it)")
    report.seconds = time.monotonic() - started
    return report


def _drift(host: str, expected: list[RenderedFile], found: dict[str, FileState]) -> list[Drift]:
    out = []
    for rf in expected:
        cur = found.get(rf.path)
        if cur is None:
            out.append(Drift(host, rf.path, "is missing"))
        elif cur.sha256 != sha256(rf.content):
            out.append(Drift(host, rf.path, "differs"))
        elif cur.mode != rf.mode:
            out.append(Drift(host, rf.path, f"has mode {cur.mode:o}, not {rf.mode:o}"))
    return out


def _judge(
    cluster: Cluster,
    view: ClusterView,
    read: dict[str, tuple[OpsFacts, dict[str, FileState], dict[str, str]]],
    r: StatusReport,
    now: dt.datetime,
) -> None:
    ops = {name: v[0] for name, v in read.items()}
    units = {name: v[2] for name, v in read.items()}
    vip_mode = cluster.endpoint.mode is EndpointMode.VIP
    prios = priorities(cluster) if vip_mode else {}
    if vip_mode:
        r.vip = str(cluster.endpoint.vip)
    for h in cluster.lb_hosts:
        if h.name not in ops:
            continue
        f = ops[h.name]
        inst = f.vrrp[0] if f.vrrp else None
        lb = LBStatus(
            host=h.name,
            vip_held=f.vip_held,
            vrrp_state=inst.state if inst else None,
            priority=inst.priority if inst else None,
            configured_priority=prios.get(h.name),
            haproxy=units[h.name].get("haproxy", "not installed"),
            keepalived=units[h.name].get("keepalived", "not installed"),
        )
        r.lbs.append(lb)
        if f.vip_held:
            r.vip_owners.append(h.name)
        if lb.haproxy != "active":
            r.problems.append(f"{h.name}: haproxy is {lb.haproxy}")
        elif not f.haproxy_answered:
            r.problems.append(f"{h.name}: no answer from HAProxy's stats socket")
        if vip_mode and lb.keepalived != "active":
            r.problems.append(f"{h.name}: keepalived is {lb.keepalived}")
        elif vip_mode and inst and inst.state == "FAULT":
            r.problems.append(f"{h.name}: VRRP instance {inst.name} is in FAULT")
        r.add_backends(h.name, parse_show_stat(f.haproxy_stat, h.name))
    r.judge_vip()
    access = etcd_access(cluster, kubernetes=view.kubernetes)
    if access is not None:
        _judge_etcd(list(access.hosts), ops, r)
    else:
        r.notes.append(
            "etcd: stacked (kubeadm's static pods), which only run once kubeadm init has"
        )
    for name, f in ops.items():
        r.certs += [cert_status(name, fact, now) for fact in f.certs]
    for c in r.certs:
        if c.days_left is None:
            r.warnings.append(f"{c.host}: {c.path} could not be read as a certificate")
        elif c.days_left < 0:
            r.problems.append(f"{c.host}: {c.path} EXPIRED on {c.expires}")
        elif c.days_left < CERT_WARN_DAYS:
            r.warnings.append(
                f"{c.host}: {c.path} expires in {c.days_left:.0f} days (renew: hakube certs renew)"
            )
    init = ops.get(view.init_host.name)
    if view.kubernetes and init is not None:
        _judge_kubernetes(cluster, init, r, now)
    elif not view.kubernetes:
        r.notes.append(f"kubernetes: not installed ({ADMIN_CONF} not fetched into the state dir)")


def _judge_etcd(etcd_hosts: list[Host], ops: dict[str, OpsFacts], r: StatusReport) -> None:
    names: dict[str, str] = {}
    listed: set[str] = set()
    for h in etcd_hosts:
        f = ops.get(h.name)
        for m in f.etcd_members if f else []:
            mid = etcd_id(m.get("ID"))
            names[mid] = str(m.get("name", "")) or "(not started)"
            listed.add(names[mid])
    leaders = set()
    for h in etcd_hosts:
        f = ops.get(h.name)
        if f is None or f.etcd is None:
            continue
        e = f.etcd
        alarms = _member_alarms(f.etcd_alarms, e.member_id) + list(e.errors)
        r.etcd.append(
            EtcdMemberStatus(
                name=names.get(e.member_id, h.name),
                id=e.member_id,
                endpoint=e.endpoint,
                leader=e.is_leader,
                learner=e.learner,
                raft_index=e.raft_index,
                raft_term=e.raft_term,
                revision=e.revision,
                db_size=e.db_size,
                alarms=alarms,
                healthy=e.healthy,
                error=e.error,
            )
        )
        if e.leader_id:
            leaders.add(e.leader_id)
        if not e.healthy:
            r.problems.append(f"etcd {h.name}: unhealthy ({e.error or 'no answer'})")
        if e.errors:
            r.problems.append(f"etcd {h.name}: {'; '.join(e.errors)}")
    alarm_lines = {a for h in etcd_hosts if h.name in ops for a in ops[h.name].etcd_alarms}
    if alarm_lines:
        r.problems.append(f"etcd alarms: {', '.join(sorted(alarm_lines))}")
    want = {h.name for h in etcd_hosts}
    missing = sorted(want - listed) if listed else []
    if missing:
        r.problems.append(f"etcd: {', '.join(missing)} not in the member list")
    if len(leaders) > 1:
        r.problems.append(f"etcd: members disagree on the leader ({', '.join(sorted(leaders))})")
    elif r.etcd and not leaders:
        r.problems.append("etcd: no leader")


def _member_alarms(lines: list[str], member_hex: str) -> list[str]:
    """etcd words alarms with decimal member ids; status shows them in hex."""
    out = []
    for line in lines:
        m = ALARM_RE.search(line)
        if m and f"{int(m.group(1)):x}" == member_hex:
            out.append(m.group(2))
    return out


def cert_status(host: str, c: CertFact, now: dt.datetime) -> CertStatus:
    days = c.days_left(now)
    return CertStatus(
        host=host,
        path=c.path,
        subject=c.subject,
        expires=c.not_after.isoformat() if c.not_after else None,
        days_left=round(days, 1) if days is not None else None,
    )


def _judge_kubernetes(cluster: Cluster, f: OpsFacts, r: StatusReport, now: dt.datetime) -> None:
    if f.nodes is None:
        r.problems.append("kubernetes: kubectl get nodes gave no answer through admin.conf")
    else:
        r.nodes = f.nodes
        r.judge_nodes(cluster, f.nodes)
    if f.tokens_text is None:
        return
    try:
        tokens = parse_token_list(f.tokens_text)
    except KubeadmOutputError as e:
        r.warnings.append(f"kubeadm token list: unexpected output ({e})")
        return
    r.tokens = [t.public() for t in tokens]
    for t in tokens:
        if t.expires is not None and t.expires - now < dt.timedelta(days=1):
            r.warnings.append(f"bootstrap token {t.token_id} expires at {t.expires.isoformat()}")
