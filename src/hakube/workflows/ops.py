"""What the day-2 commands share: the known shape of the running cluster and an SSH session.

`known_cluster` is the ONE place that decides, for the day-2 commands, which host ran `kubeadm
init` (the recorded one, as apply uses), which hosts run etcd and whether Kubernetes was
installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, TypeVar

from hakube.phases.base import Event, EventKind, EventSink, PhaseError
from hakube.phases.context import Context, RunData
from hakube.phases.kubeadm import recorded_init_host
from hakube.record import load_record
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, EtcdTopology, Host
from hakube.state import StateDir
from hakube.transport.base import Redactor, Transport, TransportError
from hakube.transport.pool import connect_all
from hakube.workflows.apply import ssh_targets

if TYPE_CHECKING:
    from typing_extensions import Unpack


class OpsError(Exception):
    """A day-2 command cannot go on; the message says why and what to do (exit 1)."""


class OpsInputError(OpsError):
    """Bad input for a day-2 command (exit 2): nothing was changed."""


#: What a day-2 command may fail with; the CLI turns each into a message and exit 1 (or 2).
FAILURES = (OpsError, PhaseError, TransportError)


@dataclass(frozen=True)
class ClusterView:
    init_host: Host
    etcd_hosts: list[Host]
    external_etcd: bool
    #: `kubeadm init` ran: hakube fetched admin.conf from the init host into the state dir.
    kubernetes: bool
    #: The state directory exists (secrets and PKI are there to compare with or to use).
    has_state: bool


def known_cluster(cluster: Cluster, state: StateDir) -> ClusterView:
    return ClusterView(
        # As apply sees it: after a reorder or an init-host hand-over, admin.conf is elsewhere.
        init_host=recorded_init_host(cluster, load_record(state.path), state.path),
        etcd_hosts=list(cluster.etcd_hosts),
        external_etcd=cluster.etcd.topology is EtcdTopology.EXTERNAL,
        kubernetes=(state.path / "admin.conf").exists(),
        has_state=state.secrets_file.exists(),
    )


def stored_secrets(state: StateDir) -> Secrets | None:
    """The cluster's secrets if the state dir has them; never generates (day-2 reads only)."""
    return state.secrets(create=False) if state.secrets_file.exists() else None


def redactor_for(state: StateDir) -> Redactor:
    s = stored_secrets(state)
    return Redactor(s.values() if s else ())


class Reach(TypedDict, total=False):
    """How a day-2 command reaches the hosts; every command takes these as keywords."""

    #: Progress events (connect failures, changes); none by default.
    emit: EventSink | None
    #: Transports by host name instead of SSH (the scripted fakes in tests).
    transports: dict[str, Transport] | None


@dataclass
class Live:
    """A session's context and connections, kept across rounds (`status --watch`)."""

    ctx: Context
    #: Hosts without a connection now (name → message, redacted).
    errors: dict[str, str]
    conns: dict[str, Transport]
    #: Connects to some hosts over SSH; None when the transports were given (tests).
    connect: Callable[[list[Host]], Awaitable[tuple[dict[str, Transport], dict[str, str]]]] | None

    async def reconnect(self, names: Iterable[str]) -> None:
        """Connect again to `names` (their connect or their last command failed); the hosts
        that still answer keep their connections."""
        hosts = [h for h in self.ctx.run.cluster.hosts if h.name in set(names)]
        if self.connect is None or not hosts:
            return
        for h in hosts:
            old = self.conns.pop(h.name, None)
            if old is not None:
                with contextlib.suppress(Exception):  # it failed already; only its socket goes
                    await old.close()
        conns, errors = await self.connect(hosts)
        for h in hosts:
            self.errors.pop(h.name, None)
        self.conns.update(conns)  # the context's executor and facts see the same dict
        self.errors.update(errors)


@contextlib.asynccontextmanager
async def live_session(
    cluster: Cluster, state: StateDir, *, phase: str = "", **reach: Unpack[Reach]
) -> AsyncIterator[Live]:
    """A Context (the wet gate, redaction, progress) over SSH, or over given transports.

    Day-2 commands act on hosts apply has reached before, so only pinned host keys are
    accepted, and every one of them changes the cluster for real (none offers a dry run).
    """
    redactor = redactor_for(state)
    sink = reach.get("emit") or (lambda _e: None)
    transports = reach.get("transports")
    secrets = stored_secrets(state) or Secrets("", "", "", "")
    async with contextlib.AsyncExitStack() as stack:

        async def connect(hosts: list[Host]) -> tuple[dict[str, Transport], dict[str, str]]:
            pool = await connect_all(
                ssh_targets(cluster, hosts), trust_new_hosts=False, redactor=redactor
            )
            stack.push_async_callback(pool.close)
            errors = {name: redactor.redact(str(e)) for name, e in pool.errors.items()}
            for name, message in errors.items():
                sink(Event(EventKind.HOST_FAILED, "connect", name, message))
            return dict(pool.transports), errors

        conns, errors = (
            await connect(list(cluster.hosts)) if transports is None else (transports, {})
        )
        run = RunData(cluster=cluster, secrets=secrets, state=state)
        ctx = Context.create(run, conns, emit=sink, redactor=redactor)
        ctx.report.phase = phase
        yield Live(ctx, errors, conns, connect if transports is None else None)


@contextlib.asynccontextmanager
async def session(
    cluster: Cluster, state: StateDir, *, phase: str = "", **reach: Unpack[Reach]
) -> AsyncIterator[tuple[Context, dict[str, str]]]:
    """`live_session` for one command: the context and the hosts that could not be reached
    (name → message, redacted)."""
    async with live_session(cluster, state, phase=phase, **reach) as live:
        yield live.ctx, live.errors


T = TypeVar("T")


async def in_session(
    cluster: Cluster,
    state: StateDir,
    phase: str,
    body: Callable[[Context, dict[str, str]], Awaitable[T]],
    **reach: Unpack[Reach],
) -> T:
    """`body(ctx, errors)` over one `session`: the whole of a day-2 command that needs no more."""
    async with session(cluster, state, phase=phase, **reach) as (ctx, errors):
        return await body(ctx, errors)


def require_reachable(errors: dict[str, str], hosts: list[Host]) -> None:
    down = [h.name for h in hosts if h.name in errors]
    if down:
        detail = "; ".join(errors[n] for n in down)
        raise OpsError(f"cannot reach {', '.join(down)}: {detail}")
