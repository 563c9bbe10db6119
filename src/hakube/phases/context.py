"""The one narrow object phases share: spec, secrets, transports, facts and the wet gate."""

from __future__ import annotations

import functools
import hashlib
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hakube.facts.host import PACKAGES, FileState, HostFacts, Unit, facts_script, parse_facts
from hakube.phases.base import Change, Event, EventKind, EventSink, PhaseError
from hakube.render.base import RenderedFile
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import CommandResult, Redactor, Transport

#: Blocks the package's postinst from starting a daemon with its stock configuration
#: (a stock etcd would create a single-node data dir; a stock keepalived could grab an address).
NO_AUTOSTART = (
    "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
)
AUTOSTART_BACK = "rm -f /usr/sbin/policy-rc.d"


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

    def t(self, host: Host) -> Transport:
        return self.transports[host.name]

    async def read(self, host: Host, command: str, *, check: bool = True) -> CommandResult:
        """A command that only looks: it runs in dry-run mode too."""
        return await self.t(host).run(command, check=check)

    async def change(
        self, host: Host, description: str, action: Callable[[], Awaitable[object]]
    ) -> None:
        """The wet gate: record the change, and perform it unless this is a dry run."""
        self.changes.append(Change(self.phase, host.name, description, not self.dry_run))
        self.emit(Event(EventKind.CHANGE, self.phase, host.name, self.redactor.redact(description)))
        if not self.dry_run:
            await action()

    async def sh(self, host: Host, description: str, command: str) -> None:
        """A mutating shell command behind the gate."""

        async def go() -> None:
            await self.t(host).run(command)

        await self.change(host, description, go)

    async def gather_facts(self, host: Host, paths: Sequence[str] = ()) -> HostFacts:
        result = await self.t(host).run(facts_script(paths))
        f = parse_facts(result.stdout)
        self.facts[host.name] = f
        return f

    def file_is_current(self, host: Host, rf: RenderedFile) -> bool:
        cur = self.facts[host.name].files.get(rf.path)
        return cur is not None and cur.sha256 == sha256(rf.content) and cur.mode == rf.mode

    async def ensure_files(self, host: Host, files: Sequence[RenderedFile]) -> set[str]:
        """Write the files that differ; validate each candidate on the host first.

        Returns the units to reload. A candidate that fails validation is removed and the live
        file is left untouched, so a bad config never replaces a running one.
        """
        units: set[str] = set()
        for rf in files:
            if self.file_is_current(host, rf):
                continue
            await self.change(host, f"write {rf.path}", functools.partial(self._install, host, rf))
            self.facts[host.name].files[rf.path] = FileState(sha256(rf.content), rf.mode)
            if rf.reload:
                units.add(rf.reload)
        return units

    async def _install(self, host: Host, rf: RenderedFile) -> None:
        t = self.t(host)
        if rf.validate is None:
            await t.put(rf.path, rf.content.encode(), mode=rf.mode, owner=rf.owner)
            return
        candidate = f"{rf.path}.hakube-new"
        await t.put(candidate, rf.content.encode(), mode=rf.mode, owner=rf.owner)
        check = rf.validate.replace("{path}", shlex.quote(candidate))
        q = shlex.quote
        res = await t.run(
            f"if {check} >/tmp/.hakube-validate 2>&1; then mv -f {q(candidate)} {q(rf.path)}; "
            f"else rc=$?; cat /tmp/.hakube-validate >&2; rm -f {q(candidate)}; exit $rc; fi",
            check=False,
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
        """Install what is missing (never upgrade what is there), without autostarting it."""
        unknown = set(packages) - set(PACKAGES)
        if unknown:  # the facts script would never see them installed: never idempotent
            raise ValueError(f"add {sorted(unknown)} to hakube.facts.host.PACKAGES")
        facts = self.facts[host.name]
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
        u = self.facts[host.name].unit(unit)
        if u.running and u.enabled == "enabled":
            return
        await self.sh(host, f"start {unit}", f"systemctl enable -q --now {unit}")
        self.facts[host.name].units[unit] = Unit(unit, True, "active", "enabled")
