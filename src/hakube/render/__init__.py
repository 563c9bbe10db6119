"""Pure renderers: (cluster, host, secrets) → the files that host needs. No I/O, no SSH.

Each phase calls the renderers of its own files (`Phase.files`); `render_host` is the union,
for `hakube render`, the golden files and the check that every file has exactly one phase.

How the apply layer uses a `RenderedFile` (`hakube.phases.context.Executor.ensure_files`):

- Install a phase's files sorted by path: that puts /etc/keepalived/check_apiserver.sh before
  keepalived.conf (whose validation needs the script) and /etc/modules-load.d before
  /etc/sysctl.d (br_netfilter before its keys).
- Upload a changed file next to the live one, run its `validate` on that candidate, and move it
  into place only if that exits 0.
- What follows a change is data on the file: `daemon_reload` (systemd re-reads units first),
  `reload` (the unit to reload or restart), `package_source` (refresh the package lists).
- `ManagedBlock`s (from `render_host_blocks`) are edits of shared files: read the file, call
  `apply_block`, write back only when different. /etc/fstab likewise goes through `remove_swap`.
"""

from __future__ import annotations

from hakube.render.base import RenderedFile
from hakube.render.haproxy import render_haproxy
from hakube.render.host import (
    ManagedBlock,
    apply_block,
    package_manager,
    remove_swap,
    render_blocks,
    render_host_files,
)
from hakube.render.keepalived import TRACK_FILE, render_haproxy_tracking, render_keepalived
from hakube.render.kubeadm import CA_HASH_PLACEHOLDER, render_kubeadm
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, Host

__all__ = [
    "CA_HASH_PLACEHOLDER",
    "TRACK_FILE",
    "ManagedBlock",
    "RenderedFile",
    "apply_block",
    "package_manager",
    "remove_swap",
    "render_all",
    "render_host",
    "render_host_blocks",
]


def render_host(
    cluster: Cluster,
    host: Host,
    secrets: Secrets,
    *,
    ca_cert_hash: str | None = None,
    os_family: str | None = None,
    os_codename: str | None = None,
) -> list[RenderedFile]:
    """Every file `host` needs, sorted by path.

    `ca_cert_hash` completes join.yaml (see `render_kubeadm`). `os_family` (os-release ID)
    resolves `packages.manager: auto`, which renders apt files without it; `os_codename`
    (VERSION_CODENAME) completes an apt mirror given as a bare URL. Files still holding a
    placeholder carry a validate command that refuses them.
    """
    files = [
        *render_host_files(cluster, host, os_family, os_codename),
        *render_haproxy(cluster, host, secrets),
        *render_keepalived(cluster, host, secrets),
        *render_haproxy_tracking(cluster, host),
        *render_kubeadm(cluster, host, secrets, ca_cert_hash),
    ]
    by_path: dict[str, RenderedFile] = {}
    for f in files:
        if f.path in by_path:
            raise RuntimeError(f"two renderers produced {f.path} for {host.name}")
        by_path[f.path] = f
    return [by_path[p] for p in sorted(by_path)]


def render_host_blocks(cluster: Cluster, host: Host) -> list[ManagedBlock]:
    """Regions of shared files (/etc/hosts) that `host` needs."""
    return render_blocks(cluster, host)


def render_all(
    cluster: Cluster, secrets: Secrets, *, ca_cert_hash: str | None = None
) -> dict[str, list[RenderedFile]]:
    return {
        h.name: render_host(cluster, h, secrets, ca_cert_hash=ca_cert_hash) for h in cluster.hosts
    }
