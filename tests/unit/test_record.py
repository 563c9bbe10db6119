"""The recorded cluster: identity, settings fixed at init, and the refusals built on them."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
from test_apply_scripted import CLUSTER_DATA, NAME, make_transports, run_apply

from hakube.record import ClusterRecord, RecordError, upstream_version
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.transport.scripted import Call, ScriptedTransport
from hakube.workflows.apply import apply


def cluster_with(**over: object) -> Cluster:
    return load_cluster_data({**CLUSTER_DATA, **over}).cluster


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(NAME, root=tmp_path / "state")


def test_the_record_is_saved_0600_with_a_uuid_and_read_back(state: StateDir) -> None:
    rec = state.record()
    f = state.path / "cluster.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert json.loads(f.read_text())["cluster_id"] == rec.cluster_id
    again = StateDir(NAME, root=state.path.parent).record()
    assert again.cluster_id == rec.cluster_id


def test_a_read_only_state_dir_records_nothing(tmp_path: Path) -> None:
    ro = StateDir(NAME, root=tmp_path).read_only()
    rec = ro.record()
    rec.joined("w1", "worker")
    ro.save_record(rec)
    ro.secrets()
    ro.cluster_pki()
    assert not (tmp_path / NAME).exists()


def test_changed_immutable_settings_are_listed_with_old_new_and_why() -> None:
    rec = ClusterRecord.new(NAME)
    rec.initialised("cp1", cluster_with(), at=1.0)
    changed = cluster_with(
        network={"pod_subnet": "10.250.0.0/16"}, kubernetes={"dns_domain": "corp.local"}
    )
    problems = rec.check_settings(changed)
    assert problems == [
        "DNS domain cannot change after kubeadm init (it is in the API server certificate and "
        "in every pod's resolv.conf): it was 'cluster.local', the cluster file now says "
        "'corp.local'; put the old value back",
        "pod subnet cannot change after kubeadm init (every node's pod CIDR and the CNI were "
        "allocated from it): it was '10.244.0.0/16', the cluster file now says "
        "'10.250.0.0/16'; put the old value back",
    ]
    assert rec.check_settings(cluster_with()) == []


def test_apply_refuses_changed_settings_before_contacting_any_host(state: StateDir) -> None:
    rec = state.record()
    rec.initialised("cp1", cluster_with(), at=1.0)
    state.save_record(rec)
    moved = cluster_with(endpoint={**CLUSTER_DATA["endpoint"], "port": 9443})
    ts = {h.name: ScriptedTransport(h.name) for h in moved.hosts}
    given: dict[str, Transport] = dict(ts)
    with pytest.raises(RecordError, match="control-plane endpoint cannot change"):
        asyncio.run(apply(moved, state=state, transports=given))
    assert all(t.calls == [] for t in ts.values())


def test_a_host_of_another_cluster_is_refused_and_nothing_changes(state: StateDir) -> None:
    cluster = cluster_with()
    ts = make_transports(cluster, state)
    foreign = "0b0f5c1e-1111-4222-8333-944455556666"
    facts_rule = ts["cp2"].rules[0]

    def other_cluster(call: Call) -> str:
        responder = facts_rule[1]
        assert callable(responder)
        return str(responder(call)).replace(
            "@@hakube:clusterid\n", f"@@hakube:clusterid\n{foreign}"
        )

    ts["cp2"].rules[0] = (facts_rule[0], other_cluster)
    run = run_apply(cluster, state, ts)
    assert [(f.host, f.phase) for f in run.result.failures] == [("cp2", "facts")]
    msg = run.result.failures[0].message
    assert f"belongs to cluster {foreign}" in msg
    assert state.record().cluster_id in msg
    assert run.result.changes == []


def test_every_host_gets_the_cluster_id(state: StateDir) -> None:
    cluster = cluster_with()
    run = run_apply(cluster, state, make_transports(cluster, state))
    assert run.result.ok, run.result.failures
    for name, t in run.transports.items():
        assert (
            t.files["/etc/hakube/cluster-id"].content == (state.record().cluster_id + "\n").encode()
        ), name


@pytest.mark.parametrize(
    ("package", "upstream"),
    [("1.30.1-1.1", "1.30.1"), ("1.30.10-1.1", "1.30.10"), ("1:1.30.1-150500.1.1", "1.30.1")],
)
def test_upstream_version_is_exact(package: str, upstream: str) -> None:
    assert upstream_version(package) == upstream
    assert upstream_version("1.30.10-1.1") != "1.30.1"
