"""keepalived rendering: priorities, weights, VRRP versions, unicast, track file."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import ROOT, SECRETS
from hypothesis import given
from hypothesis import strategies as st

from hakube.render.base import render_template
from hakube.render.keepalived import (
    CHECK_SCRIPT,
    HAPROXY_DROPIN,
    KEEPALIVED_CONF,
    SCHED_DROPIN,
    TRACK_FILE,
    check_weight,
    default_check_weight,
    priorities,
    render_haproxy_tracking,
    render_keepalived,
    scheduling_command,
    vrrp_priorities,
)
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster


def tutorial(**vrrp: Any) -> Cluster:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data = copy.deepcopy(data)
    data["endpoint"]["vrrp"] = vrrp
    return load_cluster_data(data).cluster


def conf(cluster: Cluster, index: int = 0) -> str:
    files = {f.path: f for f in render_keepalived(cluster, cluster.hosts[index], SECRETS)}
    return files[KEEPALIVED_CONF].content


def test_priorities_distinct_descending_never_255() -> None:
    assert vrrp_priorities(3) == [200, 190, 180]
    for n in range(1, 251):
        p = vrrp_priorities(n)
        assert len(set(p)) == n
        assert p == sorted(p, reverse=True)
        assert min(p) >= 1
        assert max(p) <= 254


def test_tutorial_priorities_and_weight() -> None:
    c = tutorial(preempt=True)
    prios = priorities(c)
    assert list(prios.values()) == [200, 190, 180]
    w = check_weight(c)
    assert abs(w) > max(prios.values()) - min(prios.values())
    # Without preemption only FAULT gives the VIP away.
    assert check_weight(tutorial(preempt=False)) == 0
    for i, h in enumerate(c.hosts):
        assert f"priority {prios[h.name]}\n" in conf(c, i)


@given(
    n=st.integers(min_value=1, max_value=9),
    preempt=st.booleans(),
    explicit=st.one_of(st.none(), st.integers(min_value=-253, max_value=-1)),
)
def test_single_failure_drops_below_every_healthy_host(
    n: int, preempt: bool, explicit: int | None
) -> None:
    # An explicit weight can only be honoured when |w| >= n (distinct priorities need a gap
    # of at least 1 between neighbours); the spec checks are expected to refuse smaller ones.
    if explicit is not None and abs(explicit) < n:
        explicit = -n
    prios = vrrp_priorities(n, explicit)
    weight = explicit if explicit is not None else default_check_weight(prios, preempt)
    for failed in range(n):
        # Weight 0 means FAULT: the failed host advertises priority 0.
        effective = 0 if weight == 0 else prios[failed] + weight
        healthy = [p for i, p in enumerate(prios) if i != failed]
        assert all(effective < p for p in healthy)


def test_nopreempt_uses_fault_and_backup() -> None:
    c = tutorial(preempt=False)
    text = conf(c)
    assert "nopreempt" in text
    assert "weight 0\n" in text
    assert "state BACKUP" in text
    assert "state MASTER" not in text
    assert "preempt_delay" not in text


def test_preempt_delay_only_with_preempt() -> None:
    assert "preempt_delay 7" in conf(tutorial(preempt_delay=7, preempt=True))
    assert "preempt_delay" not in conf(tutorial(preempt=False))
    assert "nopreempt" in conf(tutorial(preempt=False))


def test_vrrp_v2_auth_truncated_v3_without_auth() -> None:
    v2 = conf(tutorial(version=2, advert_interval=1))
    m = re.search(r"auth_pass (\S+)", v2)
    assert m is not None
    assert m[1] == SECRETS.vrrp_password[:8]
    assert "advert_int 1\n" in v2
    assert "vrrp_version 2" in v2
    v3 = conf(tutorial())
    assert "authentication" not in v3
    assert "advert_int 0.05\n" in v3
    assert "vrrp_version 3" in v3


def test_v2_file_is_secret_v3_still_private() -> None:
    c = tutorial(version=2, advert_interval=1)
    f = next(f for f in render_keepalived(c, c.hosts[0], SECRETS) if f.path == KEEPALIVED_CONF)
    assert f.secret
    assert f.mode == 0o600
    assert str(f.validate) == "keepalived -t -f {path}"


def test_unicast_peers_are_the_other_lb_hosts() -> None:
    c = tutorial(unicast=True)
    text = conf(c, 1)
    assert "unicast_src_ip 192.168.2.208" in text
    peers = re.search(r"unicast_peer \{\n(.*?)\n\s*\}", text, re.S)
    assert peers is not None
    assert peers[1].split() == ["192.168.2.207", "192.168.2.209"]
    assert "vrrp_strict" not in text


def test_vip_interface_and_prefix() -> None:
    text = conf(tutorial())
    assert "192.168.2.199/24 dev ens37" in text
    assert "interface ens37" in text


def test_tutorial_settings_are_expressible() -> None:
    c = tutorial(
        version=2,
        advert_interval=1,
        check_interval=3,
        check_weight=-11,
        track_haproxy_state=False,
        preempt=True,
    )
    text = conf(c)
    assert "interval 3\n" in text
    assert "weight -11\n" in text
    assert "advert_int 1\n" in text
    assert "vrrp_track_file" not in text
    # The priorities shrink to keep |w| = 11 larger than their spread.
    prios = list(priorities(c).values())
    assert max(prios) - min(prios) < 11
    lb_files = render_keepalived(c, c.hosts[0], SECRETS) + render_haproxy_tracking(c, c.hosts[0])
    assert HAPROXY_DROPIN not in {f.path for f in lb_files}


def test_track_file_and_dropin() -> None:
    c = tutorial()
    rendered = render_keepalived(c, c.hosts[0], SECRETS) + render_haproxy_tracking(c, c.hosts[0])
    files = {f.path: f for f in rendered}
    assert f'file "{TRACK_FILE}"' in files[KEEPALIVED_CONF].content
    assert "initialised from HAProxy's current state" in files[KEEPALIVED_CONF].content
    dropin = files[HAPROXY_DROPIN]
    assert f"echo 0 > {TRACK_FILE}" in dropin.content
    assert f"echo 1 > {TRACK_FILE}" in dropin.content
    assert "ExecStartPost=" in dropin.content
    assert "ExecStopPost=" in dropin.content
    assert dropin.daemon_reload


def test_check_script_goes_through_haproxy() -> None:
    c = tutorial()
    files = {f.path: f for f in render_keepalived(c, c.hosts[0], SECRETS)}
    script = files[CHECK_SCRIPT]
    assert script.mode == 0o700
    assert "curl -sfk --max-time 2 -o /dev/null https://127.0.0.1:16443/readyz" in script.content


def test_check_waits_out_a_resent_syn_and_init_fail_is_opt_in() -> None:
    text = conf(tutorial(preempt=True))
    assert "    timeout 4\n" in text  # curl's 2 s plus the socket fallback
    assert "init_fail" not in text  # re-armed on every reload: a live roll would move the VIP
    assert "preempt_delay 3\n" in text
    assert "    init_fail\n" in conf(tutorial(check_init_fail=True))
    text = conf(tutorial(check_init_fail=False, check_timeout=5, preempt_delay=0, preempt=True))
    assert "init_fail" not in text
    assert "    timeout 7\n" in text
    assert "preempt_delay" not in text


def test_all_backends_down_passes_only_where_failing_means_fault() -> None:
    # With a negative weight every host drops alike, so failing is safe and a host back from
    # isolation with nothing UP does not look healthy; with weight 0 (FAULT) nobody would hold
    # the VIP before `kubeadm init`.
    def script(c: Cluster) -> str:
        return {f.path: f for f in render_keepalived(c, c.hosts[0], SECRETS)}[CHECK_SCRIPT].content

    assert "socat" not in script(tutorial(preempt=True))
    assert "exit 1" in script(tutorial(preempt=True))
    assert "socat" in script(tutorial(preempt=False))
    assert "socat" in script(tutorial(check_weight=0, preempt=True))


def test_keepalived_runs_real_time_from_its_unit_and_null_turns_it_off() -> None:
    def files(c: Cluster) -> dict[str, str]:
        return {f.path: f.content for f in render_keepalived(c, c.hosts[0], SECRETS)}

    default, twenty, off = (
        files(tutorial()),
        files(tutorial(rt_priority=20)),
        files(tutorial(rt_priority=None)),
    )
    assert "CPUSchedulingPolicy=rr\nCPUSchedulingPriority=50\n" in default[SCHED_DROPIN]
    assert "CPUSchedulingPriority=20\n" in twenty[SCHED_DROPIN]
    # Null is written too: a host that ran real-time must go back to normal scheduling.
    assert "CPUSchedulingPolicy=other\n" in off[SCHED_DROPIN]
    assert "CPUSchedulingPriority" not in off[SCHED_DROPIN]
    # Never keepalived's own real-time handling: its RLIMIT_RTTIME killed the VRRP process on
    # reloads in the lab.
    assert all("vrrp_rt_priority" not in f[KEEPALIVED_CONF] for f in (default, twenty, off))
    # The health script inherits the scheduling and leaves real-time first.
    assert "chrt -o -p 0 $$" in default[CHECK_SCRIPT]
    assert "chrt" not in off[CHECK_SCRIPT]


def test_scheduling_command_text_has_the_policy_the_pid_loop_and_the_gone_process_guard() -> None:
    assert "chrt -r -p 50 $p" in scheduling_command(50)
    assert "chrt -o -p 0 $p" in scheduling_command(None)
    assert "pgrep -x keepalived" in scheduling_command(50)
    assert "! kill -0 $p || exit 1" in scheduling_command(50)


def test_only_lb_hosts_in_vip_mode() -> None:
    data = yaml.safe_load((ROOT / "examples/tutorial.yaml").read_text())
    data["hosts"].append({"name": "w1", "address": "192.168.2.220", "roles": ["worker"]})
    c = load_cluster_data(data).cluster
    assert render_keepalived(c, c.host("w1"), SECRETS) == []
    data["endpoint"] = {"mode": "local-lb", "port": 8443}
    c = load_cluster_data(data).cluster
    assert all(render_keepalived(c, h, SECRETS) == [] for h in c.hosts)


@pytest.mark.parametrize(
    ("initialised", "backend", "passes"),
    [(False, "DOWN", True), (False, "UP", False), (True, "DOWN", False)],
)
def test_check_script_passes_on_all_backends_down_only_before_init(
    tmp_path: Path, initialised: bool, backend: str, passes: bool
) -> None:
    """Run the real script: /readyz unanswered, HAProxy's socket says the backend's state."""
    marker = tmp_path / "initialised"
    if initialised:
        marker.write_text("x\n")
    script = tmp_path / "check.sh"
    script.write_text(
        render_template(
            "check_apiserver.sh.j2",
            port=8443,
            stats_socket="/nonexistent",
            init_marker=marker,
            timeout=2,
            all_down_passes=True,
            realtime=True,
        )
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text("#!/bin/sh\nexit 7\n")  # nothing answers /readyz
    stat_line = "kube-apiserver,BACKEND," + ",".join(["0"] * 15) + f",{backend},"
    (bin_dir / "socat").write_text(f"#!/bin/sh\ncat >/dev/null\necho '{stat_line}'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    res = subprocess.run(["sh", str(script)], env=env, check=False)
    assert (res.returncode == 0) is passes


def test_sub_second_adverts_need_five_missed_before_a_backup_takes_over() -> None:
    text = conf(tutorial())
    assert re.search(r"^\s+advert_int 0\.05$", text, re.M)
    assert re.search(r"^\s+down_timer_adverts 5$", text, re.M)


def test_whole_second_adverts_keep_the_rfc_three_missed_adverts() -> None:
    text = conf(tutorial(version=2, advert_interval=1))
    assert "down_timer_adverts" not in text


def test_an_explicit_down_timer_adverts_is_rendered_as_given() -> None:
    assert re.search(r"^\s+down_timer_adverts 7$", conf(tutorial(down_timer_adverts=7)), re.M)
    assert "down_timer_adverts" not in conf(tutorial(down_timer_adverts=3))
