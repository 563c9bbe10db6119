"""Host preparation: sysctl and module drop-ins, /etc/hosts, fstab, container runtime, package
repositories.

Files hakube owns outright are `RenderedFile`s. Files it shares with the system (/etc/hosts,
/etc/fstab) are edited through pure, idempotent text functions instead, so a re-run never
appends a second copy of anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from hakube.render.base import RenderedFile, Validation, render_template
from hakube.spec.model import Cluster, EndpointMode, Host, PackageManager, Role, Runtime

SYSCTL_CONF = "/etc/sysctl.d/90-hakube.conf"
MODULES_CONF = "/etc/modules-load.d/hakube.conf"
CONTAINERD_CONF = "/etc/containerd/config.toml"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
APT_KUBERNETES_LIST = "/etc/apt/sources.list.d/kubernetes.list"
APT_MIRROR_LIST = "/etc/apt/sources.list.d/hakube-mirror.list"
YUM_KUBERNETES_REPO = "/etc/yum.repos.d/kubernetes.repo"
YUM_MIRROR_REPO = "/etc/yum.repos.d/hakube-mirror.repo"
#: Where the apply layer stores the dearmored key of the Kubernetes apt repository.
APT_KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
#: Stands in for the release codename until the apply layer has read /etc/os-release.
CODENAME_PLACEHOLDER = "<os-codename>"
HOSTS_FILE = "/etc/hosts"
FSTAB = "/etc/fstab"

BLOCK_BEGIN = "# BEGIN hakube"
BLOCK_END = "# END hakube"
SWAP_MARK = "# hakube: swap off for kubelet: "

_DEBIAN_FAMILY = {"debian", "ubuntu", "raspbian", "linuxmint"}
_HEAD = "# Managed by hakube.\n"
_REDHAT_FAMILY = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn", "anolis"}


# Managed blocks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedBlock:
    """A region hakube owns inside a file it shares with the system.

    The apply layer reads the file, calls `apply_block`, and writes the result back only when it
    differs (keeping the file's existing owner and mode).
    """

    path: str
    content: str
    begin: str = BLOCK_BEGIN
    end: str = BLOCK_END

    def text(self) -> str:
        body = (
            self.content if not self.content or self.content.endswith("\n") else self.content + "\n"
        )
        return f"{self.begin}\n{body}{self.end}\n"


def _block_pattern(begin: str, end: str) -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(begin)}[ \t]*\n.*?^{re.escape(end)}[ \t]*(?:\n|\Z)",
        re.MULTILINE | re.DOTALL,
    )


def apply_block(existing: str, block: ManagedBlock) -> str:
    """`existing` with the block inserted or replaced; applying it twice equals applying once.

    Several copies of the block (from a hand edit) collapse into one at the first position.
    A begin marker without an end marker is refused rather than guessed at.
    """
    matches = list(_block_pattern(block.begin, block.end).finditer(existing))
    if not matches:
        if re.search(rf"^{re.escape(block.begin)}[ \t]*$", existing, re.MULTILINE):
            raise ValueError(f"{block.path}: {block.begin!r} without {block.end!r}; fix by hand")
        prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
        return prefix + block.text()
    first = matches[0]
    out = existing[: first.start()] + block.text()
    pos = first.end()
    for m in matches[1:]:
        out += existing[pos : m.start()]
        pos = m.end()
    return out + existing[pos:]


def remove_block(existing: str, begin: str = BLOCK_BEGIN, end: str = BLOCK_END) -> str:
    """`existing` without any copy of the block (what `reset` leaves behind)."""
    return _block_pattern(begin, end).sub("", existing)


def hosts_block(cluster: Cluster, host: Host) -> ManagedBlock:
    """/etc/hosts entries: the API name as this host must reach it, then every cluster host.

    Per host, because in cloud-lb mode control-plane nodes must resolve the API to themselves
    (the balancer cannot hairpin) while workers resolve it to the balancer.
    """
    lines = [f"{cluster.endpoint_address_for(host)} {cluster.api_name}"]
    lines += [f"{h.address} {h.name}" for h in cluster.hosts]
    return ManagedBlock(path=HOSTS_FILE, content="\n".join(lines) + "\n")


def render_blocks(cluster: Cluster, host: Host) -> list[ManagedBlock]:
    return [hosts_block(cluster, host)]


def remove_swap(fstab: str) -> str:
    """Comment out every active swap entry; already commented lines are left alone."""
    out: list[str] = []
    for line in fstab.splitlines(keepends=True):
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 3 and fields[2] == "swap":
            out.append(SWAP_MARK + line)
        else:
            out.append(line)
    return "".join(out)


def restore_swap(fstab: str) -> str:
    """Undo `remove_swap`: only the lines hakube commented out come back."""
    return "".join(line.removeprefix(SWAP_MARK) for line in fstab.splitlines(keepends=True))


# Kernel --------------------------------------------------------------------------------------


def _is_node(host: Host) -> bool:
    return host.has(Role.CONTROL_PLANE) or host.has(Role.WORKER)


def _holds_vip(cluster: Cluster, host: Host) -> bool:
    # local-lb binds 127.0.0.1 only; just a VIP can be absent when HAProxy binds it.
    if cluster.endpoint.mode is not EndpointMode.VIP:
        return False
    return host.name in {h.name for h in cluster.lb_hosts}


def render_kernel(cluster: Cluster, host: Host) -> list[RenderedFile]:
    node = _is_node(host)
    files = [
        RenderedFile(
            path=SYSCTL_CONF,
            content=render_template(
                "sysctl.conf.j2", kubernetes_node=node, lb_host=_holds_vip(cluster, host)
            ),
            # Restarting systemd-sysctl applies every sysctl.d file, as `sysctl --system` does.
            reload="systemd-sysctl",
        )
    ]
    if node:
        # Sorted before the sysctl drop-in, so br_netfilter exists when its keys are applied.
        files.append(
            RenderedFile(
                path=MODULES_CONF,
                content="# Managed by hakube.\noverlay\nbr_netfilter\n",
                reload="systemd-modules-load",
            )
        )
    return files


# Container runtime ---------------------------------------------------------------------------


def pause_version(minor: tuple[int, int]) -> str:
    """The pause image kubeadm of that minor release pulls."""
    if minor <= (1, 23):
        return "3.6"
    return {(1, 24): "3.7", (1, 25): "3.8"}.get(minor, "3.9" if minor <= (1, 29) else "3.10")


def sandbox_image(cluster: Cluster) -> str:
    k = cluster.kubernetes
    return f"{k.image_repository}/pause:{pause_version(k.minor)}"


def render_runtime(cluster: Cluster, host: Host) -> list[RenderedFile]:
    if not _is_node(host):
        return []
    k = cluster.kubernetes
    if k.runtime is Runtime.DOCKER:
        daemon = {
            # Replaces the tutorial's sed on docker.service: package upgrades keep this file.
            "exec-opts": ["native.cgroupdriver=systemd"],
            "log-driver": "json-file",
            "log-opts": {"max-size": "100m"},
            "storage-driver": "overlay2",
        }
        return [
            RenderedFile(
                path=DOCKER_DAEMON_JSON,
                content=json.dumps(daemon, indent=2) + "\n",
                reload="docker",
            )
        ]
    return [
        RenderedFile(
            path=CONTAINERD_CONF,
            content=render_template(
                "containerd-config.toml.j2",
                k8s_minor="{}.{}".format(*k.minor),
                sandbox_image=sandbox_image(cluster),
            ),
            validate=Validation.run("containerd", "--config", then=("config", "dump")),
            reload="containerd",
        )
    ]


# Packages ------------------------------------------------------------------------------------


def package_manager(cluster: Cluster, os_family: str | None = None) -> PackageManager:
    """apt or yum. `os_family` is the host's os-release ID (or ID_LIKE word) when known.

    For `auto` without facts (plan, golden files) this answers apt: one rendering, not two.
    """
    chosen = cluster.packages.manager
    if chosen is not PackageManager.AUTO:
        return chosen
    family = (os_family or "").lower()
    if family in _REDHAT_FAMILY:
        return PackageManager.YUM
    return PackageManager.APT


def kubernetes_repository(cluster: Cluster, manager: PackageManager) -> str:
    custom = cluster.packages.kubernetes_repository
    if custom:
        return custom
    kind = "deb" if manager is PackageManager.APT else "rpm"
    return f"https://pkgs.k8s.io/core:/stable:/{cluster.kubernetes.package_channel}/{kind}/"


def kubernetes_key_url(cluster: Cluster, manager: PackageManager) -> str | None:
    """Signing key of the Kubernetes repository, in the pkgs.k8s.io layout; None without
    gpg_check. The apply layer fetches (and for apt dearmors into `APT_KEYRING`) this key."""
    if not cluster.packages.gpg_check:
        return None
    base = kubernetes_repository(cluster, manager).split()[0].rstrip("/")
    if manager is PackageManager.APT:
        return f"{base}/Release.key"
    return f"{base}/repodata/repomd.xml.key"


def _apt_line(source: str, options: str, default_rest: str) -> str:
    """`URL SUITE COMPONENT...` is used as written; a bare URL gets `default_rest`."""
    parts = source.split()
    rest = " ".join(parts[1:]) if len(parts) > 1 else default_rest
    opts = f" [{options}]" if options else ""
    return f"deb{opts} {parts[0]} {rest}\n"


def render_kubernetes_repo(
    cluster: Cluster, host: Host, os_family: str | None = None
) -> list[RenderedFile]:
    """The Kubernetes package repository (pkgs.k8s.io or `packages.kubernetes_repository`)."""
    if not _is_node(host):
        return []
    p = cluster.packages
    manager = package_manager(cluster, os_family)
    k8s_repo = kubernetes_repository(cluster, manager)
    if manager is PackageManager.APT:
        opts = f"signed-by={APT_KEYRING}" if p.gpg_check else "trusted=yes"
        # A bare Kubernetes repository URL is flat, like pkgs.k8s.io.
        line = _apt_line(k8s_repo, opts, "/")
        return [RenderedFile(path=APT_KUBERNETES_LIST, content=_HEAD + line, package_source=True)]
    content = render_template(
        "kubernetes.repo.j2",
        baseurl=k8s_repo,
        gpgcheck=1 if p.gpg_check else 0,
        gpgkey=kubernetes_key_url(cluster, manager),
    )
    return [RenderedFile(path=YUM_KUBERNETES_REPO, content=content, package_source=True)]


def render_mirror_repo(
    cluster: Cluster, host: Host, os_family: str | None = None, os_codename: str | None = None
) -> list[RenderedFile]:
    """The distribution mirror (`packages.repository`), on every host: every host installs
    packages (HAProxy, keepalived, etcd, containerd). A bare apt URL needs the release
    codename (os-release VERSION_CODENAME); without it the file carries `CODENAME_PLACEHOLDER`
    and a validation that refuses to install it."""
    p = cluster.packages
    if not p.repository:
        return []
    if package_manager(cluster, os_family) is PackageManager.APT:
        mirror_opts = "" if p.gpg_check else "trusted=yes"
        suite = f"{os_codename or CODENAME_PLACEHOLDER} main"
        line = _apt_line(p.repository, mirror_opts, suite)
        refuse = CODENAME_PLACEHOLDER in line
        return [
            RenderedFile(
                path=APT_MIRROR_LIST,
                content=_HEAD + line,
                validate=Validation.refuse(CODENAME_PLACEHOLDER) if refuse else None,
                package_source=True,
            )
        ]
    content = render_template(
        "mirror.repo.j2", baseurl=p.repository, gpgcheck=1 if p.gpg_check else 0
    )
    return [RenderedFile(path=YUM_MIRROR_REPO, content=content, package_source=True)]


def render_packages(
    cluster: Cluster, host: Host, os_family: str | None = None, os_codename: str | None = None
) -> list[RenderedFile]:
    """Every repository file of the host: Kubernetes first, then the mirror."""
    return [
        *render_kubernetes_repo(cluster, host, os_family),
        *render_mirror_repo(cluster, host, os_family, os_codename),
    ]


def render_host_files(
    cluster: Cluster, host: Host, os_family: str | None = None, os_codename: str | None = None
) -> list[RenderedFile]:
    """The host-level files (kernel, runtime, repositories); nothing here is secret."""
    return [
        *render_kernel(cluster, host),
        *render_runtime(cluster, host),
        *render_packages(cluster, host, os_family, os_codename),
    ]
