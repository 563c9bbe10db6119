"""Phases: small named steps, each check-then-apply, run by a workflow over many hosts.

A phase reads facts, compares them with what the spec wants, and changes only what differs.
Every mutation goes through `ctx.do` (the executor, the one "wet" gate), so `--dry-run` records
exactly what would change and runs nothing that mutates. Each phase renders its own files.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from hakube.render.base import RenderedFile
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, Host

if TYPE_CHECKING:
    from hakube.facts.host import HostFacts
    from hakube.phases.context import Context


class EventKind(StrEnum):
    PHASE_START = "phase-start"
    PHASE_DONE = "phase-done"
    PHASE_SKIPPED = "phase-skipped"
    HOST_START = "host-start"
    HOST_DONE = "host-done"
    HOST_FAILED = "host-failed"
    CHANGE = "change"
    RESUME = "resume"
    #: Hosts joining or recorded hosts missing from the file (see hakube.membership).
    MEMBERSHIP = "membership"
    #: `hakube apply phase NAME`: what the phase needs before it, found done in the record.
    NEEDS = "needs"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    phase: str = ""
    host: str = ""
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": self.kind.value,
            "phase": self.phase,
            "host": self.host,
            "message": self.message,
            **({"data": self.data} if self.data else {}),
        }


EventSink = Callable[[Event], None]


@dataclass(frozen=True)
class Change:
    phase: str
    host: str
    description: str
    applied: bool


class PhaseError(Exception):
    """A phase cannot go on for one host; the message says why and what to do."""


@dataclass(frozen=True)
class RenderInput:
    """What a phase renders one host's files from: the spec, the run's secrets and, in `apply`,
    the host's facts (OS family, codename); `plan` renders without facts."""

    cluster: Cluster
    host: Host
    secrets: Secrets
    facts: HostFacts | None = None


class Phase(ABC):
    """One named step. Subclasses set `name` (hierarchical, e.g. ``lb/haproxy``); the class
    docstring is the `summary` that `plan` shows."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: Run the hosts one after another (e.g. rolling LB reloads, control-plane joins).
    serial: ClassVar[bool] = False
    #: Rolling phases with the same `roll` name run host by host together: all of them on one
    #: host, `between_hosts`, then the next host (HAProxy, keepalived and the check script of
    #: one LB host are updated together).
    roll: ClassVar[str] = ""
    #: Managed paths the host itself creates (kubeadm's kubeconfigs): never sent from here.
    made_on_host: ClassVar[tuple[str, ...]] = ()
    #: Phases that must have completed before this one runs alone (`hakube apply phase NAME`),
    #: on the same host where they target it, else on any of their hosts (see `unmet_needs`).
    needs: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The docstring says what the phase does; one text serves readers and the CLI.
        if "name" in cls.__dict__ and "summary" not in cls.__dict__:
            if not cls.__doc__:
                raise TypeError(f"phase {cls.name}: its docstring is its summary; write one")
            cls.summary = " ".join(cls.__doc__.split())

    def targets(self, cluster: Cluster) -> list[Host]:
        """Hosts this phase touches, in order (default: every host in the file)."""
        return list(cluster.hosts)

    async def between_hosts(self, ctx: Context, host: Host) -> None:  # noqa: B027 - optional
        """In a roll, after `host` changed and before the next host (e.g. wait for the front)."""

    def rolling(self, ctx: Context) -> bool:
        """Run the hosts one after another this time (default: `serial`)."""
        return self.serial

    def hosts(self, ctx: Context) -> list[Host]:
        """Hosts this run touches: `targets`, unless the recorded cluster says otherwise (the
        host that ran kubeadm init stays that host whatever the order in the file)."""
        return self.targets(ctx.run.cluster)

    def packages(self, cluster: Cluster, host: Host) -> list[str]:
        """Packages this phase needs on the host; `packages` installs them all in one go."""
        return []

    def files(self, on: RenderInput) -> list[RenderedFile]:
        """Files this phase writes on the host, from its own renderer (pure)."""
        return []

    def files_for(self, ctx: Context, host: Host) -> list[RenderedFile]:
        """This phase's files for `host` in this run, rendered with the host's facts.

        Sorted by path, the order they are installed in: that puts check_apiserver.sh before
        keepalived.conf (whose validation needs the script) and modules-load.d before sysctl.d.
        """
        files = self.files(RenderInput(ctx.run.cluster, host, ctx.run.secrets, ctx.facts[host]))
        return sorted(files, key=lambda f: f.path)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        """Files the phase manages that are not rendered from the spec (PKI), as (path, mode)."""
        return []

    @abstractmethod
    async def run(self, ctx: Context, host: Host) -> None:
        """Check-then-apply on one host; mutate only through `ctx.do`."""

    async def finish(self, ctx: Context) -> None:  # noqa: B027 - optional hook, most need none
        """Once, after every target host succeeded (e.g. wait for a cluster to be healthy)."""

    def matches(self, selector: str) -> bool:
        """`kubeadm` selects every `kubeadm/...` phase; `lb/haproxy` selects just that one."""
        return self.name == selector or self.name.startswith(selector.rstrip("/") + "/")


def select_phases(
    phases: Sequence[Phase], *, only: Sequence[str] = (), skip: Sequence[str] = ()
) -> tuple[list[Phase], list[Phase]]:
    """Split a workflow into (to run, skipped) by `--only` and `--skip-phases` selectors.

    Unknown selectors are an error so that a typo never silently runs everything.
    """
    names = [p.name for p in phases]
    for sel in [*only, *skip]:
        if not any(p.matches(sel) for p in phases):
            raise ValueError(f"unknown phase {sel!r}; phases are: {', '.join(names)}")
    run: list[Phase] = []
    skipped: list[Phase] = []
    for p in phases:
        wanted = not only or any(p.matches(s) for s in only)
        if wanted and not any(p.matches(s) for s in skip):
            run.append(p)
        else:
            skipped.append(p)
    return run, skipped


def unmet_needs(
    phases: Sequence[Phase],
    selected: Sequence[Phase],
    cluster: Cluster,
    done: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, list[str]]]:
    """Selected phase -> need -> hosts where the need never completed (`done`: phase -> hosts
    it completed on, from the record). A need selected in the same run is met by running it
    first; a need with no host in this cluster (no VIP, stacked etcd) is met by itself. A need
    that targets the host must have completed there (a new worker has no runtime yet); one that
    does not (kubeadm/init, on the init host) must have completed somewhere."""
    by_name = {p.name: p for p in phases}
    chosen = {p.name for p in selected}
    out: dict[str, dict[str, list[str]]] = {}
    for p in selected:
        for need in p.needs:
            wanted = {t.name for t in by_name[need].targets(cluster)}
            if need in chosen or not wanted:
                continue
            ran = set(done.get(need, ()))
            missing = [h.name for h in p.targets(cluster)
                       if (h.name not in ran if h.name in wanted else not ran)]  # fmt: skip
            if missing:
                out.setdefault(p.name, {})[need] = missing
    return out


async def gather_hosts(
    hosts: Sequence[Host],
    body: Callable[[Host], Awaitable[None]],
    *,
    serial: bool = False,
) -> dict[str, BaseException]:
    """Run `body` for every host; failures are returned by host name.

    Concurrent phases let every host finish; serial (rolling) phases stop at the first failure
    so that one bad host never takes the next one down too.
    """
    failures: dict[str, BaseException] = {}

    async def one(h: Host) -> None:
        try:
            await body(h)
        except Exception as e:
            failures[h.name] = e

    if serial:
        for h in hosts:
            await one(h)
            if failures:
                break
    else:
        await asyncio.gather(*(one(h) for h in hosts))
    return failures
