"""`hakube reset --host` against scripted hosts (the fake world of test_membership): the host
leaves the way `node remove` takes it out, then is reset. A converged 5-control-plane cluster
with external etcd; cp1 holds the VIP."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from test_apply_scripted import NAME, FakeHostTransport, lock_from_another_run
from test_membership import FIVE, Survivors, _facts_with_vip, converged_for, five, script_removal

import hakube.workflows.reset as reset_module
from hakube.membership import without
from hakube.phases.base import Event
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.scripted import Call, Reply
from hakube.workflows.apply import ApplyLocked
from hakube.workflows.ops import OpsError, OpsInputError
from hakube.workflows.reset import ResetResult, leave_cluster, reset

#: WaitVIP's check that the VIP answers on the frontend port, from another LB host.
VIP_ANSWERS = re.compile(r"for i in \$\(seq 50\); do timeout 1 bash -c .*/dev/tcp/.*")


@pytest.fixture
def state(tmp_path: Any) -> StateDir:
    return StateDir(NAME, root=tmp_path / "state")


def world_of(
    state: StateDir, healthy: tuple[str, ...] = FIVE
) -> tuple[Cluster, Survivors, dict[str, FakeHostTransport]]:
    cluster = five(state)
    world = Survivors(healthy)
    ts = converged_for(cluster, cluster, state)
    ts["cp1"].rules[0] = (ts["cp1"].rules[0][0], _facts_with_vip(cluster, state))
    for name, t in ts.items():
        script_removal(t, world, name)
        t.on(VIP_ANSWERS, Reply())

    def per_host_reset(call: Call) -> Reply:
        world.log.append(f"reset cp1: {call.target[:20]}")
        return Reply()

    # What only the per-host reset runs (it comes after the removal's own cleanup).
    ts["cp1"].on(re.compile(r".*"), per_host_reset)
    return cluster, world, ts


def run_reset(cluster: Cluster, state: StateDir, ts: dict[str, FakeHostTransport]) -> ResetResult:
    """reset --host cp1 (the world above scripts cp1's own reset)."""
    events: list[Event] = []
    return asyncio.run(reset(cluster, state, host="cp1", transports=dict(ts), emit=events.append))


def test_the_vip_owner_leaves_like_node_remove_then_is_reset(state: StateDir) -> None:
    cluster, world, ts = world_of(state)
    world.leader = "cp1"  # it leads etcd too
    result = run_reset(cluster, state, ts)
    assert result.left_through == [
        "remove/handover", "lb/haproxy", "lb/keepalived", "lb/vip", "remove/hosts",
    ]  # fmt: skip
    # The VIP is handed over before any survivor's HAProxy drops cp1; cp1's member goes only
    # after the survivors' load balancers stopped sending to it, then the removal's cleanup,
    # then the per-host reset.
    log = world.log
    reloads = [i for i, x in enumerate(log) if x.startswith("reload haproxy")]
    assert log[0] == "stop keepalived cp1"
    assert world.vip_owner == "cp3"
    # etcd's leadership goes to a survivor before cp1's member is removed (no election gap).
    assert log[reloads[-1] + 1 : reloads[-1] + 4] == [
        "move leader cp1 -> cp2", "member remove cp1", "cleanup cp1",
    ]  # fmt: skip
    assert log[reloads[-1] + 4].startswith("reset cp1: ")
    for name in ("cp2", "cp3", "cp4", "cp5"):
        cfg = ts[name].files["/etc/haproxy/haproxy.cfg"].content.decode()
        assert "server cp1 " not in cfg, name
        assert "server cp2 10.88.0.12:6443" in cfg
        peers = ts[name].files["/etc/keepalived/keepalived.conf"].content.decode()
        assert "10.88.0.11" not in peers, name
    assert [m["name"] for m in world.members] == ["cp2", "cp3", "cp4", "cp5"]
    rec = state.record()
    assert "cp1" not in rec.etcd_members
    assert "cp1" not in rec.hosts
    (host,) = result.hosts
    assert host.host == "cp1"
    assert any(a.startswith("purge ") for a in host.actions)
    assert result.archived_state is None
    assert state.path.exists()


def test_a_removal_that_would_break_quorum_is_refused_and_nothing_is_reset(
    state: StateDir,
) -> None:
    cluster, world, ts = world_of(state, healthy=("cp1", "cp2", "cp3"))
    with pytest.raises(OpsError, match=r"leaves etcd 4 member.* with 2 healthy.*Nothing was "):
        run_reset(cluster, state, ts)
    assert world.log == []
    assert not [c for t in ts.values() for c in t.calls if c.kind == "put"]
    assert state.record().etcd_members == list(FIVE)


def test_another_recorded_host_missing_from_the_file_is_refused_before_any_change(
    state: StateDir,
) -> None:
    cluster, world, ts = world_of(state)
    del ts["cp5"]
    without_cp5 = without(cluster, ["cp5"])
    with pytest.raises(OpsInputError, match=r"cp5 left the cluster file but are still recorded"):
        run_reset(without_cp5, state, ts)
    assert world.log == []
    assert not [c for t in ts.values() for c in t.calls if c.kind == "put"]


def test_no_other_run_can_take_the_cluster_between_the_leave_and_the_reset(
    state: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the two the host is in the file and no longer in the record: an apply there
    would join it again just before the reset tears it down."""
    cluster, _, ts = world_of(state)
    seen: list[BaseException | None] = []

    async def leave_then_look(live: Any, target: Any) -> list[str]:
        phases = await leave_cluster(live, target)
        seen.append(lock_from_another_run(state))
        return phases

    monkeypatch.setattr(reset_module, "leave_cluster", leave_then_look)
    run_reset(cluster, state, ts)
    (refused,) = seen
    assert isinstance(refused, ApplyLocked)
