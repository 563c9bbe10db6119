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

from hakube.facts.host import (
    PACKAGES,
    POLICY_MARK,
    POLICY_RC,
    FileState,
    HostFacts,
    Unit,
    facts_script,
    parse_facts,
)
from hakube.phases.base import Change, Event, EventKind, EventSink, PhaseError
from hakube.record import ClusterRecord
from hakube.render.base import RenderedFile
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import CommandResult, Redactor, Transport

if TYPE_CHECKING:
    from hakube.pki.cluster import ClusterPKI


class Timeout:
    """Seconds a remote command may take, by kind; none runs without a limit."""

    READ = 60.0
    CHANGE = 300.0
    #: apt waits up to APT_LOCK_WAIT for a running unattended-upgrades, then installs.
    INSTALL = 1200.0
    KUBEADM = 900.0


#: Seconds apt waits for the dpkg lock instead of failing while unattended-upgrades runs.
APT_LOCK_WAIT = 300
APT_GET = f"apt-get -o DPkg::Lock::Timeout={APT_LOCK_WAIT}"

#: Blocks the package's postinst from starting a daemon with its stock configuration (a stock
#: etcd would create a single-node data dir; a stock keepalived could grab an address). An
#: existing policy-rc.d is kept aside and put back by `restore_rc`, which the EXIT trap runs
#: too, so a dropped SSH session (HUP/PIPE) or a timeout never leaves services unable to start.
#: Install output goes to a mktemp log so that a closed session does not stop apt midway.
NO_AUTOSTART = (
    f"p={POLICY_RC}; b=$(mktemp {POLICY_RC}.hakube-saved.XXXXXX) || exit 1; "
    "log=$(mktemp) || exit 1; restored=; "
    'restore_rc() { [ -n "$restored" ] && return 0; restored=1; '
    'if [ -s "$b" ]; then mv -f "$b" "$p"; else rm -f "$b" "$p"; fi; rm -f "$log"; }; '
    "trap restore_rc EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; "
    "trap 'exit 143' TERM; "
    'if [ -e "$p" ]; then cat "$p" > "$b"; fi; '
    f"printf '#!/bin/sh\\n{POLICY_MARK}\\nexit 101\\n' > \"$p.new\" && "
    'chmod 755 "$p.new" && mv -f "$p.new" "$p"'
)
AUTOSTART_BACK = "restore_rc"
#: Packages that restart a service when upgraded: held, so that an unattended upgrade never
#: restarts them on every host at once.
HELD = ("haproxy", "keepalived", "etcd-server", "etcd-client", "containerd", "docker.io")


def detached(script: str) -> str:
    """`script` in a session of its own, so that a dropped SSH connection (SIGHUP to the
    session) neither stops apt halfway nor lifts the autostart guard while apt still runs: the
    install finishes, then its own trap puts policy-rc.d back. Output comes back through files.
    """
    return (
        "o=$(mktemp) && e=$(mktemp) || exit 1; "
        f'setsid -w bash -c {shlex.quote(script)} >"$o" 2>"$e" </dev/null; rc=$?; '
        'cat "$o"; cat "$e" >&2; rm -f "$o" "$e"; exit $rc'
    )


def owner_of(rf: RenderedFile) -> str:
    """user:group the file must have (a bare user means the group of the same name)."""
    return rf.owner if ":" in rf.owner else f"{rf.owner}:{rf.owner}"


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
    #: The recorded cluster; changed only through `remember`, after verification.
    record: ClusterRecord | None = None
    #: Host -> packages the selected phases need there (installed together by `packages`).
    wanted_packages: dict[str, list[str]] = field(default_factory=dict)

    def cluster_pki(self) -> ClusterPKI:
        return self.state.cluster_pki()

    def remember(self, update: Callable[[ClusterRecord], None]) -> None:
        """Change the recorded cluster and save it; never in a dry run."""
        if self.record is None or self.dry_run:
            return
        update(self.record)
        self.state.save_record(self.record)


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
        result = await self._transports[host.name].run(facts_script(paths), timeout=Timeout.READ)
        f = parse_facts(result.stdout)
        self._facts[host.name] = f
        return f

    async def read(
        self, host: Host, command: str, *, check: bool = True, timeout: float = Timeout.READ
    ) -> CommandResult:
        """A command that only looks: it runs in dry-run mode too."""
        return await self._transports[host.name].run(command, check=check, timeout=timeout)

    async def get(self, host: Host, path: str) -> bytes:
        return await self._transports[host.name].get(path)

    def file_is_current(self, host: Host, rf: RenderedFile) -> bool:
        cur = self[host].files.get(rf.path)
        return (
            cur is not None
            and cur.sha256 == sha256(rf.content)
            and cur.mode == rf.mode
            and cur.owner == owner_of(rf)
        )


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
        self, host: Host, description: str, command: str, *, timeout: float = Timeout.CHANGE
    ) -> None:
        """A mutating shell command behind the gate."""

        async def go(t: Transport) -> None:
            await t.run(command, timeout=timeout)

        await self.change(host, description, go)

    async def put(self, host: Host, description: str, path: str, content: bytes, mode: int) -> None:
        async def go(t: Transport) -> None:
            await t.put(path, content, mode=mode, owner="root:root")

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
            cur = self._facts[host].files.get(rf.path)
            want = FileState(sha256(rf.content), rf.mode, owner_of(rf))
            if cur is not None and (cur.sha256, cur.mode) == (want.sha256, want.mode):
                q = shlex.quote
                await self.sh(
                    host,
                    f"chown {want.owner} {rf.path} (was {cur.owner or 'unknown'})",
                    f"chown {q(want.owner)} {q(rf.path)}",
                )
            else:
                await self.change(host, f"write {rf.path}", _installer(rf, self._reporter.redactor))
            self._facts[host].files[rf.path] = want
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

    async def ensure_packages(
        self,
        host: Host,
        packages: Sequence[str],
        remember: Callable[[dict[str, str]], None] = lambda _v: None,
    ) -> None:
        """Install what is missing (never upgrade what is there) in one apt transaction,
        without autostarting it; hold the ones whose upgrade would restart a service.
        `remember` gets the versions the package manager reports for what it installed."""
        unknown = set(packages) - set(PACKAGES)
        if unknown:  # the facts script would never see them installed: never idempotent
            raise ValueError(f"add {sorted(unknown)} to hakube.facts.host.PACKAGES")
        facts = self._facts[host]
        if facts.package_family != "apt":  # preflight refuses these hosts with the reason
            raise PhaseError(f"{facts.os.name!r} has no apt: not supported")
        missing = [p for p in packages if p not in facts.packages]
        hold = [p for p in packages if p in HELD and p not in facts.held]
        q = shlex.quote
        if missing:
            names = " ".join(q(p) for p in missing)
            holds = " ".join(q(p) for p in hold)
            install = f"{APT_GET} install -y -q --no-install-recommends {names}"
            script = (
                f"{NO_AUTOSTART}; export DEBIAN_FRONTEND=noninteractive; "
                f'({install} || ({APT_GET} update -q && {install})) >"$log" 2>&1'
                + (f' && apt-mark hold {holds} >>"$log"' if hold else "")
                + '; rc=$?; [ $rc = 0 ] || tail -n 20 "$log" >&2; '
                f"dpkg-query -W -f='${{Package}} ${{Version}}\\n' {names} 2>/dev/null; "
                f"{AUTOSTART_BACK}; exit $rc"
            )
            what = f"install {' '.join(missing)}" + (f", hold {' '.join(hold)}" if hold else "")

            async def go(t: Transport) -> None:
                res = await t.run(detached(script), timeout=Timeout.INSTALL)
                remember(
                    dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
                )

            await self.change(host, what, go)
        elif hold:
            await self.sh(host, f"hold {' '.join(hold)}", f"apt-mark hold {' '.join(hold)}")
        # A dry run plans on the host as it would be, so later phases do not plan it again.
        for p in missing:
            facts.packages[p] = "installed"
        facts.held.update(hold)

    async def ensure_running(self, host: Host, unit: str) -> None:
        u = self._facts[host].unit(unit)
        if u.running and u.enabled == "enabled":
            return
        await self.sh(host, f"start {unit}", f"systemctl enable -q --now {unit}")
        self._facts[host].units[unit] = Unit(unit, True, "active", "enabled")


def _installer(rf: RenderedFile, redactor: Redactor) -> Action:
    async def install(t: Transport) -> None:
        if rf.validate is None:
            await t.put(rf.path, rf.content.encode(), mode=rf.mode, owner=owner_of(rf))
            return
        candidate = f"{rf.path}.hakube-new"
        await t.put(candidate, rf.content.encode(), mode=rf.mode, owner=owner_of(rf))
        q = shlex.quote
        res = await t.run(
            f"out=$(mktemp) || exit 1; trap 'rm -f \"$out\"' EXIT; "
            f'if {rf.validate.command(candidate)} >"$out" 2>&1; then '
            f"mv -f {q(candidate)} {q(rf.path)}; "
            f'else rc=$?; cat "$out" >&2; rm -f {q(candidate)}; exit $rc; fi',
            check=False,
            timeout=Timeout.CHANGE,
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
