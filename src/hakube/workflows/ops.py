"""What the day-2 commands share: the known shape of the running cluster and an SSH session.

`known_cluster` is the ONE place that decides, for the day-2 commands, which host ran `kubeadm
init` (the recorded one, as apply uses), which hosts run etcd and whether Kubernetes was
installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
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
from hakube.workflows.apply import ssh_transports

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


@contextlib.asynccontextmanager
async def session(
    cluster: Cluster,
    state: StateDir,
    *,
    dry_run: bool = False,
    trust_new_hosts: bool = False,
    phase: str = "",
    **reach: Unpack[Reach],
) -> AsyncIterator[tuple[Context, dict[str, str]]]:
    """A Context (the wet gate, redaction, progress) over SSH, or over given transports.

    Yields the context and the hosts that could not be reached (name → message).
    """
    redactor = redactor_for(state)
    sink = reach.get("emit") or (lambda _e: None)
    transports = reach.get("transports")
    secrets = stored_secrets(state) or Secrets("", "", "", "")
    async with contextlib.AsyncExitStack() as stack:
        errors: dict[str, str] = {}
        conns: dict[str, Transport] = transports or {}
        if transports is None:
            conns, errors = await stack.enter_async_context(
                ssh_transports(cluster, trust_new_hosts=trust_new_hosts, redactor=redactor)
            )
        for name, message in errors.items():
            sink(Event(EventKind.HOST_FAILED, "connect", name, redactor.redact(message)))
        run = RunData(cluster=cluster, secrets=secrets, state=state, dry_run=dry_run)
        ctx = Context.create(run, conns, emit=sink, redactor=redactor)
        ctx.report.phase = phase
        yield ctx, errors


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
