"""How to reach one host over SSH."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hakube.transport.base import ConnectError
from hakube.transport.sshlib import asyncssh


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


@contextmanager
def failing_as(target: SSHTarget, message: Callable[[BaseException], str]) -> Iterator[None]:
    """SSH and socket failures as a ConnectError saying `message(exc)`; a refused or timed-out
    connect passes through unchanged (the caller retries those)."""
    try:
        yield
    except (ConnectionRefusedError, TimeoutError):
        raise
    except (OSError, asyncssh.Error) as exc:
        raise ConnectError(target.name, message(exc)) from None
