"""The drill's tutorial column renders the tutorial's own files, which the real binaries accept."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from fakes import ROOT, SECRETS
from test_render_binaries import HAPROXY, KEEPALIVED, local_iface, run, secure_dir

from hakube.render.haproxy import HAPROXY_CFG
from hakube.render.keepalived import KEEPALIVED_CONF
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube_lab.drill.tutorial import LAB_CHECK, TUTORIAL_CHECK, render_tutorial_lb

__all__ = ["secure_dir"]  # the fixture, imported for the keepalived test


def tutorial(interface: str = "ens37") -> Cluster:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["endpoint"]["interface"] = interface
    return load_cluster_data(data).cluster


def files(c: Cluster, index: int, check: str = TUTORIAL_CHECK) -> dict[str, str]:
    rendered = render_tutorial_lb(c, c.hosts[index], SECRETS, process_check=check)
    return {f.path: f.content for f in rendered}


def test_keepalived_is_the_tutorials_master_backup_vrrpv2_with_killall() -> None:
    c = tutorial()
    first, second = files(c, 0)[KEEPALIVED_CONF], files(c, 1)[KEEPALIVED_CONF]
    assert 'script "/usr/bin/killall -0 haproxy"\ninterval 3\nweight -11\n' in first
    assert "state MASTER\n" in first
    assert "priority 100\n" in first
    assert "state BACKUP\n" in second
    assert "priority 90\n" in second
    for text in (first, second):
        assert "vrrp_version" not in text  # keepalived's default: VRRPv2
        assert "advert_int 1\n" in text
        assert "virtual_router_id 51\n" in text
        assert "auth_type PASS\n" in text
        assert f"auth_pass {SECRETS.vrrp_password[:8]}\n" in text
        assert "interface ens37\n" in text
        assert "        192.168.2.199\n" in text
        # None of hakube's own machinery.
        for word in ("track_file", "check_apiserver", "init_fail", "preempt_delay", "nopreempt"):
            assert word not in text


def test_haproxy_is_the_tutorials_tcp_checks_and_roundrobin_on_the_endpoint_port() -> None:
    c = tutorial()
    text = files(c, 0)[HAPROXY_CFG]
    assert "bind                 *:16443\n" in text
    assert "balance     roundrobin\n" in text
    servers = re.findall(r"^    server  (\S+) (\S+) check$", text, re.M)
    assert servers == [(h.name, f"{h.address}:6443") for h in c.control_planes]
    for word in ("httpchk", "check-ssl", "observe", "on-marked-down"):
        assert word not in text
    assert "timeout connect         10s\n" in text
    assert f"stats auth           admin:{SECRETS.stats_password}\n" in text
    assert "admin:awesomePassword" not in text


def test_lab_check_swaps_only_the_process_test() -> None:
    c = tutorial()
    real, lab = files(c, 0)[KEEPALIVED_CONF], files(c, 0, LAB_CHECK)[KEEPALIVED_CONF]
    assert f'script "{LAB_CHECK}"' in lab
    real_body = [ln for ln in real.splitlines() if not ln.startswith("#")]
    lab_body = [ln for ln in lab.splitlines() if not ln.startswith("#")]
    diff = [(a, b) for a, b in zip(real_body, lab_body, strict=True) if a != b]
    assert diff == [(f'script "{TUTORIAL_CHECK}"', f'script "{LAB_CHECK}"')]


def test_only_lb_hosts_get_files() -> None:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["hosts"].append({"name": "w1", "address": "192.168.2.210", "roles": ["worker"]})
    c = load_cluster_data(data).cluster
    assert render_tutorial_lb(c, c.host("w1"), SECRETS) == []


@pytest.mark.skipif(HAPROXY is None, reason="haproxy not installed")
def test_haproxy_accepts_the_tutorial_file(tmp_path: Path) -> None:
    assert HAPROXY is not None
    c = tutorial()
    for i in range(len(c.hosts)):
        cfg = tmp_path / f"{i}.cfg"
        cfg.write_text(files(c, i)[HAPROXY_CFG])
        result = run(HAPROXY, "-c", "-f", str(cfg))
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived not installed")
@pytest.mark.parametrize("check", [TUTORIAL_CHECK, LAB_CHECK], ids=["killall", "pkill"])
def test_keepalived_accepts_the_tutorial_file(secure_dir: Path, check: str) -> None:
    assert KEEPALIVED is not None
    program = check.split(maxsplit=1)[0]
    if shutil.which(program) is None:
        pytest.skip(f"{program} not installed here")
    c = tutorial(local_iface())
    for i in range(len(c.hosts)):
        conf = secure_dir / f"{i}.conf"
        conf.write_text(files(c, i, check)[KEEPALIVED_CONF])
        result = run(KEEPALIVED, "-t", "-f", str(conf))
        assert result.returncode == 0, result.stdout + result.stderr
