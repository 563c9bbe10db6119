"""The transport protocol every phase talks through, its result type, errors and redaction.

Phases only ever see `Transport`; the asyncssh implementation (`ssh.py`) and the scripted fake
(`scripted.py`) both satisfy it, so phase tests need no SSH at all.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "AuthFailed",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionRefused",
    "HostKeyError",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "Redactor",
    "RemoteFileNotFound",
    "Transport",
    "TransportError",
    "Unreachable",
]

REDACTED = "***"


class Redactor:
    """Replaces registered secrets with ``***`` in any text bound for a log or an error.

    Secrets are matched longest first so that a secret containing a shorter one is hidden whole
    rather than leaving a recognisable remainder.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.register(secret)

    def register(self, secret: str) -> None:
        # An empty secret would match everywhere and turn every message into asterisks.
        if not secret or secret in self._secrets:
            return
        self._secrets.add(secret)
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def __len__(self) -> int:
        return len(self._secrets)


_NO_SECRETS = Redactor()


def no_redaction() -> Redactor:
    """A shared empty redactor, for transports built without one."""
    return _NO_SECRETS


@dataclass(frozen=True)
class CommandResult:
    """What one command did on one host.

    ``command`` is the caller's command after redaction (a record that may be logged or printed
    as JSON); stdout and stderr are raw because facts parse them.
    """

    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def stderr_tail(self, lines: int = 10) -> str:
        if lines <= 0:
            return ""
        return "\n".join(self.stderr.rstrip("\n").splitlines()[-lines:])


class Transport(ABC):
    """One host, reached somehow. Everything a phase may do to a host goes through here.

    `run` is the same for every implementation (redact, run, raise if asked); each supplies
    `_run`, `put`, `get` and `close`.
    """

    def __init__(self, host: str, redactor: Redactor | None = None) -> None:
        self.host = host
        self.redactor = redactor or no_redaction()

    async def run(
        self,
        command: str,
        *,
        check: bool = True,
        # The per-command budget; a caller-side asyncio.timeout could not also close the
        # remote channel, which is the point.
        timeout: float | None = None,
        stdin: str | bytes | None = None,
    ) -> CommandResult:
        """Run ``command`` under ``bash -c``; raise CommandFailed on non-zero exit if ``check``."""
        shown = self.redactor.redact(command)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        result = await self._run(command, shown, data, timeout)
        if check and not result.ok:
            raise command_failed(result, self.redactor)
        return result

    @abstractmethod
    async def _run(
        self, command: str, shown: str, stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        """Run ``command`` (``shown``, redacted, in every message) and say how it ended."""

    @abstractmethod
    async def put(
        self, path: str, content: bytes, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        """Atomically replace ``path``: temp file in the same directory, chmod/chown, rename."""

    @abstractmethod
    async def get(self, path: str) -> bytes:
        """Read ``path``; raise RemoteFileNotFound if it does not exist."""

    @abstractmethod
    async def close(self) -> None: ...


class TransportError(Exception):
    """Base of every transport failure. ``str(err)`` is ``"<host>: <what happened + fix>"``."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message


class ConnectError(TransportError):
    """Could not establish a session with the host (also used for unclassified causes)."""


class Unreachable(ConnectError):
    """No session with ``address:port`` after ``attempts`` tries (refused, or no handshake)."""

    def __init__(self, host: str, address: str, port: int, attempts: int, why: str) -> None:
        super().__init__(host, why)
        self.address = address
        self.port = port
        self.attempts = attempts


class ConnectionRefused(Unreachable):
    def __init__(self, host: str, address: str, port: int, attempts: int) -> None:
        super().__init__(
            host,
            address,
            port,
            attempts,
            f"connection to {address}:{port} refused after {attempts} attempt(s). "
            "Check that sshd is running on the host and listening on that port, "
            "and that no firewall rejects it.",
        )


class ConnectTimeout(Unreachable):
    def __init__(self, host: str, address: str, port: int, timeout: float, attempts: int) -> None:
        super().__init__(
            host,
            address,
            port,
            attempts,
            f"no SSH handshake with {address}:{port} within {timeout:g}s "
            f"({attempts} attempt(s)). Check that the host is up and reachable, that the "
            "address is right, and that a firewall is not dropping packets; raise the connect "
            "timeout for slow links.",
        )
        self.timeout = timeout


class AuthFailed(ConnectError):
    def __init__(self, host: str, user: str, key_file: str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            host,
            f"authentication as {user!r} with key {key_file} failed{why}. Check that the public "
            f"key is in ~{user}/.ssh/authorized_keys on the host, that the user exists, and "
            "that the key file is the one you meant.",
        )
        self.user = user
        self.key_file = key_file


class HostKeyError(ConnectError):
    """The host's key is not the pinned one (unknown or changed); says where it is pinned."""

    #: The pinned key changed (HostKeyMismatch), rather than none being pinned yet.
    changed: ClassVar[bool]

    def __init__(self, host: str, host_entry: str, known_hosts: str, fingerprint: str) -> None:
        presents = "It now presents" if self.changed else "It presented"
        seen = f" {presents} {fingerprint}." if fingerprint else ""
        if self.changed:
            why = (
                f"does not match the one recorded in {known_hosts}: the key CHANGED.{seen} "
                "Someone may be intercepting the connection (man in the middle), or the host "
                "was reinstalled. If you know it was rebuilt, remove the old entry with "
                f"`ssh-keygen -R '{host_entry}' -f {known_hosts}` and reconnect with "
                "--trust-new-hosts; otherwise stop and investigate."
            )
        else:
            why = (
                f"is not in {known_hosts}.{seen} Verify the fingerprint out of band, then rerun "
                "with --trust-new-hosts to record it, or add it to the known_hosts file yourself."
            )
        super().__init__(host, f"host key for {host_entry} {why}")
        self.host_entry = host_entry
        self.known_hosts = known_hosts
        self.fingerprint = fingerprint


class HostKeyUnknown(HostKeyError):
    changed = False


class HostKeyMismatch(HostKeyError):
    changed = True


class CommandFailed(TransportError):
    """A command exited non-zero. ``command`` and ``stderr_tail`` are already redacted."""

    def __init__(
        self, host: str, command: str, exit_status: int, stderr_tail: str, stdout: str = ""
    ) -> None:
        tail = f"\n--- stderr (last lines) ---\n{stderr_tail}" if stderr_tail else ""
        super().__init__(
            host,
            f"command exited {exit_status}: {command}{tail}\n"
            "Rerun it by hand on the host to investigate, or fix the cause shown above.",
        )
        self.command = command
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail
        self.stdout = stdout


class CommandTimeout(TransportError):
    def __init__(self, host: str, command: str, timeout: float) -> None:
        super().__init__(
            host,
            f"command did not finish within {timeout:g}s and was abandoned: {command}. "
            "The host may be overloaded or the command waiting on input or a lock; check it "
            "there, or allow a longer timeout.",
        )
        self.command = command
        self.timeout = timeout


class RemoteFileNotFound(TransportError):
    def __init__(self, host: str, path: str) -> None:
        super().__init__(host, f"{path} does not exist on the host.")
        self.path = path


def command_failed(
    result: CommandResult, redactor: Redactor, *, tail_lines: int = 10
) -> CommandFailed:
    """Build the CommandFailed for ``result``, redacting everything that reaches the message."""
    return CommandFailed(
        result.host,
        redactor.redact(result.command),
        result.exit_status,
        redactor.redact(result.stderr_tail(tail_lines)),
        redactor.redact(result.stdout),
    )
