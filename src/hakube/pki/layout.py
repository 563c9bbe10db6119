"""Where PKI material lives on the hosts, and the unit a phase copies there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from hakube.render.base import RenderedFile

__all__ = [
    "ETCD_HOST_PKI_DIR",
    "KUBERNETES_PKI_DIR",
    "PKIFile",
    "as_rendered",
]

# kubeadm's certificatesDir default; a CA found here is used instead of generating one.
KUBERNETES_PKI_DIR = PurePosixPath("/etc/kubernetes/pki")
# Where hakube puts an external etcd member's certificates on the etcd host itself.
ETCD_HOST_PKI_DIR = PurePosixPath("/etc/etcd/pki")


@dataclass(frozen=True)
class PKIFile:
    """One file to place on a host: absolute path, content and mode."""

    path: PurePosixPath
    content: bytes
    mode: int

    @property
    def is_secret(self) -> bool:
        return self.mode & 0o077 == 0

    def __repr__(self) -> str:
        # Keep private keys out of logs and assertion messages.
        return f"PKIFile(path={str(self.path)!r}, mode={oct(self.mode)}, {len(self.content)} bytes)"


def as_rendered(files: list[PKIFile], owner: str = "root") -> list[RenderedFile]:
    """PKI files as rendered files, so phases place them like any other file."""
    return [
        RenderedFile(str(f.path), f.content.decode(), mode=f.mode, secret=f.is_secret, owner=owner)
        for f in files
    ]
