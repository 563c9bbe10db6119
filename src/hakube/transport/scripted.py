"""ScriptedTransport: a FAKE Transport for unit tests. It never touches a network or a host.

Give it rules (exact command or compiled regex → reply), let the code under test run, then
assert on ``calls``/``commands`` and the in-memory ``files``. A command that matches no rule
raises ``UnscriptedCommand`` (an AssertionError, so code that catches TransportError cannot
swallow it and let a test pass by accident).

    fake = ScriptedTransport("cp1", [
        ("systemctl is-active haproxy", Reply("active\\n")),
        (re.compile(r"cat /etc/os-release"), Reply(OS_RELEASE)),
        (re.compile(r"kubeadm join .*"), lambda call: Reply(exit_status=1, stderr="boom")),
    ])
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hakube.transport.base import (
    CommandResult,
    CommandTimeout,
    RemoteFileNotFound,
    Transport,
    TransportError,
)

if TYPE_CHECKING:
    from hakube.transport.base import Redactor

__all__ = ["Call", "FakeFile", "Reply", "Responder", "ScriptedTransport", "UnscriptedCommand"]


@dataclass(frozen=True)
class Reply:
    """What a scripted command prints and exits with. ``delay`` simulates a slow host (and so
    a CommandTimeout when it exceeds the caller's timeout) without really sleeping that long."""

    stdout: str = ""
    stderr: str = ""
    exit_status: int = 0
    delay: float = 0.0


@dataclass(frozen=True)
class Call:
    """One recorded operation. For ``run``: ``target`` is the command; put/get: the path."""

    kind: Literal["run", "put", "get"]
    target: str
    stdin: bytes | None = None
    content: bytes | None = None
    mode: int | None = None
    owner: str | None = None
    timeout: float | None = None


@dataclass
class FakeFile:
    content: bytes
    mode: int = 0o644
    owner: str | None = None


Responder = Reply | str | Callable[[Call], "Reply | str"]
Pattern = str | re.Pattern[str]


class UnscriptedCommand(AssertionError):
    """The code under test ran a command no rule expected."""


class ScriptedTransport(Transport):
    """The fake. Rules are tried in order; a str pattern matches the whole command exactly, a
    compiled regex must ``fullmatch``. A str reply is shorthand for ``Reply(stdout=...)``."""

    def __init__(
        self,
        host: str,
        rules: Iterable[tuple[Pattern, Responder]] = (),
        *,
        files: Mapping[str, bytes | FakeFile] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        super().__init__(host, redactor)
        self.rules: list[tuple[Pattern, Responder]] = list(rules)
        self.files: dict[str, FakeFile] = {
            path: data if isinstance(data, FakeFile) else FakeFile(data)
            for path, data in (files or {}).items()
        }
        self.calls: list[Call] = []
        self.closed = False

    def on(self, pattern: Pattern, reply: Responder) -> ScriptedTransport:
        """Add a rule after the existing ones; returns self so rules can be chained."""
        self.rules.append((pattern, reply))
        return self

    @property
    def commands(self) -> list[str]:
        """Every command run, in order (unredacted: tests assert on what really ran)."""
        return [c.target for c in self.calls if c.kind == "run"]

    async def _run(
        self, command: str, shown: str, stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        self._ensure_open()
        call = Call("run", command, stdin=stdin, timeout=timeout)
        self.calls.append(call)
        reply = self._reply(call)
        if timeout is not None and reply.delay > timeout:
            raise CommandTimeout(self.host, shown, timeout)
        if reply.delay:
            # Yield once so concurrent callers interleave as they would on a real host.
            await asyncio.sleep(0)
        return CommandResult(
            host=self.host,
            command=shown,
            exit_status=reply.exit_status,
            stdout=reply.stdout,
            stderr=reply.stderr,
            duration=reply.delay,
        )

    async def put(
        self, path: str, content: bytes, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        self._ensure_open()
        self.calls.append(Call("put", path, content=content, mode=mode, owner=owner))
        self.files[path] = FakeFile(bytes(content), mode, owner)

    async def get(self, path: str) -> bytes:
        self._ensure_open()
        self.calls.append(Call("get", path))
        if path not in self.files:
            raise RemoteFileNotFound(self.host, path)
        return self.files[path].content

    async def close(self) -> None:
        self.closed = True

    def _ensure_open(self) -> None:
        if self.closed:
            raise TransportError(self.host, "transport already closed (scripted fake)")

    def _reply(self, call: Call) -> Reply:
        for pattern, responder in self.rules:
            if _matches(pattern, call.target):
                answer = responder(call) if callable(responder) else responder
                return Reply(stdout=answer) if isinstance(answer, str) else answer
        known = "\n".join(f"  - {_describe(p)}" for p, _ in self.rules) or "  (none)"
        raise UnscriptedCommand(
            f"{self.host}: no rule matches command:\n  {call.target!r}\n"
            f"rules tried, in order:\n{known}\n"
            "Add a rule for it (ScriptedTransport.on) if the code under test should run it."
        )


def _matches(pattern: Pattern, command: str) -> bool:
    if isinstance(pattern, str):
        return pattern == command
    return pattern.fullmatch(command) is not None


def _describe(pattern: Pattern) -> str:
    return f"exact {pattern!r}" if isinstance(pattern, str) else f"regex {pattern.pattern!r}"
