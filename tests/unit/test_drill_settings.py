"""Scenario gating and the tutorial's settings as a spec variant."""

from __future__ import annotations

import pytest

from hakube.render.keepalived import render_keepalived
from hakube.secrets import Secrets
from hakube.spec.model import Cluster
from hakube_lab.drill.policy import check_allowed
from hakube_lab.drill.scenarios import ALL, DrillError
from hakube_lab.drill.workflow import tutorial_settings


def cluster() -> Cluster:
    return Cluster.model_validate({
        "apiVersion": "hakube/v1alpha1", "kind": "Cluster", "name": "t",
        "endpoint": {"mode": "vip", "vip": "10.0.0.100", "port": 8443},
        "hosts": [{"name": f"cp{i}", "address": f"10.0.0.1{i}", "roles": ["control-plane"]}
                  for i in (1, 2, 3)],
    })  # fmt: skip


def test_every_known_scenario_is_allowed_and_an_unknown_one_is_refused() -> None:
    check_allowed(ALL)
    with pytest.raises(DrillError, match="unknown scenario"):
        check_allowed(["nope"])


def test_drill_has_no_allow_poweroff_option() -> None:
    """The drill only runs on the lab: a real-site power-off switch could never do anything."""
    from typer.testing import CliRunner

    from hakube.cli import app

    res = CliRunner().invoke(app, ["drill", "--help"])
    assert res.exit_code == 0, res.output
    assert "--lab" in res.stdout
    assert "poweroff" not in res.stdout


def test_tutorial_settings_render_vrrpv2_without_track_file() -> None:
    c = cluster()
    t = tutorial_settings(c)
    assert c.endpoint.vrrp.version == 3  # the original is untouched
    v = t.endpoint.vrrp
    assert (v.version, v.advert_interval, v.check_interval, v.check_weight) == (2, 1, 3, -11)
    assert not v.track_haproxy_state
    conf = render_keepalived(t, t.hosts[0], Secrets.generate())[0].content
    assert "vrrp_version 2" in conf
    assert "advert_int 1\n" in conf
    assert "weight -11" in conf
    assert "track_file" not in conf
