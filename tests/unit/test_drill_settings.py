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


def test_real_site_refuses_lab_only_and_poweroff() -> None:
    check_allowed(ALL, lab=object(), allow_poweroff=False)  # type: ignore[arg-type]
    with pytest.raises(DrillError, match="lab only"):
        check_allowed(["isolate"], lab=None, allow_poweroff=True)
    with pytest.raises(DrillError, match="allow-poweroff"):
        check_allowed(["host-down"], lab=None, allow_poweroff=False)
    check_allowed(["host-down", "haproxy-down"], lab=None, allow_poweroff=True)
    with pytest.raises(DrillError, match="unknown"):
        check_allowed(["nope"], lab=None, allow_poweroff=False)


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
