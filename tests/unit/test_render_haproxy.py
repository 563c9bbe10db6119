"""HAProxy rendering: modes, health checks, stats password handling."""

from __future__ import annotations

from typing import Any

import yaml
from fakes import ROOT, SECRETS

from hakube.render.haproxy import HAPROXY_CFG, SERVER_STATE, STATE_DROPIN, render_haproxy
from hakube.spec.load import load_cluster_data, load_cluster_file
from hakube.spec.model import Cluster


def tutorial(**endpoint: Any) -> Cluster:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["endpoint"].update(endpoint)
    return load_cluster_data(data).cluster


def test_vip_mode_binds_all_addresses_on_the_endpoint_port() -> None:
    c = tutorial()
    f = render_haproxy(c, c.hosts[0], SECRETS)[0]
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


def backend(text: str, name: str) -> str:
    """One `backend` section of a rendered haproxy.cfg."""
    start = text.index(f"\nbackend {name}\n")
    end = text.find("\n\n", text.find("    server ", start))
    return text[start:] if end < 0 else text[start : end + 1]


def test_checks_run_in_their_own_backend_with_a_connect_timeout_of_one_interval() -> None:
    # A check's connect + TLS handshake under the 100 ms client connect timeout marked busy
    # apiservers DOWN (Layer6 timeout) and cut their sessions.
    c = tutorial(haproxy={"check_inter_ms": 1500})
    text = render_haproxy(c, c.hosts[0], SECRETS)[0].content
    serving, checks = backend(text, "kube-apiserver"), backend(text, "kube-apiserver-checks")
    for h in c.control_planes:
        assert f"server {h.name} {h.address}:6443 track kube-apiserver-checks/{h.name}\n" in serving
        assert f"server {h.name} {h.address}:6443\n" in checks
    assert " check" not in serving
    assert "httpchk" not in serving
    assert "default-server on-marked-down shutdown-sessions\n" in serving
    assert "timeout connect 1500ms\n" in checks
    assert "option httpchk GET /readyz" in checks
    assert "default-server check check-ssl verify none inter 1500ms fastinter 250ms" in checks
    assert "timeout connect 100ms\n" in text.split("\nfrontend ")[0]


def test_observed_servers_run_their_own_checks() -> None:
    # HAProxy only observes servers that check themselves: a tracking server ignores `observe`.
    c = tutorial(haproxy={"observe_errors": "sudden-death"})
    text = render_haproxy(c, c.hosts[0], SECRETS)[0].content
    assert "kube-apiserver-checks" not in text
    assert "track " not in text
    serving = backend(text, "kube-apiserver")
    assert "option httpchk GET /readyz" in serving
    observe = "on-marked-down shutdown-sessions observe layer4 error-limit 1 on-error sudden-death"
    assert observe in serving


def test_a_reload_keeps_server_states_and_a_start_forgets_them() -> None:
    c = tutorial()
    cfg, dropin = render_haproxy(c, c.hosts[0], SECRETS)
    assert f"server-state-file {SERVER_STATE}\n" in cfg.content
    assert "load-server-state-from-file global\n" in cfg.content
    assert dropin.path == STATE_DROPIN
    assert dropin.daemon_reload
    assert f"ExecStartPre=/bin/sh -c 'mkdir -p /var/lib/haproxy && echo 1 > {SERVER_STATE}'" in (
        dropin.content
    )


def test_no_stats_password_unless_stats_page() -> None:
    c = tutorial()
    f = render_haproxy(c, c.hosts[0], SECRETS)[0]
    assert SECRETS.stats_password not in f.content
    assert "stats auth" not in f.content
    assert f.mode == 0o644
    assert not f.secret
    c = tutorial(haproxy={"stats_page": True})
    f = render_haproxy(c, c.hosts[0], SECRETS)[0]
    assert f"stats auth admin:{SECRETS.stats_password}" in f.content
    assert "bind 127.0.0.1:9000" in f.content
    assert f.mode == 0o600
    assert f.secret


def test_local_lb_binds_loopback_on_every_host() -> None:
    c = load_cluster_file(ROOT / "examples/local-lb.yaml").cluster
    for h in c.hosts:
        f = render_haproxy(c, h, SECRETS)[0]
        assert "bind 127.0.0.1:8443\n" in f.content
        assert "bind *" not in f.content


def test_no_haproxy_in_cloud_lb() -> None:
    c = load_cluster_file(ROOT / "examples/aliyun.yaml").cluster
    assert all(render_haproxy(c, h, SECRETS) == [] for h in c.hosts)
