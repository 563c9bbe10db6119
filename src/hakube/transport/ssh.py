"""The asyncssh transport for one host: commands on channels bounded by MaxSessions, files by
SFTP (or a shell pipeline when sudo or chown is involved).

Connecting and host-key pinning live in `connect` and `hostkeys`; many hosts in `pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import shlex
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

from hakube.transport.base import (
    CommandResult,
    CommandTimeout,
    Redactor,
    RemoteFileNotFound,
    Transport,
    TransportError,
    command_failed,
)
from hakube.transport.sftp import SFTPFiles
from hakube.transport.sshlib import asyncssh
from hakube.transport.target import SSHTarget

log = logging.getLogger("hakube.transport")
_R = TypeVar("_R")

# OpenSSH's default MaxSessions is 10; staying under it leaves room for an operator's own shell.
DEFAULT_MAX_CHANNELS = 8
# cat never exits with this, so it tells "no such file" apart from a read error.
_MISSING_EXIT = 66
#: Seconds a file transfer may take (put or get, SFTP or shell): no remote step runs unbounded.
FILE_TIMEOUT = 120.0


def remote_command(command: str, *, sudo: bool, user: str) -> str:
    """Wrap ``command`` so it runs under bash whatever the login shell is, via sudo if asked.

    ``sudo -n`` fails at once instead of hanging on a password prompt nobody can answer.
    """
    wrapped = f"bash -c {shlex.quote(command)}"
    if sudo and user != "root":
        return f"sudo -n {wrapped}"
    return wrapped


def _put_script(path: str, mode: int, owner: str | None) -> str:
    directory = posixpath.dirname(path) or "."
    base = posixpath.basename(path)
    tmp = posixpath.join(directory, f".{base}.hakube-{uuid.uuid4().hex[:12]}.tmp")
    q = shlex.quote
    # Every external command is a fork on the host and dominates the cost of a put, so only
    # mkdir when needed and let umask give the temp file its mode when it can (no x/special
    # bits). Either way the file is never readable by others before it has its final mode.
    if mode & ~0o666:
        create = [f"umask 077; cat > {q(tmp)}", f"chmod {mode:o} -- {q(tmp)}"]
    else:
        create = [f"umask {~mode & 0o777:03o}; cat > {q(tmp)}"]
    steps = [
        "set -e",
        f"[ -d {q(directory)} ] || mkdir -p -- {q(directory)}",
        f"trap 'rm -f -- {q(tmp)}' EXIT",
        *create,
    ]
    if owner:
        steps.append(f"chown -- {q(owner)} {q(tmp)}")
    # Same directory, so mv is a rename(2): readers see the old file or the new, never half.
    steps += [f"mv -f -- {q(tmp)} {q(path)}", "trap - EXIT"]
    return "\n".join(steps)


def _get_script(path: str) -> str:
    q = shlex.quote(path)
    return f"test -e {q} || exit {_MISSING_EXIT}\nexec cat -- {q}"


class SSHTransport(Transport):
    """The Transport for one host over one asyncssh connection.

    Every run/put/get holds one slot of a per-host semaphore for the life of its channel, so a
    burst of concurrent work never exceeds sshd's MaxSessions.
    """

    def __init__(
        self,
        target: SSHTarget,
        connection: asyncssh.SSHClientConnection,
        *,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        redactor: Redactor | None = None,
        use_sftp: bool = True,
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        super().__init__(target.name, redactor)
        self.target = target
        self._conn = connection
        self._channels = asyncio.Semaphore(max_channels)
        self._closed = False
        # SFTP runs as the login user, so it can only replace files when no sudo is involved.
        self._use_sftp = use_sftp and not (target.sudo and target.user != "root")
        self._files = SFTPFiles(self.host, connection, self._lost)

    async def _run(
        self, command: str, shown: str, stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        status, out, err, duration = await self._exec(command, shown, stdin, timeout)
        return CommandResult(
            host=self.host,
            command=shown,
            exit_status=status,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            duration=duration,
        )

    async def put(
        self, path: str, content: bytes, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        # SFTP on the connection's long-lived channel measured ~3x faster than the shell
        # pipeline (bench/transport_roundtrip.py: no channel open, no forks on the host), but
        # it runs as the login user and cannot chown by name, so those cases use the shell.
        if self._use_sftp and owner is None:
            shown = f"put {path} (sftp)"
            if await self._bounded(self._files.put(path, content, mode), shown):
                return
        shown = f"put {path} (mode {mode:o}{', owner ' + owner if owner else ''})"
        status, out, err, duration = await self._exec(
            _put_script(path, mode, owner), shown, content, FILE_TIMEOUT
        )
        if status != 0:
            raise command_failed(
                CommandResult(
                    self.host,
                    shown,
                    status,
                    out.decode(errors="replace"),
                    err.decode(errors="replace"),
                    duration,
                ),
                self.redactor,
            )

    async def get(self, path: str) -> bytes:
        if self._use_sftp:
            return await self._bounded(self._files.get(path), f"get {path} (sftp)")
        shown = f"get {path}"
        status, out, err, duration = await self._exec(_get_script(path), shown, None, FILE_TIMEOUT)
        if status == _MISSING_EXIT:
            raise RemoteFileNotFound(self.host, path)
        if status != 0:
            raise command_failed(
                CommandResult(self.host, shown, status, "", err.decode(errors="replace"), duration),
                self.redactor,
            )
        return out

    async def _bounded(self, op: Awaitable[_R], shown: str) -> _R:
        try:
            return await asyncio.wait_for(op, FILE_TIMEOUT)
        except TimeoutError:
            raise CommandTimeout(self.host, shown, FILE_TIMEOUT) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._files.close()
        self._conn.close()
        await self._conn.wait_closed()

    async def _exec(
        self,
        command: str,
        shown: str,
        stdin: bytes | None,
        timeout: float | None,
    ) -> tuple[int, bytes, bytes, float]:
        if self._closed:
            raise TransportError(self.host, f"transport already closed; cannot run: {shown}")
        remote = remote_command(command, sudo=self.target.sudo, user=self.target.user)
        async with self._channels:
            start = time.monotonic()
            log.debug("%s: run %s", self.host, shown)
            try:
                process = await self._conn.create_process(remote, encoding=None)
            except (asyncssh.Error, OSError) as exc:
                raise self._lost(exc, shown) from exc
            try:
                if stdin:
                    process.stdin.write(stdin)
                # Always send EOF: a command that reads stdin must not wait for input forever.
                process.stdin.write_eof()
                completed = await process.wait(timeout=timeout)
            except asyncssh.TimeoutError:
                _abandon(process)
                assert timeout is not None
                log.warning("%s: timed out after %gs: %s", self.host, timeout, shown)
                raise CommandTimeout(self.host, shown, timeout) from None
            except (asyncssh.Error, OSError) as exc:
                _abandon(process)
                raise self._lost(exc, shown) from exc
            except asyncio.CancelledError:
                # A cancelled phase must not leave its command running on the host.
                _abandon(process)
                raise
            duration = time.monotonic() - start
        status = _exit_status(completed)
        out = completed.stdout if isinstance(completed.stdout, bytes) else b""
        err = completed.stderr if isinstance(completed.stderr, bytes) else b""
        log.debug("%s: exit %d in %.3fs: %s", self.host, status, duration, shown)
        return status, out, err, duration

    def _lost(self, exc: BaseException, shown: str) -> TransportError:
        detail = self.redactor.redact(str(exc) or type(exc).__name__)
        return TransportError(
            self.host,
            f"SSH session failed while running {shown}: {detail}. The connection may have "
            "dropped or sshd refused another session (MaxSessions); reconnect and retry.",
        )


def _abandon(process: asyncssh.SSHClientProcess[bytes]) -> None:
    # Ask for a kill (sshd may ignore signal requests), then close the channel: sshd then closes
    # the command's pipes, so it dies on its next write or read instead of running on.
    with contextlib.suppress(OSError, asyncssh.Error):
        process.send_signal("KILL")
    with contextlib.suppress(OSError, asyncssh.Error):
        process.close()


def _exit_status(completed: asyncssh.SSHCompletedProcess) -> int:
    if completed.exit_status is not None and completed.exit_status >= 0:
        return completed.exit_status
    code = completed.returncode
    if code is not None and code < 0:
        # Killed by a signal: report it the way a shell would.
        return 128 - code
    return 255
