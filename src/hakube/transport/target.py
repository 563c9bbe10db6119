"""How to reach one host over SSH."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
