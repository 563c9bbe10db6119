"""What a phase gets, split by role: run data, a facts view, the executor and the reporter.

- `RunData`: the spec, the secrets, the state dir and which phases run: read-only inputs.
- `FactsView`: what each host looks like, and commands that only look (they run in dry-run too).
- `Executor`: the one gate for every mutation. A phase describes a change and hands over the
  action; in a dry run the change is recorded and reported, and the action never runs.
- `Reporter`: events for the progress display and the journal, secrets redacted.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hakube.facts.host import PACKAGES, FileState, HostFacts, Unit, facts_script, parse_facts
from hakube.phases.base import Change, Event, EventKind, EventSink, PhaseError
from hakube.render.base import RenderedFile
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import CommandResult, Redactor, Transport

if TYPE_CHECKING:
    from hakube.pki.cluster import ClusterPKI

#: Blocks the package's postinst from starting a daemon with its stock configuration
#: (a stock etcd would create a single-node data dir; a stock keepalived could grab an address).
NO_AUTOSTART = (
    "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
)
AUTOSTART_BACK = "rm -f /usr/sbin/policy-rc.d"


def sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class RunData:
    """The inputs of one run; nothing here changes while it runs."""

    cluster: Cluster
    secrets: Secrets
    state: StateDir
    #: Phase names selected for this run (preflight only checks what will be used).
    selected: frozenset[str] = frozenset()
    dry_run: bool = False

    def cluster_pki(self) -> ClusterPKI:
        return self.state.cluster_pki()


class Reporter:
    """Events of the run, tagged with the current phase; every message redacted."""

    def __init__(self, sink: EventSink, redactor: Redactor) -> None:
        self.sink = sink
        self.redactor = redactor
        self.phase = ""

    def __call__(self, event: Event) -> None:
        self.sink(event)

    def change(self, host: str, description: str) -> None:
        self.sink(Event(EventKind.CHANGE, self.phase, host, self.redactor.redact(description)))


class FactsView:
    """Facts of every host, and read-only commands and file reads."""

    def __init__(self, transports: dict[str, Transport]) -> None:
        self._transports = transports
        self._facts: dict[str, HostFacts] = {}

    def __getitem__(self, host: Host | str) -> HostFacts:
        return self._facts[host if isinstance(host, str) else host.name]

    def __contains__(self, host: Host | str) -> bool:
        return (host if isinstance(host, str) else host.name) in self._facts

    def set(self, host: Host | str, facts: HostFacts) -> None:
        self._facts[host if isinstance(host, str) else host.name] = facts

    async def gather(self, host: Host, paths: Sequence[str] = ()) -> HostFacts:
        result = await self._transports[host.name].run(facts_script(paths))
        f = parse_facts(result.stdout)
        self._facts[host.name] = f
        return f

    async def read(
        self, host: Host, command: str, *, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        """A command that only looks: it runs in dry-run mode too."""
        return await self._transports[host.name].run(command, check=check, timeout=timeout)

    async def get(self, host: Host, path: str) -> bytes:
        return await self._transports[host.name].get(path)

    def file_is_current(self, host: Host, rf: RenderedFile) -> bool:
        cur = self[host].files.get(rf.path)
        return cur is not None and cur.sha256 == sha256(rf.content) and cur.mode == rf.mode


@dataclass
class Written:
    """What `Executor.ensure_files` changed, as data for what must follow."""

    paths: list[str] = field(default_factory=list)
    #: Units whose files changed (to reload or restart).
    units: set[str] = field(default_factory=set)
    #: A unit file or drop-in changed: systemd must re-read its units first.
    daemon_reload: bool = False
    #: A package repository changed: the package lists are stale.
    package_sources: bool = False

    def __bool__(self) -> bool:
        return bool(self.paths)


#: A mutation handed to the gate; it gets the host's transport and runs only when wet.
Action = Callable[[Transport], Awaitable[object]]


class Executor:
    """The one gate for every mutation (k0sctl's Wet()): record, report, and run unless dry."""

    def __init__(
        self,
        transports: dict[str, Transport],
        facts: FactsView,
        reporter: Reporter,
        *,
        dry_run: bool,
    ) -> None:
        self._transports = transports
        self._facts = facts
        self._reporter = reporter
        self.dry_run = dry_run
        self.changes: list[Change] = []

    async def change(self, host: Host, description: str, action: Action) -> None:
        """Record the change, and perform it unless this is a dry run."""
        self.changes.append(Change(self._reporter.phase, host.name, description, not self.dry_run))
        self._reporter.change(host.name, description)
        if not self.dry_run:
            await action(self._transports[host.name])

    async def sh(
        self, host: Host, description: str, command: str, *, timeout: float | None = None
    ) -> None:
        """A mutating shell command behind the gate."""

        async def go(t: Transport) -> None:
            await t.run(command, timeout=timeout)

        await self.change(host, description, go)

    async def put(self, host: Host, description: str, path: str, content: bytes, mode: int) -> None:
        async def go(t: Transport) -> None:
            await t.put(path, content, mode=mode)

        await self.change(host, description, go)

    async def ensure_files(self, host: Host, files: Sequence[RenderedFile]) -> Written:
        """Write the files that differ; validate each candidate on the host first.

        A candidate that fails validation is removed and the live file is left untouched, so a
        bad config never replaces a running one.
        """
        written = Written()
        for rf in files:
            if self._facts.file_is_current(host, rf):
                continue
            await self.change(host, f"write {rf.path}", _installer(rf, self._reporter.redactor))
            self._facts[host].files[rf.path] = FileState(sha256(rf.content), rf.mode)
            written.paths.append(rf.path)
            if rf.reload:
                written.units.add(rf.reload)
            written.daemon_reload |= rf.daemon_reload
            written.package_sources |= rf.package_source
        return written

    async def daemon_reload(self, host: Host) -> None:
        await self.sh(host, "systemctl daemon-reload", "systemctl daemon-reload")

    async def reload_units(self, host: Host, units: set[str]) -> None:
        """reload-or-restart each unit (enabling it), in name order."""
        for unit in sorted(units):
            await self.sh(
                host,
                f"reload {unit}",
                f"systemctl enable -q {unit} && systemctl reload-or-restart {unit}",
            )
            self._facts[host].units[unit] = Unit(unit, True, "active", "enabled")

    async def ensure_packages(self, host: Host, packages: Sequence[str]) -> None:
        """Install what is missing (never upgrade what is there), without autostarting it."""
        unknown = set(packages) - set(PACKAGES)
        if unknown:  # the facts script would never see them installed: never idempotent
            raise ValueError(f"add {sorted(unknown)} to hakube.facts.host.PACKAGES")
        facts = self._facts[host]
        missing = [p for p in packages if p not in facts.packages]
        if not missing:
            return
        names = " ".join(shlex.quote(p) for p in missing)
        if facts.package_family == "yum":
            cmd = f"yum install -y {names}"
        else:
            cmd = (
                f"{NO_AUTOSTART}; export DEBIAN_FRONTEND=noninteractive; "
                f"(apt-get install -y -q --no-install-recommends {names} || "
                f"(apt-get update -q && apt-get install -y -q --no-install-recommends {names})); "
                f"rc=$?; {AUTOSTART_BACK}; exit $rc"
            )
        await self.sh(host, f"install {' '.join(missing)}", cmd)
        if not self.dry_run:
            for p in missing:
                facts.packages[p] = "installed"

    async def ensure_running(self, host: Host, unit: str) -> None:
        u = self._facts[host].unit(unit)
        if u.running and u.enabled == "enabled":
            return
        await self.sh(host, f"start {unit}", f"systemctl enable -q --now {unit}")
        self._facts[host].units[unit] = Unit(unit, True, "active", "enabled")


def _installer(rf: RenderedFile, redactor: Redactor) -> Action:
    async def install(t: Transport) -> None:
        if rf.validate is None:
            await t.put(rf.path, rf.content.encode(), mode=rf.mode, owner=rf.owner)
            return
        candidate = f"{rf.path}.hakube-new"
        await t.put(candidate, rf.content.encode(), mode=rf.mode, owner=rf.owner)
        q = shlex.quote
        res = await t.run(
            f"if {rf.validate.command(candidate)} >/tmp/.hakube-validate 2>&1; then "
            f"mv -f {q(candidate)} {q(rf.path)}; "
            f"else rc=$?; cat /tmp/.hakube-validate >&2; rm -f {q(candidate)}; exit $rc; fi",
            check=False,
        )
        if not res.ok:
            raise PhaseError(
                f"{rf.path}: the new file failed validation on the host ({rf.validate}, exit "
                f"{res.exit_status}); the running config was left in place:\n"
                f"{redactor.redact(res.stderr_tail(15))}"
            )

    return install


@dataclass
class Context:
    """Everything a phase may use, one attribute per role."""

    run: RunData
    facts: FactsView
    do: Executor
    report: Reporter

    @classmethod
    def create(
        cls,
        run: RunData,
        transports: dict[str, Transport],
        *,
        emit: EventSink = lambda _e: None,
        redactor: Redactor | None = None,
    ) -> Context:
        reporter = Reporter(emit, redactor or Redactor())
        facts = FactsView(transports)
        return cls(run, facts, Executor(transports, facts, reporter, dry_run=run.dry_run), reporter)
