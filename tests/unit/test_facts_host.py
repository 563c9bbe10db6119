"""The facts script and its parser: run for real on this machine, and on a checked-in sample."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakube.facts.host import (
    MARK,
    UNITS,
    FactsError,
    FileState,
    HostFacts,
    Unit,
    asked_files,
    facts_script,
    parse_facts,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "facts"
SAMPLE = DATA / "debian12-container.txt"


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value.strip('"')
    return out


def _meminfo_mb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"{key} not in /proc/meminfo")


@pytest.fixture
def listening_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def local_facts(tmp_path: Path, listening_port: int) -> tuple[HostFacts, Path, bytes]:
    probe = tmp_path / "with space.conf"
    content = b"frontend apiserver\n  bind *:8443\n"
    probe.write_bytes(content)
    probe.chmod(0o640)
    missing = tmp_path / "absent.conf"
    script = facts_script([str(probe), str(missing)])
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return parse_facts(proc.stdout), probe, content


@pytest.mark.skipif(not Path("/etc/os-release").exists(), reason="needs /etc/os-release")
def test_facts_script_runs_for_real_and_parses(
    local_facts: tuple[HostFacts, Path, bytes], listening_port: int
) -> None:
    f, probe, content = local_facts
    osr = _os_release()
    assert f.os.id == osr["ID"]
    assert f.os.version == osr.get("VERSION_ID", "")
    assert f.os.pretty == osr.get("PRETTY_NAME", "")
    assert f.hostname == socket.gethostname()
    assert f.cpus == len(os.sched_getaffinity(0))
    assert f.cpus > 0
    assert f.mem_mb == _meminfo_mb("MemTotal")
    assert f.mem_mb > 0
    assert f.swap_mb == _meminfo_mb("SwapTotal")
    assert isinstance(f.units, dict)
    assert set(f.units) <= set(UNITS)
    assert all(isinstance(u, Unit) for u in f.units.values())
    # Only the files that exist are reported, with the same digest and mode as seen locally.
    owner = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
    assert f.files == {str(probe): FileState(hashlib.sha256(content).hexdigest(), 0o640, owner)}
    if shutil.which("ss"):
        assert listening_port in f.listening
    assert f.etc_hosts == Path("/etc/hosts").read_text().rstrip("\n") + "\n"


def test_sample_debian12_container_os_and_hardware() -> None:
    f = parse_facts(SAMPLE.read_text())
    assert (f.os.id, f.os.like, f.os.version) == ("debian", (), "12")
    assert f.os.pretty == "Debian GNU/Linux 12 (bookworm)"
    assert f.package_family == "apt"
    assert f.hostname == "cp1"
    assert f.cpus == 2
    assert f.mem_mb == 4028116 // 1024
    assert f.swap_mb == 1048572 // 1024
    assert f.active_swaps == ["/dev/dm-1"]
    assert f.product_uuid == "4c4c4544-0042-3510-8052-b4c04f4e3432"
    assert f.container == "systemd-nspawn"


def test_sample_debian12_container_network() -> None:
    f = parse_facts(SAMPLE.read_text())
    # "host0@if14" is the veth name as `ip -o link` prints it; the peer suffix is dropped.
    assert f.macs == {"host0": "3e:8b:9a:5f:21:c4"}
    assert f.addresses == {
        "lo": ["127.0.0.1/8"],
        "host0": ["10.88.0.11/24", "10.88.0.10/32"],
    }
    assert f.has_address("10.88.0.10") == "host0"
    assert f.has_address("10.88.0.99") is None
    assert f.listening == {8443, 2379, 2380, 22}


def test_sample_debian12_container_units() -> None:
    f = parse_facts(SAMPLE.read_text())
    assert set(f.units) == set(UNITS)
    assert f.units["haproxy"] == Unit("haproxy", True, "active", "enabled")
    assert f.units["etcd"] == Unit("etcd", True, "activating", "enabled")
    assert f.units["containerd"] == Unit("containerd", True, "failed", "disabled")
    assert f.units["docker"] == Unit("docker", False, "inactive", "")
    assert f.unit("haproxy").running
    assert not f.unit("etcd").running
    assert not f.unit("containerd").running
    # A unit the script did not report reads as absent, not as an error.
    assert f.unit("nginx") == Unit("nginx", False, "inactive", "")


def test_sample_debian12_container_packages_and_files() -> None:
    f = parse_facts(SAMPLE.read_text())
    # "un" (known, not installed) and "rc" (removed, config left) are not installed.
    assert f.packages == {
        "ca-certificates": "20230311",
        "containerd": "1.6.20~ds1-1+b1",
        "curl": "7.88.1-10+deb12u5",
        "etcd-server": "3.4.23-4+b6",
        "haproxy": "2.6.12-1+deb12u1",
        "keepalived": "1:2.2.7-1+b2",
    }
    assert f.held == {"containerd"}
    assert f.files == {
        "/etc/haproxy/haproxy.cfg": FileState(
            "5f2b0c47e7d0b43a6b4f2a6a1e7c6f9b9a3f0e7d2c1b4a5968778695a4b3c2d1", 0o644, "root:root"
        ),
        "/etc/keepalived/keepalived.conf": FileState(
            "0b7e1a4c9d2f3e5a6b8c7d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c", 0o600, "root:root"
        ),
        "/etc/etcd/pki/server.key": FileState(
            "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c4b3", 0o600, "root:etcd"
        ),
    }
    # The cluster the host belongs to, and what a killed install left behind.
    assert f.cluster_id == "4d6f0b1e-8a52-4c1b-9d0e-2f7a3c9b5e11"
    assert f.policy_rc_left
    assert f.policy_rc_saved == ["/usr/sbin/policy-rc.d.hakube-saved.Xy12ab"]


def test_sample_debian12_container_kernel_and_system_files() -> None:
    f = parse_facts(SAMPLE.read_text())
    assert f.time_synced is True
    assert f.modules == {
        "xt_conntrack",
        "br_netfilter",
        "bridge",
        "overlay",
        "veth",
        "nf_conntrack",
    }
    # A key whose value could not be read (empty) is left out rather than stored as "".
    assert f.sysctl == {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.ip_nonlocal_bind": "1",
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1",
    }
    assert f.selinux == ""
    assert f.etc_hosts == (
        "127.0.0.1\tlocalhost\n"
        "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        "127.0.1.1\tcp1\n"
        "# BEGIN hakube\n"
        "10.88.0.10 api.lab.hakube.internal\n"
        "10.88.0.11 cp1\n"
        "# END hakube\n"
    )
    assert f.fstab == (
        "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n/dev/mapper/vg0-swap none swap sw 0 0\n"
    )


def test_truncated_output_without_end_marker_raises() -> None:
    text = SAMPLE.read_text()
    cut = text[: text.index(f"{MARK}listen")]
    with pytest.raises(FactsError, match="no end marker"):
        parse_facts(cut)


def test_empty_output_raises() -> None:
    with pytest.raises(FactsError):
        parse_facts("")


def test_held_packages_count_as_installed() -> None:
    text = SAMPLE.read_text().replace(
        "kubectl 1.30.4-1.1 rc ", "kubectl 1.30.4-1.1 hi \nkubelet 1.30.4-1.1 hi "
    )
    f = parse_facts(text)
    assert f.packages.get("kubectl") == "1.30.4-1.1"
    assert f.packages.get("kubelet") == "1.30.4-1.1"


def test_a_facts_script_names_the_files_it_reports_on() -> None:
    assert asked_files(facts_script(["/etc/b", "/etc/a b", "/etc/b"])) == ["/etc/a b", "/etc/b"]
    with pytest.raises(FactsError):
        asked_files("echo hello\n")
