"""Each bug of the hand-written tutorial, shown fixed in what hakube renders for tutorial.yaml."""

from __future__ import annotations

import re

import yaml
from fakes import ROOT, SECRETS

from hakube.render import RenderedFile, apply_block, remove_swap, render_all, render_host_blocks
from hakube.render.keepalived import check_weight, priorities
from hakube.spec.load import load_cluster_data, load_cluster_file
from hakube.spec.model import Cluster


def cluster() -> Cluster:
    return load_cluster_file(ROOT / "examples/tutorial.yaml").cluster


def files() -> list[RenderedFile]:
    return [f for fs in render_all(cluster(), SECRETS).values() for f in fs]


def test_lb_port_is_actually_used() -> None:
    c = cluster()
    fs = render_all(c, SECRETS)[c.hosts[0].name]
    init = next(f for f in fs if f.path.endswith("init.yaml"))
    cc = next(d for d in yaml.safe_load_all(init.content) if d["kind"] == "ClusterConfiguration")
    assert cc["controlPlaneEndpoint"] == "vip:16443"
    haproxy = next(f for f in fs if f.path == "/etc/haproxy/haproxy.cfg")
    assert "bind *:16443" in haproxy.content


def test_pod_subnet_is_real_and_no_shell_variables() -> None:
    for f in files():
        assert "${" not in f.content, f.path
        assert "10.100.0.1/16" not in f.content, f.path
    init = next(f for f in files() if f.path.endswith("init.yaml"))
    assert "podSubnet: 10.100.0.0/16" in init.content


def test_sysctl_in_a_drop_in_and_shared_files_edited_idempotently() -> None:
    paths = {f.path for f in files()}
    assert "/etc/sysctl.d/90-hakube.conf" in paths
    assert "/etc/sysctl.conf" not in paths
    c = cluster()
    original = "127.0.0.1 localhost\n"
    for h in c.hosts:
        (block,) = render_host_blocks(c, h)
        once = apply_block(original, block)
        assert apply_block(once, block) == once
        assert f"127.0.0.1 {h.name}" not in once
    fstab = "/dev/sda1 / xfs defaults 0 0\n/dev/sda2 swap swap defaults 0 0\n"
    assert remove_swap(remove_swap(fstab)) == remove_swap(fstab)


def test_stats_password_never_in_clear_without_the_stats_page() -> None:
    for f in files():
        assert SECRETS.stats_password not in f.content
        if f.path == "/etc/haproxy/haproxy.cfg":
            assert "stats auth" not in f.content


def test_no_pipe_to_shell() -> None:
    for f in files():
        assert not re.search(r"(curl|wget)[^\n|]*\|\s*(ba)?sh", f.content), f.path


def test_priorities_distinct_descending_and_a_failed_check_gives_the_vip_away() -> None:
    c = cluster()
    prios = list(priorities(c).values())
    assert prios == sorted(set(prios), reverse=True)
    # With preemption (the default) the weight drops a failed host below every healthy one.
    assert c.endpoint.vrrp.preempt
    assert abs(check_weight(c)) > max(prios) - min(prios)


def test_vrrp_v2_auth_pass_at_most_8() -> None:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["endpoint"]["vrrp"] = {"version": 2, "advert_interval": 1}
    c = load_cluster_data(data).cluster
    for fs in render_all(c, SECRETS).values():
        for f in fs:
            for m in re.finditer(r"auth_pass (\S+)", f.content):
                assert len(m[1]) <= 8


def test_secret_files_are_private() -> None:
    for f in files():
        if SECRETS.bootstrap_token in f.content or SECRETS.certificate_key in f.content:
            assert f.secret, f.path
            assert f.mode == 0o600, f.path
