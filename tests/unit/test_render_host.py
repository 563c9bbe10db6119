"""Host files: managed blocks, fstab, sysctl, runtime and package repositories."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fakes import ROOT
from hypothesis import given
from hypothesis import strategies as st

from hakube.render.host import (
    APT_KEYRING,
    APT_KUBERNETES_LIST,
    APT_MIRROR_LIST,
    CODENAME_PLACEHOLDER,
    CONTAINERD_CONF,
    DOCKER_DAEMON_JSON,
    SYSCTL_CONF,
    YUM_KUBERNETES_REPO,
    ManagedBlock,
    apply_block,
    hosts_block,
    package_manager,
    pause_version,
    remove_swap,
    render_host_files,
    render_packages,
)
from hakube.spec.load import load_cluster_data, load_cluster_file
from hakube.spec.model import Cluster, PackageManager

BLOCK = ManagedBlock(path="/etc/hosts", content="10.0.0.1 api\n10.0.0.2 a\n")
FSTAB = """\
UUID=1 / ext4 errors=remount-ro 0 1
/dev/sda2 none swap sw 0 0
# /dev/sda3 none swap sw 0 0
/swapfile none swap defaults 0 0
tmpfs /tmp tmpfs defaults 0 0
"""


def tutorial(**section: Any) -> Cluster:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    for key, value in section.items():
        data[key].update(value)
    return load_cluster_data(data).cluster


def by_path(cluster: Cluster, index: int = 0, **kw: Any) -> dict[str, str]:
    files = render_host_files(cluster, cluster.hosts[index], **kw)
    return {f.path: f.content for f in files}


def test_apply_block_appends_then_replaces() -> None:
    once = apply_block("127.0.0.1 localhost", BLOCK)
    assert once == "127.0.0.1 localhost\n# BEGIN hakube\n10.0.0.1 api\n10.0.0.2 a\n# END hakube\n"
    assert apply_block(once, BLOCK) == once
    changed = ManagedBlock(path="/etc/hosts", content="10.0.0.9 api\n")
    again = apply_block(once + "::1 ip6\n", changed)
    assert again == "127.0.0.1 localhost\n# BEGIN hakube\n10.0.0.9 api\n# END hakube\n::1 ip6\n"


def test_apply_block_collapses_duplicates_and_refuses_half_blocks() -> None:
    twice = "a\n# BEGIN hakube\nx\n# END hakube\nb\n# BEGIN hakube\ny\n# END hakube\n"
    assert apply_block(twice, BLOCK) == "a\n" + BLOCK.text() + "b\n"
    with pytest.raises(ValueError, match="without"):
        apply_block("# BEGIN hakube\nx\n", BLOCK)


@given(st.text(alphabet="ab #\n", max_size=60))
def test_apply_block_is_idempotent(existing: str) -> None:
    try:
        once = apply_block(existing, BLOCK)
    except ValueError:
        return
    assert apply_block(once, BLOCK) == once
    assert once.count(BLOCK.begin) == 1


def test_remove_swap_comments_once() -> None:
    once = remove_swap(FSTAB)
    assert "\n/dev/sda2" not in once
    assert "\n/swapfile" not in once
    assert "# hakube: swap off for kubelet: /dev/sda2 none swap sw 0 0\n" in once
    assert "UUID=1 / ext4" in once
    assert "tmpfs /tmp" in once
    assert remove_swap(once) == once
    assert len(once.splitlines()) == len(FSTAB.splitlines())


def test_hosts_block_per_mode() -> None:
    c = tutorial()
    text = hosts_block(c, c.hosts[0]).content
    assert text.splitlines()[0] == "192.168.2.199 vip"
    assert "192.168.2.208 server8-node1" in text
    assert "127.0.0.1" not in text
    aliyun = load_cluster_file(ROOT / "examples/aliyun.yaml").cluster
    assert hosts_block(aliyun, aliyun.host("master1")).content.startswith(
        "127.0.0.1 apiserver.k8s.internal\n"
    )
    assert hosts_block(aliyun, aliyun.host("node1")).content.startswith(
        "172.16.0.100 apiserver.k8s.internal\n"
    )


def test_sysctl_drop_in() -> None:
    files = by_path(tutorial())
    text = files[SYSCTL_CONF]
    for key in (
        "net.ipv4.ip_forward = 1",
        "net.bridge.bridge-nf-call-iptables = 1",
        "net.bridge.bridge-nf-call-ip6tables = 1",
        "net.ipv4.ip_nonlocal_bind = 1",
        "vm.swappiness = 0",
    ):
        assert key in text
    assert "/etc/sysctl.conf" not in files


@pytest.mark.parametrize(
    ("minor", "version"),
    [
        ((1, 22), "3.6"),
        ((1, 23), "3.6"),
        ((1, 24), "3.7"),
        ((1, 25), "3.8"),
        ((1, 26), "3.9"),
        ((1, 29), "3.9"),
        ((1, 30), "3.10"),
        ((1, 34), "3.10"),
    ],
)
def test_pause_version(minor: tuple[int, int], version: str) -> None:
    assert pause_version(minor) == version


def test_containerd_and_docker() -> None:
    c = tutorial(kubernetes={"runtime": "containerd", "version": "1.30.4"})
    text = by_path(c)[CONTAINERD_CONF]
    assert (
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "  # kubelet uses the systemd cgroup driver; two managers of one hierarchy destabilise "
        "the node.\n  SystemdCgroup = true\n"
    ) in text
    assert (
        'sandbox_image = "registry.cn-hangzhou.aliyuncs.com/google_containers/pause:3.10"' in text
    )
    files = by_path(tutorial())
    assert '"native.cgroupdriver=systemd"' in files[DOCKER_DAEMON_JSON]
    assert CONTAINERD_CONF not in files


def test_yum_repository() -> None:
    text = by_path(tutorial())[YUM_KUBERNETES_REPO]
    assert "baseurl=http://mirrors.aliyun.com/kubernetes/yum/repos/kubernetes-el7-x86_64" in text
    assert "gpgcheck=0" in text
    # pkgs.k8s.io starts at 1.24 (1.22 without a mirror is refused by the spec checks).
    signed = tutorial(
        packages={"manager": "yum", "kubernetes_repository": None, "gpg_check": True},
        kubernetes={"version": "1.30.4", "runtime": "containerd"},
    )
    text = by_path(signed)[YUM_KUBERNETES_REPO]
    assert "baseurl=https://pkgs.k8s.io/core:/stable:/v1.30/rpm/" in text
    assert "gpgcheck=1" in text
    assert "gpgkey=https://pkgs.k8s.io/core:/stable:/v1.30/rpm/repodata/repomd.xml.key" in text


def test_apt_repositories() -> None:
    c = tutorial(
        packages={"manager": "apt", "kubernetes_repository": None, "gpg_check": True},
        kubernetes={"version": "1.30.4", "runtime": "containerd"},
    )
    text = by_path(c)[APT_KUBERNETES_LIST]
    assert f"deb [signed-by={APT_KEYRING}] https://pkgs.k8s.io/core:/stable:/v1.30/deb/ /" in text
    assert APT_MIRROR_LIST not in by_path(c)
    mirrored = tutorial(
        packages={"manager": "apt", "repository": "http://mirror/debian", "gpg_check": False},
    )
    host = mirrored.hosts[0]
    (k8s, mirror) = render_packages(mirrored, host)
    assert k8s.content.endswith(
        "deb [trusted=yes] http://mirrors.aliyun.com/kubernetes/yum/repos/kubernetes-el7-x86_64 /\n"
    )
    assert CODENAME_PLACEHOLDER in mirror.content
    assert mirror.validate is not None
    (_, mirror) = render_packages(mirrored, host, os_codename="bookworm")
    assert mirror.content.endswith("deb [trusted=yes] http://mirror/debian bookworm main\n")
    assert mirror.validate is None


def test_package_manager_auto() -> None:
    c = tutorial(packages={"manager": "auto"})
    assert package_manager(c) is PackageManager.APT
    assert package_manager(c, "debian") is PackageManager.APT
    assert package_manager(c, "rocky") is PackageManager.YUM
    assert package_manager(tutorial(), "debian") is PackageManager.YUM
