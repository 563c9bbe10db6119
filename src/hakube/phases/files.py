"""Which phase owns which rendered file.

Renderers produce every file a host needs; each phase claims the paths under its prefixes, so
`plan` and `apply` agree and a test can check that every rendered file has exactly one owner.
"""

from __future__ import annotations

from collections.abc import Sequence

from hakube.phases.base import Phase
from hakube.render import render_host
from hakube.render.base import RenderedFile
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, Host

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
    rendered = _rendered(cluster, host, secrets, ca_cert_hash, os_family, os_codename)
    return [f for f in rendered if f.path.startswith(tuple(prefixes))]


_CACHE: dict[tuple[object, ...], tuple[Cluster, Secrets, list[RenderedFile]]] = {}
_CACHE_SIZE = 4096


def _rendered(
    cluster: Cluster,
    host: Host,
    secrets: Secrets,
    ca_cert_hash: str | None,
    os_family: str | None,
    os_codename: str | None,
) -> list[RenderedFile]:
    """render_host, once per host and inputs: every phase takes its share of one rendering.

    Keyed by object identity (models hold lists, so they are not hashable); the entry keeps
    the cluster and secrets alive, so an id cannot be reused while its entry exists.
    """
    key = (id(cluster), host.name, id(secrets), ca_cert_hash, os_family, os_codename)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is cluster and hit[1] is secrets:
        return hit[2]
    files = render_host(
        cluster,
        host,
        secrets,
        ca_cert_hash=ca_cert_hash,
        os_family=os_family,
        os_codename=os_codename,
    )
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[key] = (cluster, secrets, files)
    return files


class RenderedPhase(Phase):
    """A phase whose files are the rendered ones under its `OWNERS` prefixes."""

    def files(self, cluster: Cluster, host: Host, secrets: Secrets) -> list[RenderedFile]:
        return files_for(self.name, cluster, host, secrets)
