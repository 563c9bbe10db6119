"""Which phase owns which rendered file.

Renderers produce every file a host needs; each phase claims the paths under its prefixes, so
`plan` and `apply` agree and a test can check that every rendered file has exactly one owner.
"""

from __future__ import annotations

from collections.abc import Sequence

from hakube.render import render_host
from hakube.render.base import RenderedFile
from hakube.spec.model import Cluster, Host
from hakube.state import Secrets

OWNERS: dict[str, tuple[str, ...]] = {
    "prepare": ("/etc/sysctl.d/", "/etc/modules-load.d/"),
    "packages": ("/etc/apt/sources.list.d/hakube", "/etc/yum.repos.d/hakube"),
    "runtime": ("/etc/containerd/", "/etc/docker/"),
    "lb/haproxy": (
        "/etc/haproxy/",
        "/etc/systemd/system/haproxy.service.d/",
        "/etc/tmpfiles.d/hakube",
    ),
    "lb/keepalived": ("/etc/keepalived/",),
    "kubeadm/packages": ("/etc/apt/sources.list.d/kubernetes", "/etc/yum.repos.d/kubernetes"),
    "kubeadm/init": ("/etc/hakube/kubeadm/init",),
    "kubeadm/join-control-planes": ("/etc/hakube/kubeadm/join",),
    "kubeadm/join-workers": ("/etc/hakube/kubeadm/join",),
}


def owner_of(path: str) -> list[str]:
    return [phase for phase, prefixes in OWNERS.items() if path.startswith(prefixes)]


def files_for(
    phase: str,
    cluster: Cluster,
    host: Host,
    secrets: Secrets,
    *,
    ca_cert_hash: str | None = None,
    os_family: str | None = None,
    os_codename: str | None = None,
) -> list[RenderedFile]:
    prefixes: Sequence[str] = OWNERS.get(phase, ())
    if not prefixes:
        return []
    return [
        f
        for f in render_host(
            cluster,
            host,
            secrets,
            ca_cert_hash=ca_cert_hash,
            os_family=os_family,
            os_codename=os_codename,
        )
        if f.path.startswith(tuple(prefixes))
    ]
