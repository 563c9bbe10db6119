"""The real haproxy and keepalived accept what hakube renders (`-c` / `-t`)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import ROOT, SECRETS

from hakube.render import render_all
from hakube.render.keepalived import CHECK_SCRIPT, KEEPALIVED_CONF
from hakube.spec.load import load_cluster_data, load_cluster_file
from hakube.spec.model import Cluster

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
KEEPALIVED = shutil.which("keepalived") or (
    "/usr/sbin/keepalived" if Path("/usr/sbin/keepalived").exists() else None
)


def local_iface() -> str:
    """A real, non-loopback NIC: keepalived -t rejects interfaces that do not exist."""
    for name in sorted(os.listdir("/sys/class/net")):
        if name != "lo" and Path(f"/sys/class/net/{name}/address").exists():
            return name
    pytest.skip("no network interface to test keepalived against")


def vip_cluster(**vrrp: Any) -> Cluster:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["endpoint"]["interface"] = local_iface()
    data["endpoint"]["vrrp"] = vrrp
    return load_cluster_data(data).cluster


@pytest.fixture
def secure_dir() -> Iterator[Path]:
    # keepalived refuses scripts whose path has a directory writable by others (like /tmp)
    # while enable_script_security is on; /root is 0700 when running as root.
    if os.geteuid() != 0:
        pytest.skip("keepalived -t needs root")
    d = Path(tempfile.mkdtemp(prefix="hakube-ka-", dir="/root"))
    d.chmod(0o700)
    yield d
    shutil.rmtree(d)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived not installed")
@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("preempt", [True, False], ids=["preempt", "nopreempt"])
@pytest.mark.parametrize("track", [True, False], ids=["trackfile", "notrack"])
def test_keepalived_accepts(
    secure_dir: Path, unicast: bool, version: int, preempt: bool, track: bool
) -> None:
    assert KEEPALIVED is not None
    # preempt_delay only exists beside preemption: validation refuses it with nopreempt.
    delay = {"preempt_delay": 3} if preempt else {}
    c = vip_cluster(
        unicast=unicast,
        version=version,
        advert_interval=1 if version == 2 else 0.1,
        preempt=preempt,
        track_haproxy_state=track,
        rt_priority=10,
        **delay,
    )
    for host_name, files in render_all(c, SECRETS).items():
        by_path = {f.path: f for f in files}
        script = secure_dir / "check_apiserver.sh"
        script.write_text(by_path[CHECK_SCRIPT].content)
        script.chmod(by_path[CHECK_SCRIPT].mode)
        conf = secure_dir / f"{host_name}.conf"
        # Honest substitution: only the script's location changes, so -t checks the real file.
        conf.write_text(by_path[KEEPALIVED_CONF].content.replace(CHECK_SCRIPT, str(script)))
        validate = by_path[KEEPALIVED_CONF].validate
        assert validate is not None
        result = run(
            *[
                KEEPALIVED if a == "keepalived" else a
                for a in shlex.split(validate.command(str(conf)))
            ]
        )
        assert result.returncode == 0, f"{host_name}: {result.stdout}{result.stderr}"


HAPROXY_SPECS = [
    ROOT / "examples/tutorial.yaml",
    ROOT / "examples/local-lb.yaml",
    ROOT / "tests/data/specs/vip-unicast-nopreempt.yaml",
    ROOT / "tests/data/specs/tutorial-settings.yaml",
]


@pytest.mark.skipif(HAPROXY is None, reason="haproxy not installed")
@pytest.mark.parametrize("spec", HAPROXY_SPECS, ids=lambda p: p.stem)
def test_haproxy_accepts(spec: Path, tmp_path: Path) -> None:
    assert HAPROXY is not None
    c = load_cluster_file(spec).cluster
    checked = 0
    for host_name, files in render_all(c, SECRETS).items():
        for f in files:
            if f.path != "/etc/haproxy/haproxy.cfg":
                continue
            cfg = tmp_path / f"{host_name}.cfg"
            cfg.write_text(f.content)
            assert f.validate is not None
            argv = shlex.split(f.validate.command(str(cfg)))
            cmd = [HAPROXY if a == "haproxy" else a for a in argv]
            result = run(*cmd)
            assert result.returncode == 0, f"{host_name}: {result.stdout}{result.stderr}"
            assert "[WARNING]" not in result.stdout + result.stderr
            checked += 1
    assert checked > 0


@pytest.mark.skipif(HAPROXY is None, reason="haproxy not installed")
@pytest.mark.parametrize("on_error", ["off", "mark-down", "sudden-death", "fail-check"])
def test_haproxy_accepts_every_observe_setting(on_error: str, tmp_path: Path) -> None:
    assert HAPROXY is not None
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["endpoint"]["haproxy"] = {"observe_errors": on_error, "connect_timeout_ms": 50}
    c = load_cluster_data(data).cluster
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(next(f for f in render_all(c, SECRETS)[c.hosts[0].name]
                        if f.path == "/etc/haproxy/haproxy.cfg").content)  # fmt: skip
    result = run(HAPROXY, "-c", "-f", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout + result.stderr
