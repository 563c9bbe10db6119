"""The asyncssh transport: one pinned connection per host, many hosts in one event loop.

Connecting (``connect_all``) is where the safety lives: host keys are always checked against a
known_hosts file, new keys are only recorded when the caller asked (``trust_new_hosts``) and
that is logged, a changed key is always fatal, and only refused/timed-out connects are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import random
import shlex
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import asyncssh

from hakube.transport.base import (
    AuthFailed,
    CommandResult,
    CommandTimeout,
    ConnectError,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    Redactor,
    RemoteFileNotFound,
    TransportError,
    command_failed,
    no_redaction,
)

__all__ = [
    "DEFAULT_MAX_CHANNELS",
    "SSHPool",
    "SSHTarget",
    "SSHTransport",
    "connect",
    "connect_all",
    "known_hosts_entry",
    "remote_command",
]

log = logging.getLogger("hakube.transport")

DEFAULT_MAX_CHANNELS = 8
# OpenSSH's default MaxSessions is 10; staying under it leaves room for an operator's own shell.
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 3
MAX_BACKOFF = 10.0
# cat never exits with this, so it tells "no such file" apart from a read error.
_MISSING_EXIT = 66


@dataclass(frozen=True)
class SSHTarget:
    """How to reach one host. ``name`` is the cluster's name for it and prefixes every message."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path = field(default_factory=lambda: Path("~/.ssh/known_hosts"))
    sudo: bool = False
    connect_timeout: float = 10.0

    @property
    def host_entry(self) -> str:
        return known_hosts_entry(self.address, self.port)


def known_hosts_entry(address: str, port: int) -> str:
    """The host field OpenSSH (and asyncssh) look up for ``address:port``."""
    return address if port == 22 else f"[{address}]:{port}"


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


class SSHTransport:
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
        self.host = target.name
        self.target = target
        self._conn = connection
        self._channels = asyncio.Semaphore(max_channels)
        self._redactor = redactor or no_redaction()
        self._closed = False
        # SFTP runs as the login user, so it can only replace files when no sudo is involved.
        self._use_sftp = use_sftp and not (target.sudo and target.user != "root")
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()

    async def run(
        self,
        command: str,
        *,
        check: bool = True,
        # The protocol's per-command budget; a caller-side asyncio.timeout could not also
        # close the remote channel, which is the point.
        timeout: float | None = None,
        stdin: str | bytes | None = None,
    ) -> CommandResult:
        shown = self._redactor.redact(command)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        status, out, err, duration = await self._exec(command, shown, data, timeout)
        result = CommandResult(
            host=self.host,
            command=shown,
            exit_status=status,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            duration=duration,
        )
        if check and not result.ok:
            raise command_failed(result, self._redactor)
        return result

    async def put(
        self, path: str, content: bytes, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        # SFTP on the connection's long-lived channel measured ~3x faster than the shell
        # pipeline (bench/transport_roundtrip.py: no channel open, no forks on the host), but
        # it runs as the login user and cannot chown by name, so those cases use the shell.
        if self._use_sftp and owner is None and await self._sftp_put(path, content, mode):
            return
        shown = f"put {path} (mode {mode:o}{', owner ' + owner if owner else ''})"
        status, out, err, duration = await self._exec(
            _put_script(path, mode, owner), shown, content, None
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
                self._redactor,
            )

    async def get(self, path: str) -> bytes:
        if self._use_sftp:
            return await self._sftp_get(path)
        shown = f"get {path}"
        status, out, err, duration = await self._exec(_get_script(path), shown, None, None)
        if status == _MISSING_EXIT:
            raise RemoteFileNotFound(self.host, path)
        if status != 0:
            raise command_failed(
                CommandResult(self.host, shown, status, "", err.decode(errors="replace"), duration),
                self._redactor,
            )
        return out

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        if self._closed:
            raise TransportError(self.host, "transport already closed; cannot transfer files")
        async with self._sftp_lock:
            if self._sftp is None:
                # The one SFTP channel stays open for the connection's life; it takes one
                # session slot beside the run() channels (8 + 1 stays under sshd's 10).
                try:
                    self._sftp = await self._conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise self._lost(exc, "the SFTP subsystem") from exc
            return self._sftp

    async def _sftp_put(self, path: str, content: bytes, mode: int) -> bool:
        """Replace ``path`` over SFTP; False if the server lacks atomic rename (use the shell)."""
        sftp = await self._sftp_client()
        directory = posixpath.dirname(path) or "."
        tmp = posixpath.join(
            directory, f".{posixpath.basename(path)}.hakube-{uuid.uuid4().hex[:12]}.tmp"
        )
        log.debug("%s: put %s (mode %o) via sftp", self.host, path, mode)
        private = asyncssh.SFTPAttrs(permissions=0o600)
        try:
            try:
                handle = await sftp.open(tmp, "wb", private)
            except asyncssh.SFTPNoSuchFile:
                await sftp.makedirs(directory, exist_ok=True)
                handle = await sftp.open(tmp, "wb", private)
            async with handle:
                await handle.write(content)
                # Explicit chmod: the remote umask must not decide a file's final mode.
                await handle.chmod(mode)
            try:
                await sftp.posix_rename(tmp, path)
            except asyncssh.SFTPOpUnsupported:
                await _quietly_remove(sftp, tmp)
                return False
        except asyncssh.SFTPError as exc:
            await _quietly_remove(sftp, tmp)
            raise TransportError(
                self.host,
                f"cannot write {path}: {exc.reason}. Check the path and its permissions; a "
                "non-root user needs sudo enabled for system paths.",
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"put {path}") from exc
        return True

    async def _sftp_get(self, path: str) -> bytes:
        sftp = await self._sftp_client()
        log.debug("%s: get %s via sftp", self.host, path)
        try:
            async with await sftp.open(path, "rb") as handle:
                data = await handle.read()
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            raise RemoteFileNotFound(self.host, path) from None
        except asyncssh.SFTPError as exc:
            raise TransportError(
                self.host,
                f"cannot read {path}: {exc.reason}. Check the path and its permissions.",
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"get {path}") from exc
        assert isinstance(data, bytes)
        return data

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sftp is not None:
            self._sftp.exit()
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
        detail = self._redactor.redact(str(exc) or type(exc).__name__)
        return TransportError(
            self.host,
            f"SSH session failed while running {shown}: {detail}. The connection may have "
            "dropped or sshd refused another session (MaxSessions); reconnect and retry.",
        )


async def _quietly_remove(sftp: asyncssh.SFTPClient, path: str) -> None:
    # Best effort: a leftover dot-file temp is harmless, the error being reported is not.
    with contextlib.suppress(asyncssh.Error, OSError):
        await sftp.remove(path)


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


@dataclass
class SSHPool:
    """The outcome of ``connect_all``: a transport or an error for every target, by name.

    ``recorded`` maps hosts whose key was newly trusted (``trust_new_hosts``) to its fingerprint,
    so the caller can show it to the operator.
    """

    transports: dict[str, SSHTransport] = field(default_factory=dict)
    errors: dict[str, TransportError] = field(default_factory=dict)
    recorded: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __getitem__(self, name: str) -> SSHTransport:
        if name in self.errors:
            raise self.errors[name]
        return self.transports[name]

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.transports.values()))

    async def __aenter__(self) -> SSHPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect_all(
    targets: Iterable[SSHTarget],
    *,
    max_handshakes: int = 16,
    trust_new_hosts: bool = False,
    retries: int = 3,
    backoff: float = 0.5,
    max_channels: int = DEFAULT_MAX_CHANNELS,
    redactor: Redactor | None = None,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
    use_sftp: bool = True,
) -> SSHPool:
    """Connect to every target concurrently; never stop at the first failure.

    ``max_handshakes`` bounds simultaneous key exchanges (they are CPU-heavy on both sides and
    sshd drops excess ones via MaxStartups). ``retries`` is the number of extra attempts after
    a refused or timed-out connect; other failures are final at once.
    """
    targets = list(targets)
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate host names: {', '.join(duplicates)}")
    handshakes = asyncio.Semaphore(max_handshakes)
    pool = SSHPool()

    async def one(target: SSHTarget) -> None:
        try:
            pool.transports[target.name] = await connect(
                target,
                trust_new_hosts=trust_new_hosts,
                retries=retries,
                backoff=backoff,
                max_channels=max_channels,
                redactor=redactor,
                keepalive_interval=keepalive_interval,
                use_sftp=use_sftp,
                handshakes=handshakes,
                recorded=pool.recorded,
            )
        except TransportError as exc:
            pool.errors[target.name] = exc

    outcomes = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
    bugs = [o for o in outcomes if isinstance(o, BaseException)]
    if bugs:
        # Not a transport failure but a defect or cancellation: don't leak the live connections.
        await pool.close()
        raise bugs[0]
    # Completion order is noise; callers iterate in the order the cluster file lists hosts.
    pool.transports = {n: pool.transports[n] for n in names if n in pool.transports}
    pool.errors = {n: pool.errors[n] for n in names if n in pool.errors}
    return pool


async def connect(
    target: SSHTarget,
    *,
    trust_new_hosts: bool = False,
    retries: int = 3,
    backoff: float = 0.5,
    max_channels: int = DEFAULT_MAX_CHANNELS,
    redactor: Redactor | None = None,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
    use_sftp: bool = True,
    handshakes: asyncio.Semaphore | None = None,
    recorded: dict[str, str] | None = None,
) -> SSHTransport:
    """Connect to one target (see ``connect_all``); raise a TransportError subclass on failure."""
    key = _load_client_key(target)
    attempts = 0
    while True:
        attempts += 1
        try:
            if handshakes is None:
                conn, fingerprint = await _handshake(
                    target, key, trust_new_hosts, keepalive_interval
                )
            else:
                async with handshakes:
                    conn, fingerprint = await _handshake(
                        target, key, trust_new_hosts, keepalive_interval
                    )
        except (ConnectionRefusedError, TimeoutError) as exc:
            if attempts > retries:
                raise _final_connect_error(target, exc, attempts) from None
            delay = min(backoff * 2 ** (attempts - 1), MAX_BACKOFF) * random.uniform(0.8, 1.2)
            log.info(
                "%s: %s, retrying in %.2fs (attempt %d of %d)",
                target.name,
                "connection refused" if isinstance(exc, ConnectionRefusedError) else "timed out",
                delay,
                attempts + 1,
                retries + 1,
            )
            await asyncio.sleep(delay)
            continue
        if fingerprint is not None and recorded is not None:
            recorded[target.name] = fingerprint
        log.debug("%s: connected to %s as %s", target.name, target.host_entry, target.user)
        return SSHTransport(
            target, conn, max_channels=max_channels, redactor=redactor, use_sftp=use_sftp
        )


def _final_connect_error(target: SSHTarget, exc: BaseException, attempts: int) -> ConnectError:
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionRefused(target.name, target.address, target.port, attempts)
    return ConnectTimeout(
        target.name, target.address, target.port, target.connect_timeout, attempts
    )


def _load_client_key(target: SSHTarget) -> asyncssh.SSHKey | None:
    if target.key_file is None:
        return None
    path = target.key_file.expanduser()
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise AuthFailed(
            target.name, target.user, str(path), f"cannot load the private key: {exc}"
        ) from None


async def _handshake(
    target: SSHTarget,
    key: asyncssh.SSHKey | None,
    trust_new_hosts: bool,
    keepalive_interval: float,
) -> tuple[asyncssh.SSHClientConnection, str | None]:
    """One attempt. Returns the connection and, if a new host key was recorded, its fingerprint."""
    known_path = target.known_hosts.expanduser()
    addr = await _resolve(target)
    known = _read_known_hosts(target, known_path)
    port = target.port if target.port != 22 else None
    host_keys, ca_keys, *_ = known.match(target.address, addr, port)
    recorded: str | None = None

    if not host_keys and not ca_keys:
        # Only a key exchange, no authentication: an unknown host never sees our credentials.
        presented = await _server_host_key(target)
        fingerprint = presented.get_fingerprint()
        if not trust_new_hosts:
            raise HostKeyUnknown(target.name, target.host_entry, str(known_path), fingerprint)
        _record_host_key(known_path, target.host_entry, presented)
        log.warning(
            "%s: trusted NEW host key %s for %s and recorded it in %s (--trust-new-hosts)",
            target.name,
            fingerprint,
            target.host_entry,
            known_path,
        )
        known = _read_known_hosts(target, known_path)
        recorded = fingerprint

    try:
        conn = await asyncssh.connect(
            target.address,
            target.port,
            username=target.user,
            known_hosts=known,
            client_keys=[key] if key is not None else (),
            agent_path=None if key is not None else (),
            password_auth=False,
            kbdint_auth=False,
            config=None,
            connect_timeout=target.connect_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
        )
    except asyncssh.HostKeyNotVerifiable:
        fingerprint = ""
        # The fingerprint only improves the message; failing to get it must not hide the error.
        with contextlib.suppress(OSError, asyncssh.Error, ConnectError):
            fingerprint = (await _server_host_key(target)).get_fingerprint()
        raise HostKeyMismatch(
            target.name, target.host_entry, str(known_path), fingerprint
        ) from None
    except asyncssh.PermissionDenied as exc:
        raise AuthFailed(
            target.name,
            target.user,
            str(target.key_file or "(default keys and agent)"),
            exc.reason,
        ) from None
    except (ConnectionRefusedError, TimeoutError):
        raise
    except (OSError, asyncssh.Error) as exc:
        raise ConnectError(
            target.name,
            f"could not open an SSH session to {target.address}:{target.port}: {exc}. "
            "Check that the port belongs to sshd and the network path is stable.",
        ) from None
    return conn, recorded


async def _resolve(target: SSHTarget) -> str:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.address, target.port, type=socket.SOCK_STREAM),
            target.connect_timeout,
        )
    except socket.gaierror as exc:
        raise ConnectError(
            target.name,
            f"cannot resolve {target.address!r}: {exc.strerror}. Check the address in the "
            "cluster file or DNS.",
        ) from None
    return str(infos[0][4][0])


async def _server_host_key(target: SSHTarget) -> asyncssh.SSHKey:
    try:
        presented = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.address, target.port, config=None),
            target.connect_timeout,
        )
    except (ConnectionRefusedError, TimeoutError):
        raise
    except (OSError, asyncssh.Error) as exc:
        raise ConnectError(
            target.name,
            f"SSH key exchange with {target.address}:{target.port} failed: {exc}. "
            "Check that the port belongs to sshd.",
        ) from None
    if presented is None:
        raise ConnectError(target.name, "the server presented no host key; cannot pin it.")
    return presented


def _read_known_hosts(target: SSHTarget, path: Path) -> asyncssh.SSHKnownHosts:
    if not path.exists():
        return asyncssh.SSHKnownHosts()
    try:
        return asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError) as exc:
        raise ConnectError(
            target.name, f"cannot read known_hosts file {path}: {exc}. Fix or remove the file."
        ) from None


def _record_host_key(path: Path, entry: str, key: asyncssh.SSHKey) -> None:
    public = key.export_public_key("openssh").decode().split()
    line = f"{entry} {public[0]} {public[1]}\n".encode()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_APPEND keeps concurrent writers from clobbering each other's lines.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
