"""The one narrow object phases share: spec, secrets, transports, facts and the wet gate."""

from __future__ import annotations

import functools
import hashlib
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class Context:
    cluster: Cluster
    secrets: Secrets
    state: StateDir
    transports: dict[str, Transport]
    dry_run: bool = False
    emit: EventSink = lambda _e: None
    redactor: Redactor = field(default_factory=Redactor)
    facts: dict[str, HostFacts] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    #: Phase names selected for this run (preflight only checks what will be used).
    selected: frozenset[str] = frozenset()
    phase: str = ""
    #: What `verify` found, for the caller to print.
    report: Any = None
    #: Host -> packages the selected phases need there (installed together by `packages`).
    wanted_packages: dict[str, list[str]] = field(default_factory=dict)
    #: The recorded cluster; changed only through `remember`.
    record: ClusterRecord | None = None

    def t(self, host: Host) -> Transport:
        return self.transports[host.name]

    async def read(
        self, host: Host, command: str, *, check: bool = True, timeout: float = Timeout.READ
    ) -> CommandResult:
        """A command that only looks: it runs in dry-run mode too."""
        return await self.t(host).run(command, check=check, timeout=timeout)

    def remember(self, update: Callable[[ClusterRecord], None]) -> None:
        """Change the recorded cluster (after verification) and save it; never in a dry run."""
        if self.record is None or self.dry_run:
            return
        update(self.record)
        self.state.save_record(self.record)

    async def change(
        self, host: Host, description: str, action: Callable[[], Awaitable[object]]
    ) -> None:
        """The wet gate: record the change, and perform it unless this is a dry run."""
        self.changes.append(Change(self.phase, host.name, description, not self.dry_run))
        self.emit(Event(EventKind.CHANGE, self.phase, host.name, self.redactor.redact(description)))
        if not self.dry_run:
            await action()

    async def sh(
        self, host: Host, description: str, command: str, *, timeout: float = Timeout.CHANGE
    ) -> None:
        """A mutating shell command behind the gate."""

        async def go() -> None:
            await self.t(host).run(command, timeout=timeout)

        await self.change(host, description, go)

    async def gather_facts(self, host: Host, paths: Sequence[str] = ()) -> HostFacts:
        result = await self.t(host).run(facts_script(paths), timeout=Timeout.READ)
        f = parse_facts(result.stdout)
        self.facts[host.name] = f
        return f

    def file_is_current(self, host: Host, rf: RenderedFile) -> bool:
        cur = self.facts[host.name].files.get(rf.path)
        return (
            cur is not None
            and cur.sha256 == sha256(rf.content)
            and cur.mode == rf.mode
            and cur.owner == owner_of(rf)
        )

    async def ensure_files(self, host: Host, files: Sequence[RenderedFile]) -> set[str]:
        """Write the files that differ; validate each candidate on the host first.

        Returns the units to reload. A candidate that fails validation is removed and the live
        file is left untouched, so a bad config never replaces a running one.
        """
        units: set[str] = set()
        for rf in files:
            if self.file_is_current(host, rf):
                continue
            cur = self.facts[host.name].files.get(rf.path)
            want = FileState(sha256(rf.content), rf.mode, owner_of(rf))
            if cur is not None and (cur.sha256, cur.mode) == (want.sha256, want.mode):
                q = shlex.quote
                await self.sh(
                    host,
                    f"chown {want.owner} {rf.path} (was {cur.owner or 'unknown'})",
                    f"chown {q(want.owner)} {q(rf.path)}",
                )
            else:
                await self.change(
                    host, f"write {rf.path}", functools.partial(self._install, host, rf)
                )
            self.facts[host.name].files[rf.path] = want
            if rf.reload:
                units.add(rf.reload)
        return units

    async def _install(self, host: Host, rf: RenderedFile) -> None:
        t = self.t(host)
        owner = owner_of(rf)
        if rf.validate is None:
            await t.put(rf.path, rf.content.encode(), mode=rf.mode, owner=owner)
            return
        candidate = f"{rf.path}.hakube-new"
        await t.put(candidate, rf.content.encode(), mode=rf.mode, owner=owner)
        check = rf.validate.replace("{path}", shlex.quote(candidate))
        q = shlex.quote
        res = await t.run(
            f"out=$(mktemp) || exit 1; trap 'rm -f \"$out\"' EXIT; "
            f'if {check} >"$out" 2>&1; then mv -f {q(candidate)} {q(rf.path)}; '
            f'else rc=$?; cat "$out" >&2; rm -f {q(candidate)}; exit $rc; fi',
            check=False,
            timeout=Timeout.CHANGE,
        )
        if not res.ok:
            raise PhaseError(
                f"{rf.path}: the new file failed validation on the host ({rf.validate}, exit "
                f"{res.exit_status}); the running config was left in place:\n"
                f"{self.redactor.redact(res.stderr_tail(15))}"
            )

    async def reload_units(self, host: Host, units: set[str]) -> None:
        """daemon-reload first if unit files changed, then reload-or-restart each unit."""
        if not units:
            return
        ordered = sorted(units, key=lambda u: (u != "daemon-reload", u))
        for unit in ordered:
            if unit == "daemon-reload":
                await self.sh(host, "systemctl daemon-reload", "systemctl daemon-reload")
            else:
                await self.sh(
                    host,
                    f"reload {unit}",
                    f"systemctl enable -q {unit} && systemctl reload-or-restart {unit}",
                )
                self.facts[host.name].units[unit] = Unit(unit, True, "active", "enabled")

    async def ensure_packages(self, host: Host, packages: Sequence[str]) -> None:
        """Install what is missing (never upgrade what is there) in one apt transaction,
        without autostarting it; hold the ones whose upgrade would restart a service."""
        unknown = set(packages) - set(PACKAGES)
        if unknown:  # the facts script would never see them installed: never idempotent
            raise ValueError(f"add {sorted(unknown)} to hakube.facts.host.PACKAGES")
        facts = self.facts[host.name]
        if facts.package_family != "apt":  # preflight refuses these hosts with the reason
            raise PhaseError(f"{facts.os_pretty or facts.os_id!r} has no apt: not supported")
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
            cmd = detached(script)
            what = f"install {' '.join(missing)}" + (f", hold {' '.join(hold)}" if hold else "")

            async def go() -> None:
                res = await self.t(host).run(cmd, timeout=Timeout.INSTALL)
                versions = dict(
                    line.split(" ", 1) for line in res.stdout.splitlines() if " " in line
                )
                self.remember(lambda r: r.installed(host.name, versions))

            await self.change(host, what, go)
        elif hold:
            await self.sh(host, f"hold {' '.join(hold)}", f"apt-mark hold {' '.join(hold)}")
        # A dry run plans on the host as it would be, so later phases do not plan it again.
        for p in missing:
            facts.packages[p] = "installed"
        facts.held.update(hold)

    async def ensure_running(self, host: Host, unit: str) -> None:
        u = self.facts[host.name].unit(unit)
        if u.running and u.enabled == "enabled":
            return
        await self.sh(host, f"start {unit}", f"systemctl enable -q --now {unit}")
        self.facts[host.name].units[unit] = Unit(unit, True, "active", "enabled")
