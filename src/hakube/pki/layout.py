"""Where PKI material lives on the hosts, and the rendered file a phase copies there."""

from __future__ import annotations

from pathlib import PurePosixPath

from hakube.render.base import RenderedFile

__all__ = [
    "ETCD_HOST_PKI_DIR",
    "KUBERNETES_PKI_DIR",
    "pki_file",
]

# kubeadm's certificatesDir default; a CA found here is used instead of generating one.
KUBERNETES_PKI_DIR = PurePosixPath("/etc/kubernetes/pki")
# Where hakube puts an external etcd member's certificates on the etcd host itself.
ETCD_HOST_PKI_DIR = PurePosixPath("/etc/etcd/pki")


def pki_file(path: PurePosixPath, pem: bytes, mode: int, owner: str = "root") -> RenderedFile:
    """One PKI file, placed like any other rendered file; a key readable by its owner alone
    (mode 0600) is a secret."""
    return RenderedFile(str(path), pem.decode(), mode=mode, secret=not mode & 0o077, owner=owner)
