"""HAProxy rendering: modes, health checks, stats password handling."""

from __future__ import annotations

from typing import Any

import yaml
from fakes import ROOT, SECRETS

from hakube.render.haproxy import HAPROXY_CFG, render_haproxy
from hakube.spec.load import load_cluster_data, load_cluster_file
from hakube.spec.model import Cluster


def tutorial(**endpoint: Any) -> Cluster:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["endpoint"].update(endpoint)
    return load_cluster_data(data).cluster


def test_vip_mode_binds_all_addresses_on_the_endpoint_port() -> None:
    c = tutorial()
    (f,) = render_haproxy(c, c.hosts[0], SECRETS)
    assert f.path == HAPROXY_CFG
    assert "bind *:16443\n" in f.content
    assert str(f.validate) == "haproxy -c -f {path}"
    assert f.reload == "haproxy"


def test_every_control_plane_is_a_checked_backend() -> None:
    c = tutorial()
    text = render_haproxy(c, c.hosts[0], SECRETS)[0].content
    for h in c.control_planes:
        assert f"server {h.name} {h.address}:6443\n" in text
    assert "option httpchk GET /readyz" in text
    assert "http-check expect status 200" in text
    assert "check check-ssl verify none inter 1000ms fastinter 250ms downinter 1000ms" in text
    assert "on-marked-down shutdown-sessions" in text
    assert "balance roundrobin" in text
    assert "timeout tunnel 1h" in text
    assert "stats socket /run/haproxy/admin.sock mode 600 level admin" in text


def test_a_dead_server_costs_a_short_connect_then_another_server() -> None:
    text = render_haproxy(tutorial(), tutorial().hosts[0], SECRETS)[0].content
    assert "timeout connect 100ms\n" in text
    assert "option redispatch 1\n" in text
    assert "retries 3\n" in text
    assert "observe" not in text
    c = tutorial(haproxy={"connect_timeout_ms": 5000, "retries": 2, "observe_errors": "mark-down"})
    text = render_haproxy(c, c.hosts[0], SECRETS)[0].content
    assert "timeout connect 5000ms\n" in text
    assert "retries 2\n" in text
    assert "observe layer4 error-limit 1 on-error mark-down\n" in text


def test_no_stats_password_unless_stats_page() -> None:
    c = tutorial()
    (f,) = render_haproxy(c, c.hosts[0], SECRETS)
    assert SECRETS.stats_password not in f.content
    assert "stats auth" not in f.content
    assert f.mode == 0o644
    assert not f.secret
    c = tutorial(haproxy={"stats_page": True})
    (f,) = render_haproxy(c, c.hosts[0], SECRETS)
    assert f"stats auth admin:{SECRETS.stats_password}" in f.content
    assert "bind 127.0.0.1:9000" in f.content
    assert f.mode == 0o600
    assert f.secret


def test_local_lb_binds_loopback_on_every_host() -> None:
    c = load_cluster_file(ROOT / "examples/local-lb.yaml").cluster
    for h in c.hosts:
        (f,) = render_haproxy(c, h, SECRETS)
        assert "bind 127.0.0.1:8443\n" in f.content
        assert "bind *" not in f.content


def test_no_haproxy_in_cloud_lb() -> None:
    c = load_cluster_file(ROOT / "examples/aliyun.yaml").cluster
    assert all(render_haproxy(c, h, SECRETS) == [] for h in c.hosts)
