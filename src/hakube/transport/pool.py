"""Many hosts at once: connect to every target concurrently and keep each outcome by name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from hakube.transport.base import Redactor, TransportError
from hakube.transport.connect import KEEPALIVE_INTERVAL, ConnectOptions, connect
from hakube.transport.ssh import DEFAULT_MAX_CHANNELS, SSHTransport
from hakube.transport.target import SSHTarget


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

    async def __aexit__(self, *exc_info: object) -> None:
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
    record_new_keys: bool = True,
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
    options = ConnectOptions(
        trust_new_hosts,
        retries,
        backoff,
        max_channels,
        redactor,
        keepalive_interval,
        use_sftp,
        record_new_keys,
    )
    pool = SSHPool()

    async def one(target: SSHTarget) -> None:
        try:
            pool.transports[target.name] = await connect(
                target, options, handshakes=handshakes, recorded=pool.recorded
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
