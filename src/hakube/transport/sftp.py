"""Files over the connection's one SFTP channel: atomic replace by rename, modes set explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import uuid
from collections.abc import Callable

from hakube.transport.base import RemoteFileNotFound, TransportError
from hakube.transport.sshlib import asyncssh

log = logging.getLogger("hakube.transport")

#: Turns a failure of the SSH session into the transport's error (it knows host and redaction).
Lost = Callable[[BaseException, str], TransportError]


class SFTPFiles:
    """Opened on first use and kept for the connection's life."""

    def __init__(self, host: str, connection: asyncssh.SSHClientConnection, lost: Lost) -> None:
        self.host = host
        self._conn = connection
        self._lost = lost
        self._closed = False
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> asyncssh.SFTPClient:
        if self._closed:
            raise TransportError(self.host, "transport already closed; cannot transfer files")
        async with self._lock:
            if self._sftp is None:
                # The one SFTP channel stays open for the connection's life; it takes one
                # session slot beside the run() channels (8 + 1 stays under sshd's 10).
                try:
                    self._sftp = await self._conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise self._lost(exc, "the SFTP subsystem") from exc
            return self._sftp

    async def put(self, path: str, content: bytes, mode: int) -> bool:
        """Replace ``path`` over SFTP; False if the server lacks atomic rename (use the shell)."""
        sftp = await self._client()
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

    async def get(self, path: str) -> bytes:
        sftp = await self._client()
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

    def close(self) -> None:
        self._closed = True
        if self._sftp is not None:
            self._sftp.exit()


async def _quietly_remove(sftp: asyncssh.SFTPClient, path: str) -> None:
    # Best effort: a leftover dot-file temp is harmless, the error being reported is not.
    with contextlib.suppress(asyncssh.Error, OSError):
        await sftp.remove(path)
