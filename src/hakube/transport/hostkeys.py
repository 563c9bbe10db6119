"""Host-key policy: every key checked against known_hosts, new ones recorded only when asked.

An unknown host only ever sees a key exchange, never our credentials; a changed key is always
fatal (see `hakube.transport.connect`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from hakube.transport.base import ConnectError, HostKeyUnknown
from hakube.transport.sshlib import asyncssh
from hakube.transport.target import SSHTarget, failing_as

log = logging.getLogger("hakube.transport")


async def pinned_host_keys(
    target: SSHTarget, trust_new_hosts: bool, *, record: bool = True
) -> tuple[asyncssh.SSHKnownHosts, str | None]:
    """The known_hosts to connect with and, if a new host key was trusted, its fingerprint.

    With `record` False (dry runs, which write nothing locally) a trusted new key is used for
    this connection only and known_hosts is left as it was."""
    known_path = target.known_hosts.expanduser()
    addr = await resolve(target)
    known = read_known_hosts(target, known_path)
    port = target.port if target.port != 22 else None
    host_keys, ca_keys, *_ = known.match(target.address, addr, port)
    recorded: str | None = None

    if not host_keys and not ca_keys:
        # Only a key exchange, no authentication: an unknown host never sees our credentials.
        presented = await server_host_key(target)
        fingerprint = presented.get_fingerprint()
        if not trust_new_hosts:
            raise HostKeyUnknown(target.name, target.host_entry, str(known_path), fingerprint)
        if not record:
            log.warning(
                "%s: trusted NEW host key %s for %s for this dry run only (not recorded in %s)",
                target.name,
                fingerprint,
                target.host_entry,
                known_path,
            )
            return asyncssh.import_known_hosts(known_hosts_line(target.host_entry, presented)), (
                fingerprint
            )
        record_host_key(known_path, target.host_entry, presented)
        log.warning(
            "%s: trusted NEW host key %s for %s and recorded it in %s (--trust-new-hosts)",
            target.name,
            fingerprint,
            target.host_entry,
            known_path,
        )
        known = read_known_hosts(target, known_path)
        recorded = fingerprint

    return known, recorded


async def resolve(target: SSHTarget) -> str:
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


async def server_host_key(target: SSHTarget) -> asyncssh.SSHKey:
    at = f"{target.address}:{target.port}"
    with failing_as(target, lambda e: f"SSH key exchange with {at} failed: {e}. "
                    "Check that the port belongs to sshd."):  # fmt: skip
        presented = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.address, target.port, config=None),
            target.connect_timeout,
        )
    if presented is None:
        raise ConnectError(target.name, "the server presented no host key; cannot pin it.")
    return presented


def read_known_hosts(target: SSHTarget, path: Path) -> asyncssh.SSHKnownHosts:
    if not path.exists():
        return asyncssh.SSHKnownHosts()
    try:
        return asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError) as exc:
        raise ConnectError(
            target.name, f"cannot read known_hosts file {path}: {exc}. Fix or remove the file."
        ) from None


def known_hosts_line(entry: str, key: asyncssh.SSHKey) -> str:
    public = key.export_public_key("openssh").decode().split()
    return f"{entry} {public[0]} {public[1]}\n"


def record_host_key(path: Path, entry: str, key: asyncssh.SSHKey) -> None:
    line = known_hosts_line(entry, key).encode()
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
