"""External etcd members: the settings that matter for failover."""

from __future__ import annotations

from hakube.render.etcd import ETCD_ENV_FILE, render_etcd
from hakube.spec.model import Cluster


def cluster() -> Cluster:
    return Cluster.model_validate({
        "apiVersion": "hakube/v1alpha1", "kind": "Cluster", "name": "t",
        "endpoint": {"mode": "vip", "vip": "10.0.0.100", "port": 8443},
        "etcd": {"topology": "external"},
        "hosts": [{"name": f"cp{i}", "address": f"10.0.0.1{i}", "roles": ["control-plane"]}
                  for i in (1, 2, 3)],
    })  # fmt: skip


def test_members_use_pre_vote_so_a_returning_member_forces_no_election() -> None:
    c = cluster()
    for h in c.etcd_hosts:
        (f,) = render_etcd(c, h)
        assert f.path == ETCD_ENV_FILE
        assert "ETCD_PRE_VOTE=true\n" in f.content
        assert f.reload == "etcd"
