"""apply: converge hosts into the cluster the spec describes, phase by phase.

connect → facts → preflight → prepare → packages → runtime → lb → etcd → kubeadm/init →
kubeadm/join-control-planes → cni → kubeadm/join-workers → verify
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakube.fileio import exclusive_lock, write_private
from hakube.membership import (
    Membership,
    MembershipError,
    host_entry,
    init_successor,
    leaving_hosts,
    membership,
)
from hakube.phases.base import (
    Change,
    Event,
    EventKind,
    EventSink,
    Phase,
    PhaseError,
    RenderInput,
    gather_hosts,
    select_phases,
    unmet_needs,
)
from hakube.phases.cni import CNIPhase
from hakube.phases.context import Context, RunData
from hakube.phases.etcd import EtcdPhase
from hakube.phases.etcd_endpoints import EtcdEndpoints
from hakube.phases.host import PackagesPhase, Preflight, Prepare, RuntimePhase
from hakube.phases.kubeadm import (
    JoinControlPlanes,
    JoinWorkers,
    KubeadmInit,
    KubePackages,
)
from hakube.phases.lb import HAProxyPhase, KeepalivedPhase, WaitVIP
from hakube.phases.remove import Handover, Removal, RemoveHosts
from hakube.phases.verify import Verify, VerifyReport
from hakube.record import RECORD_FILE, ClusterRecord, RecordError, load_record
from hakube.spec.checks import missing_key_files
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import Redactor, Transport, TransportError
from hakube.transport.pool import connect_all
from hakube.transport.target import SSHTarget


def apply_phases() -> list[Phase]:
    """The apply workflow: an ordered, editable list."""
    return [
        Preflight(),
        Prepare(),
        PackagesPhase(),
        RuntimePhase(),
        HAProxyPhase(),
        KeepalivedPhase(),
        WaitVIP(),
        EtcdEndpoints(),
        EtcdPhase(),
        KubePackages(),
        KubeadmInit(),
        JoinControlPlanes(),
        CNIPhase(),
        JoinWorkers(),
        Verify(),
    ]


@dataclass
class HostFailure:
    host: str
    phase: str
    message: str


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    failures: list[HostFailure] = field(default_factory=list)
    phases_run: list[str] = field(default_factory=list)
    phases_skipped: list[str] = field(default_factory=list)
    report: VerifyReport | None = None
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "changes": [c.__dict__ for c in self.changes],
            "failures": [f.__dict__ for f in self.failures],
            "phases_run": self.phases_run,
            "phases_skipped": self.phases_skipped,
            "report": self.report.as_dict() if self.report else None,
        }


class ApplyLocked(Exception):
    pass


#: The cluster locks this run holds (a context variable: tasks started under the block inherit
#: it, another thread or an unrelated task does not).
_held_locks: contextvars.ContextVar[frozenset[Path]] = contextvars.ContextVar(
    "hakube_held_locks", default=frozenset()
)


@contextlib.contextmanager
def cluster_lock(state: StateDir) -> Iterator[None]:
    """One apply per cluster at a time (flock: released by the kernel if we die).

    A dry run against a cluster with no state directory yet has nothing to protect, and must
    not create one. Re-entrant within one run (the asyncio tasks and calls under the block): a
    command that holds the lock may call `apply` under it, as `reset --host` does between the
    host leaving and its reset, so that no other run slips in between.
    """
    lock = state.path / "lock"
    if lock in _held_locks.get() or (not state.persist and not lock.exists()):
        yield
        return
    state.ensure()
    busy = f"another hakube run holds {lock}; wait for it to finish"
    with exclusive_lock(lock, lambda: ApplyLocked(busy)):
        token = _held_locks.set(_held_locks.get() | {lock})
        try:
            yield
        finally:
            _held_locks.reset(token)


def ssh_targets(cluster: Cluster, hosts: Sequence[Host] | None = None) -> list[SSHTarget]:
    out = []
    for h in cluster.hosts if hosts is None else hosts:
        s = cluster.ssh_for(h)
        out.append(
            SSHTarget(
                name=h.name,
                address=str(h.ssh_address or h.address),
                port=s.port,
                user=s.user,
                key_file=s.key_file,
                known_hosts=s.known_hosts or Path("~/.ssh/known_hosts").expanduser(),
                sudo=s.use_sudo,
                connect_timeout=s.connect_timeout,
            )
        )
    return out


class Journal:
    """Append-only record of phases done, with secrets redacted, for resume and audit."""

    def __init__(self, state: StateDir, redactor: Redactor) -> None:
        self.dir = state.path / "logs"
        #: A dry run writes nothing locally: its events go to the caller only.
        self.enabled = state.persist
        if self.enabled:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.log = self.dir / f"apply-{stamp}-{os.getpid()}.jsonl"
        self.redactor = redactor
        self.journal = state.path / "journal.json"

    def event(self, e: Event) -> None:
        if not self.enabled:
            return
        line = self.redactor.redact(json.dumps(e.as_dict()))
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def unfinished(self) -> list[str] | None:
        """Phases a previous run completed before it stopped early; None if it finished."""
        try:
            data = json.loads(self.journal.read_text())
        except (OSError, ValueError):
            return None
        if data.get("finished", True):
            return None
        done: list[str] = data.get("done", [])
        return done

    def record(self, done: list[str], finished: bool) -> None:
        body = {"done": done, "finished": finished, "at": time.time()}
        write_private(self.journal, json.dumps(body).encode())


@contextlib.asynccontextmanager
async def ssh_transports(
    cluster: Cluster, *, trust_new_hosts: bool, redactor: Redactor, record_new_keys: bool = True
) -> AsyncIterator[tuple[dict[str, Transport], dict[str, str]]]:
    pool = await connect_all(
        ssh_targets(cluster),
        trust_new_hosts=trust_new_hosts,
        redactor=redactor,
        record_new_keys=record_new_keys,
    )
    try:
        errors = {name: str(err) for name, err in pool.errors.items()}
        yield dict(pool.transports), errors
    finally:
        await pool.close()


async def apply(
    cluster: Cluster,
    *,
    state: StateDir | None = None,
    dry_run: bool = False,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    trust_new_hosts: bool = False,
    emit: EventSink | None = None,
    transports: dict[str, Transport] | None = None,
    phases: Callable[[], list[Phase]] = apply_phases,
    prune: bool = False,
    leaving_from: Sequence[Host] = (),
    alone: bool = False,
) -> ApplyResult:
    """Converge the cluster. With `transports` given (tests), no SSH connection is made.

    Raises RecordError (a ValueError) before contacting any host when the cluster file changes
    a setting fixed at init, and MembershipError (a ValueError) when recorded hosts left the
    file and `prune` is not set. `leaving_from`: entries of leaving hosts the record has no
    address for (`node remove` of a host still in the file). `alone` (`hakube apply phase`):
    the selected phases run without the ones before them, so PhaseNeedsError (a ValueError)
    is raised before contacting any host when the record shows that one they need never ran.
    """
    state = state or StateDir(cluster.name)
    if dry_run:
        state = state.read_only()
    result = ApplyResult(dry_run=dry_run)
    started = time.monotonic()
    workflow = phases()
    to_run, skipped = select_phases(workflow, only=only, skip=skip)
    result.phases_skipped = [p.name for p in skipped]
    if transports is None:
        _refuse_missing_keys(cluster)
    with cluster_lock(state):
        # Before the record is read (a first read creates it): a refusal leaves nothing behind.
        needs_met = _needs_met(workflow, to_run, cluster, state) if alone else []
        record = state.record()
        problems = record.check_settings(cluster)
        if problems:
            raise RecordError("\n".join(problems))
        members = membership(cluster, record)
        if members.leaving and not prune:
            raise MembershipError(members.refusal())
        removal = _removal(cluster, record, members, leaving_from) if members.leaving else None
        if removal is not None:
            to_run = with_removal(to_run, removal)
        secrets = state.secrets()
        redactor = Redactor(secrets.values())
        journal = Journal(state, redactor)
        sink = emit or (lambda _e: None)

        def both(e: Event) -> None:
            journal.event(e)
            sink(e)

        for line in members.lines():
            both(Event(EventKind.MEMBERSHIP, message=line))
        for line in needs_met:
            both(Event(EventKind.NEEDS, message=line))
        previous = journal.unfinished()
        if previous is not None and not dry_run:
            # Every phase checks before it changes, so resuming is simply running again.
            last = previous[-1] if previous else "none"
            both(Event(EventKind.RESUME, message=f"the last run stopped early (last phase done: "
                                                 f"{last}); resuming"))  # fmt: skip

        async with contextlib.AsyncExitStack() as stack:
            errors: dict[str, str] = {}
            conns: dict[str, Transport] = transports or {}
            if transports is None:
                both(Event(EventKind.PHASE_START, "connect"))
                conns, errors = await stack.enter_async_context(
                    ssh_transports(
                        cluster,
                        trust_new_hosts=trust_new_hosts,
                        redactor=redactor,
                        # A dry run writes nothing locally, known_hosts included.
                        record_new_keys=not dry_run,
                    )
                )
                both(Event(EventKind.PHASE_DONE, "connect"))
            if removal is not None:
                conns = {**conns, **await _connect_leaving(
                    stack, cluster, removal, trust_new_hosts, redactor, both, given=transports,
                    record_new_keys=not dry_run,
                )}  # fmt: skip
            run = RunData(
                cluster=cluster,
                secrets=secrets,
                state=state,
                selected=frozenset(p.name for p in to_run),
                dry_run=dry_run,
                record=record,
            )
            ctx = Context.create(run, conns, emit=both, redactor=redactor)
            for name, message in errors.items():
                result.failures.append(HostFailure(name, "connect", message))
                both(Event(EventKind.HOST_FAILED, "connect", name, message))
            if not result.failures:
                await _facts(ctx, to_run, result)
            if not result.failures:
                await _phases(ctx, to_run, result, journal)
            result.changes = ctx.do.changes
            result.report = next((p.result for p in to_run if isinstance(p, Verify)), None)
    result.seconds = time.monotonic() - started
    return result


class PhaseNeedsError(ValueError):
    """`hakube apply phase NAME`: a phase it needs never completed (per the record)."""


def _needs_met(
    workflow: list[Phase],
    to_run: list[Phase],
    cluster: Cluster,
    state: StateDir,
) -> list[str]:
    """What each selected phase needs before it, all met; else PhaseNeedsError naming what is
    missing and where."""
    record = load_record(state.path)
    unmet = unmet_needs(workflow, to_run, cluster, record.phases_done if record else {})
    if unmet:
        lines = [
            f"{phase} needs {need} first, which never completed on {', '.join(hosts)}"
            for phase, needs in unmet.items()
            for need, hosts in needs.items()
        ]
        first = next(iter(next(iter(unmet.values()))))
        raise PhaseNeedsError(
            "\n".join(lines) + f"\n(the record, {state.path / RECORD_FILE}, lists every phase "
            f"that completed and where). Run `hakube apply` (every phase in order), or `hakube "
            f"apply phase {first}` first. Nothing was changed."
        )
    return [
        f"{p.name} needs {', '.join(p.needs)} before it: met (run before, as the record "
        "shows, selected now, or not used by this cluster)"
        for p in to_run
        if p.needs
    ]


def _refuse_missing_keys(cluster: Cluster) -> None:
    """Before anything is created or contacted: a key that is not there would fail every host."""
    missing = missing_key_files(cluster)
    if missing:
        raise ValueError(
            "; ".join(f"{p.path}: {p.message}" for p in missing)
            + " (nothing was changed: create the key or correct the path)"
        )


async def _facts(ctx: Context, to_run: list[Phase], result: ApplyResult) -> None:
    ctx.report.phase = "facts"
    ctx.report(Event(EventKind.PHASE_START, "facts"))
    cluster = ctx.run.cluster

    targets: dict[str, set[str]] = {}
    for p in to_run:
        try:
            targets[p.name] = {t.name for t in p.hosts(ctx)}
        except PhaseError as e:  # e.g. the recorded init host left the file: nothing may run
            _record_failures(ctx, p.name, {"*": e}, result)
            return

    async def one(h: Host) -> None:
        # Which files exist does not depend on the facts (only their content does).
        paths: list[str] = []
        for p in to_run:
            if h.name in targets[p.name]:
                ctx.run.wanted_packages.setdefault(h.name, []).extend(p.packages(cluster, h))
                paths += [f.path for f in p.files(RenderInput(cluster, h, ctx.run.secrets))]
                paths += [path for path, _ in p.extra_paths(cluster, h)]
        facts = await ctx.facts.gather(h, paths)
        assert ctx.run.record is not None
        problem = ctx.run.record.check_host_id(h.name, facts.cluster_id)
        if problem:
            raise PhaseError(problem)

    failures = await gather_hosts(cluster.hosts, one)
    _record_failures(ctx, "facts", failures, result)
    if not failures:  # every host answered with this cluster's id: reachable for a removal
        ctx.run.remember(lambda r: r.reached({h.name: host_entry(h) for h in cluster.hosts}))
    ctx.report(Event(EventKind.PHASE_DONE, "facts"))


def _record_failures(
    ctx: Context, phase: str, failures: dict[str, BaseException], result: ApplyResult
) -> None:
    for host, exc in failures.items():
        msg = ctx.report.redactor.redact(str(exc))
        if not isinstance(exc, (PhaseError, TransportError)):
            msg = f"{type(exc).__name__}: {msg}"  # a bug or an unexpected state: say what
        result.failures.append(HostFailure(host, phase, msg))
        ctx.report(Event(EventKind.HOST_FAILED, phase, host, msg))


async def _phases(ctx: Context, to_run: list[Phase], result: ApplyResult, journal: Journal) -> None:
    done: list[str] = []
    if not ctx.run.dry_run:
        journal.record(done, finished=False)  # a run killed from here on is "unfinished"
    i = 0
    while i < len(to_run):
        group = _group(ctx, to_run, i)
        i += len(group)
        hosts = {p.name: p.hosts(ctx) for p in group}
        for phase in group:
            if not hosts[phase.name]:
                ctx.report(Event(EventKind.PHASE_SKIPPED, phase.name, message="no host needs it"))
        group = [p for p in group if hosts[p.name]]
        if not group:
            continue
        for phase in group:
            names = [h.name for h in hosts[phase.name]]
            ctx.report(Event(EventKind.PHASE_START, phase.name, data={"hosts": names}))
        before = len(ctx.do.changes)
        if not (group[0].roll and group[0].rolling(ctx)):
            (phase,) = group
            ctx.report.phase = phase.name
            failures = await gather_hosts(
                hosts[phase.name], functools.partial(_host, ctx, phase), serial=phase.rolling(ctx)
            )
            failed = {phase.name: failures} if failures else {}
        else:
            failed = await _roll(ctx, group, hosts)
        for phase in group:
            if failed:
                break
            try:
                await phase.finish(ctx)
            except Exception as e:  # a cluster-wide wait: blame the phase, not a host
                failed = {phase.name: {"*": e}}
        for name, failures in failed.items():
            _record_failures(ctx, name, failures, result)
        if failed:
            if not ctx.run.dry_run:  # the journal records what really ran
                journal.record(done, finished=False)
            return
        for phase in group:
            result.phases_run.append(phase.name)
            done.append(phase.name)
            ctx.run.remember(
                functools.partial(ClusterRecord.phase_done, phase=phase.name,
                                  hosts=[h.name for h in hosts[phase.name]])
            )  # fmt: skip
            changed = len([c for c in ctx.do.changes[before:] if c.phase == phase.name])
            ctx.report(Event(EventKind.PHASE_DONE, phase.name, data={"changes": changed}))
            if not ctx.run.dry_run:
                journal.record(done, finished=phase is to_run[-1])


def _group(ctx: Context, to_run: list[Phase], start: int) -> list[Phase]:
    """The phase at `start`, with the phases after it that roll together with it."""
    first = to_run[start]
    if not first.roll or not first.rolling(ctx):
        return [first]
    group = [first]
    for p in to_run[start + 1 :]:
        if p.roll != first.roll or not p.rolling(ctx):
            break
        group.append(p)
    return group


async def _roll(
    ctx: Context, group: list[Phase], hosts: dict[str, list[Host]]
) -> dict[str, dict[str, BaseException]]:
    """One host at a time through every phase of the group; stop at the first failure."""
    order = list({h.name: h for p in group for h in hosts[p.name]}.values())
    for host in order:
        before = len(ctx.do.changes)
        for phase in group:
            if host not in hosts[phase.name]:
                continue
            ctx.report.phase = phase.name
            try:
                await _host(ctx, phase, host)
            except Exception as e:
                return {phase.name: {host.name: e}}
        changed = any(c.host == host.name for c in ctx.do.changes[before:])
        if changed and not ctx.run.dry_run:
            try:
                await group[-1].between_hosts(ctx, host)
            except Exception as e:
                return {group[-1].name: {host.name: e}}
    return {}


async def _host(ctx: Context, phase: Phase, host: Host) -> None:
    ctx.report(Event(EventKind.HOST_START, phase.name, host.name))
    await phase.run(ctx, host)
    ctx.report(Event(EventKind.HOST_DONE, phase.name, host.name))


def _removal(
    cluster: Cluster, record: ClusterRecord, members: Membership, known: Sequence[Host]
) -> Removal:
    """The leaving hosts, and the survivor that takes the init host's role when it leaves (handed
    over once the removal passed its refusal checks: a refused removal records nothing)."""
    names = set(members.leaving_names())
    successor = None
    if record.init_host in names:
        successor = init_successor(cluster, record)
        if successor is None:
            raise MembershipError(
                f"{record.init_host} ran kubeadm init and leaves, but no control plane in the "
                "file has joined (none is recorded): join one first, then remove it"
            )
    hosts = leaving_hosts(record, members.leaving)
    for h in known:
        if hosts.get(h.name, h) is None:
            hosts[h.name] = h
    return Removal(members.leaving, hosts, init_successor=successor)


def with_removal(to_run: list[Phase], removal: Removal) -> list[Phase]:
    """The refusal checks and the VIP handover right after preflight (a refused removal changes
    nothing); the removal itself after the load-balancer phases, which drop the leaving backends
    from the survivors' configs while those backends still answer, and after the apiservers'
    etcd lists dropped the leaving members (no apiserver asks a member that is going away)."""
    out = list(to_run)
    names = [p.name for p in out]
    first = names.index("preflight") + 1 if "preflight" in names else 0
    out.insert(first, Handover(removal))
    before = [i for i, p in enumerate(out) if p.name.startswith("lb/") or p is _endpoints(out)]
    out.insert(before[-1] + 1 if before else first + 1, RemoveHosts(removal))
    return out


def _endpoints(phases: list[Phase]) -> Phase | None:
    return next((p for p in phases if isinstance(p, EtcdEndpoints)), None)


async def _connect_leaving(
    stack: contextlib.AsyncExitStack,
    cluster: Cluster,
    removal: Removal,
    trust_new_hosts: bool,
    redactor: Redactor,
    emit: EventSink,
    *,
    given: dict[str, Transport] | None,
    record_new_keys: bool = True,
) -> dict[str, Transport]:
    """Connections to the leaving hosts; one that does not answer is unreachable, not a failure."""
    hosts = [h for h in removal.hosts.values() if h is not None]
    if given is not None:
        conns = {h.name: given[h.name] for h in hosts if h.name in given}
        errors = {h.name: "no transport" for h in hosts if h.name not in given}
    else:
        pool = await connect_all(
            ssh_targets(cluster, hosts),
            trust_new_hosts=trust_new_hosts,
            redactor=redactor,
            record_new_keys=record_new_keys,
        )
        stack.push_async_callback(pool.close)
        conns = dict(pool.transports)
        errors = {name: str(err) for name, err in pool.errors.items()}
    for name, why in errors.items():
        removal.unreachable.add(name)
        emit(Event(EventKind.MEMBERSHIP, "connect", name, f"{name} is unreachable ({why}): "
                   "the steps on it are skipped"))  # fmt: skip
    for name, host in removal.hosts.items():
        if host is None:
            removal.unreachable.add(name)
            emit(Event(EventKind.MEMBERSHIP, "connect", name, f"{name} has no recorded address "
                       "(recorded by an older hakube): the steps on it are skipped"))  # fmt: skip
    return conns


def run_apply(cluster: Cluster, **kwargs: Any) -> ApplyResult:
    return asyncio.run(apply(cluster, **kwargs))
