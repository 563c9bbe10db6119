"""A real asyncssh server on 127.0.0.1 for transport tests and benchmarks (not for production).

Following asyncssh's own test habit, the transport is exercised against a genuine SSH server
started in-process on port 0 with freshly generated keys. Commands really run under
``bash -c`` in a scratch directory, so exit status, stdin, stdout and stderr are all real; SFTP
is served from the real filesystem. It trusts whoever holds the generated client key and runs
everything as the current user: never expose it beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakube.transport.sshlib import asyncssh
from hakube.transport.target import SSHTarget, known_hosts_entry

__all__ = ["LoopbackSSHServer", "write_private_key"]

LOOPBACK = "127.0.0.1"
_CHUNK = 65536


def write_private_key(key: asyncssh.SSHKey, path: Path) -> Path:
    """Write ``key`` as an OpenSSH private key readable only by its owner, like ssh-keygen does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key())
    return path


@dataclass
class LoopbackSSHServer:
    """An in-process SSH server. Use ``async with LoopbackSSHServer(tmp_dir) as server:``.

    ``commands`` records every exec request exactly as received (so tests can see the sudo and
    quoting wrapper), ``max_active`` the largest number of sessions that ran at once.
    """

    root: Path
    host_key: asyncssh.SSHKey = field(
        default_factory=lambda: asyncssh.generate_private_key("ssh-ed25519")
    )
    client_key: asyncssh.SSHKey = field(
        default_factory=lambda: asyncssh.generate_private_key("ssh-ed25519")
    )
    #: The ciphers this server accepts (empty: asyncssh's defaults).
    encryption_algs: tuple[str, ...] = ()
    commands: list[str] = field(default_factory=list)
    max_active: int = 0
    port: int = 0
    _active: int = 0
    _server: asyncssh.SSHAcceptor | None = None

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def client_key_file(self) -> Path:
        return self.root / "client_ed25519"

    async def start(self) -> LoopbackSSHServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_private_key(self.client_key, self.client_key_file)
        authorized = asyncssh.import_authorized_keys(self.client_key.export_public_key().decode())
        self._server = await asyncssh.create_server(
            asyncssh.SSHServer,
            LOOPBACK,
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=authorized,
            process_factory=self._handle,
            sftp_factory=True,
            encoding=None,
            allow_scp=False,
            **({"encryption_algs": list(self.encryption_algs)} if self.encryption_algs else {}),
        )
        sockets = self._server.sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LoopbackSSHServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def target(
        self,
        name: str = "node1",
        *,
        known_hosts: Path | None = None,
        key_file: Path | None = None,
        user: str = "root",
        sudo: bool = False,
        connect_timeout: float = 5.0,
    ) -> SSHTarget:
        """A target for this server; known_hosts defaults to a pinned file (see trust())."""
        return SSHTarget(
            name=name,
            address=LOOPBACK,
            port=self.port,
            user=user,
            key_file=key_file or self.client_key_file,
            known_hosts=known_hosts or self.trust(self.root / "known_hosts"),
            sudo=sudo,
            connect_timeout=connect_timeout,
        )

    def trust(self, known_hosts: Path) -> Path:
        """Write a known_hosts file that pins this server's host key."""
        entry = known_hosts_entry(LOOPBACK, self.port)
        public = self.host_key.export_public_key("openssh").decode().strip()
        fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{entry} {public}\n")
        return known_hosts

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        self.commands.append(command)
        self._active += 1
        self.max_active = max(self.max_active, self._active)
        try:
            process.exit(await self._execute(process, command))
        except _ChannelGone:
            pass
        finally:
            self._active -= 1

    async def _execute(self, process: asyncssh.SSHServerProcess[bytes], command: str) -> int:
        # A session of its own lets us kill the whole tree (bash and e.g. its `sleep`) when the
        # client abandons the channel, as sshd does by closing the pty/pipes.
        child = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=self.workdir,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        assert child.stderr is not None

        feeder = asyncio.create_task(_feed(process.stdin, child.stdin))
        work: asyncio.Future[Any] = asyncio.gather(
            _pump(child.stdout, process.stdout),
            _pump(child.stderr, process.stderr),
            child.wait(),
        )
        gone: asyncio.Future[Any] = asyncio.ensure_future(process.wait_closed())
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await work
                raise _ChannelGone
            await work
        finally:
            feeder.cancel()
            gone.cancel()
        code = child.returncode
        assert code is not None
        return code if code >= 0 else 128 - code


class _ChannelGone(Exception):
    """The client closed the channel before the command finished."""


async def _feed(source: asyncssh.SSHReader[bytes], sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
    except (OSError, asyncssh.Error):
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.close()


async def _pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    while data := await source.read(_CHUNK):
        sink.write(data)
        with contextlib.suppress(OSError, asyncssh.Error):
            await sink.drain()
