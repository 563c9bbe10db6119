"""Connecting: one attempt is a pinned handshake; only refused or timed-out connects are retried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from hakube.transport.base import (
    AuthFailed,
    ConnectError,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    Redactor,
)
from hakube.transport.hostkeys import pinned_host_keys, server_host_key
from hakube.transport.ssh import DEFAULT_MAX_CHANNELS, SSHTransport
from hakube.transport.sshlib import asyncssh
from hakube.transport.target import SSHTarget, failing_as

log = logging.getLogger("hakube.transport")

KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 3
MAX_BACKOFF = 10.0
#: AES-GCM first, then asyncssh's own order (a server without AES-GCM gets the next one).
#: asyncssh's chacha20-poly1305 makes two cipher objects per packet: a status round over 5
#: lab hosts cost 0.07 s of client CPU with it, 0.058 s with AES-GCM (one call per packet).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def encryption_algs() -> list[str]:
    default = [a.decode() for a in asyncssh.encryption.get_default_encryption_algs()]
    first = [a for a in PREFERRED_CIPHERS if a in default]
    return [*first, *(a for a in default if a not in first)]


@dataclass(frozen=True)
class ConnectOptions:
    """How to connect and what the transport gets (see `pool.connect_all`)."""

    trust_new_hosts: bool = False
    retries: int = 3
    backoff: float = 0.5
    max_channels: int = DEFAULT_MAX_CHANNELS
    redactor: Redactor | None = None
    keepalive_interval: float = KEEPALIVE_INTERVAL
    use_sftp: bool = True
    #: False: a newly trusted host key is used for this run only, known_hosts stays unchanged.
    record_new_keys: bool = True


async def connect(
    target: SSHTarget,
    options: ConnectOptions,
    *,
    handshakes: asyncio.Semaphore | None = None,
    recorded: dict[str, str] | None = None,
) -> SSHTransport:
    """Connect to one target; raise a TransportError subclass on failure."""
    o = options
    key = _load_client_key(target)
    attempts = 0
    while True:
        attempts += 1
        try:
            if handshakes is None:
                conn, fingerprint = await _handshake(target, key, o)
            else:
                async with handshakes:
                    conn, fingerprint = await _handshake(target, key, o)
        except (ConnectionRefusedError, TimeoutError) as exc:
            if attempts > o.retries:
                raise _final_connect_error(target, exc, attempts) from None
            delay = min(o.backoff * 2 ** (attempts - 1), MAX_BACKOFF) * random.uniform(0.8, 1.2)
            log.info(
                "%s: %s, retrying in %.2fs (attempt %d of %d)",
                target.name,
                "connection refused" if isinstance(exc, ConnectionRefusedError) else "timed out",
                delay,
                attempts + 1,
                o.retries + 1,
            )
            await asyncio.sleep(delay)
            continue
        if fingerprint is not None and recorded is not None:
            recorded[target.name] = fingerprint
        log.debug("%s: connected to %s as %s", target.name, target.host_entry, target.user)
        return SSHTransport(
            target, conn, max_channels=o.max_channels, redactor=o.redactor, use_sftp=o.use_sftp
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
    options: ConnectOptions,
) -> tuple[asyncssh.SSHClientConnection, str | None]:
    """One attempt. Returns the connection and, if a new host key was recorded, its fingerprint."""
    known, recorded = await pinned_host_keys(
        target, options.trust_new_hosts, record=options.record_new_keys
    )
    known_path = target.known_hosts.expanduser()
    at = f"{target.address}:{target.port}"
    # Outermost, so the specific failures below are told apart first.
    with failing_as(target, lambda e: f"could not open an SSH session to {at}: {e}. Check "
                    "that the port belongs to sshd and the network path is stable."):  # fmt: skip
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
                encryption_algs=encryption_algs(),
                connect_timeout=target.connect_timeout,
                keepalive_interval=options.keepalive_interval,
                keepalive_count_max=KEEPALIVE_COUNT_MAX,
            )
        except asyncssh.HostKeyNotVerifiable:
            fingerprint = ""
            # The fingerprint only improves the message; failing to get it must not hide the
            # error.
            with contextlib.suppress(OSError, asyncssh.Error, ConnectError):
                fingerprint = (await server_host_key(target)).get_fingerprint()
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
    return conn, recorded
