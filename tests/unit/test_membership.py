"""Membership changes against scripted hosts (a clearly marked fake, see test_apply_scripted).

A converged 3-control-plane cluster with external etcd is recorded; the file then gains a host or
loses one. The fake hosts start from what the previous apply left (configs rendered for the old
file), so every write and restart the new apply does is visible.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from typing import Any

import pytest
from test_apply_scripted import (
    CLUSTER_DATA,
    KEEPALIVED_CONF,
    LB,
    NAME,
    SKIP,
    FakeHostTransport,
    converged_host,
    fresh_host,
    render_facts,
    run_apply,
    triples,
)

from hakube.membership import MembershipError, host_entry, membership
from hakube.phases import etcd_join
from hakube.phases.base import Event, EventKind
from hakube.record import ClusterRecord
from hakube.render import render_host
from hakube.render.etcd import ETCD_ENV_FILE, render_etcd
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.scripted import Call, Reply
from hakube.workflows.apply import apply
from hakube.workflows.plan import build_plan

CP4 = {"name": "cp4", "address": "10.88.0.14", "roles": ["control-plane"]}
CP5 = {"name": "cp5", "address": "10.88.0.15", "roles": ["control-plane"]}
PEER = "https://10.88.0.{}:2380"


def cluster_with(*extra: dict[str, Any], without: tuple[str, ...] = ()) -> Cluster:
    data = copy.deepcopy(CLUSTER_DATA)
    data["hosts"] = [h for h in data["hosts"] if h["name"] not in without] + list(extra)
    return load_cluster_data(data).cluster


@pytest.fixture
def old() -> Cluster:
    return cluster_with()


@pytest.fixture
def state(tmp_path: Any) -> StateDir:
    return StateDir(NAME, root=tmp_path / "state")


def recorded(state: StateDir, *, init: bool = False) -> ClusterRecord:
    rec = state.record()
    rec.etcd_seen(["cp1", "cp2", "cp3"])
    if init:
        rec.init_host = "cp1"
        for n in ("cp1", "cp2", "cp3"):
            rec.joined(n, "control-plane")
        rec.joined("w1", "worker")
    state.save_record(rec)
    return rec


def env_of(cluster: Cluster, name: str) -> str:
    (env,) = [f for f in render_etcd(cluster, cluster.host(name)) if f.path == ETCD_ENV_FILE]
    return env.content


def converged_for(old: Cluster, new: Cluster, state: StateDir) -> dict[str, FakeHostTransport]:
    """Hosts as the apply of `old` left them; hosts only in `new` are fresh."""
    out = {}
    for host in new.hosts:
        if host.name in {h.name for h in old.hosts}:
            h = converged_host(old, old.host(host.name), state)
            if host in old.etcd_hosts:
                h.contents[ETCD_ENV_FILE] = env_of(old, host.name)
            if host in old.lb_hosts:  # read back to tell a reload from a VRRP-incompatible change
                (conf,) = [f for f in render_host(old, old.host(host.name), state.secrets())
                           if f.path == KEEPALIVED_CONF]  # fmt: skip
                h.contents[KEEPALIVED_CONF] = conf.content
            out[host.name] = FakeHostTransport(h)
        else:
            out[host.name] = FakeHostTransport(fresh_host(new, host))
    return out


# --- membership from the file and the record ---------------------------------------------------


def test_a_new_host_is_joining_only_once_the_cluster_exists(old: Cluster, state: StateDir) -> None:
    new = cluster_with(CP4, CP5)
    assert not membership(new, state.record()).changes  # nothing recorded: a first install
    rec = recorded(state, init=True)
    m = membership(new, rec)
    assert m.joining_nodes == ("cp4", "cp5")
    assert m.joining_etcd == ("cp4", "cp5")
    assert m.leaving == ()


def test_recorded_hosts_missing_from_the_file_are_listed_with_what_they_were(
    state: StateDir,
) -> None:
    rec = recorded(state, init=True)
    m = membership(cluster_with(CP4, CP5, without=("cp1", "cp2", "w1")), rec)
    assert [(x.name, x.roles) for x in m.leaving] == [
        ("cp1", ("control-plane", "etcd member", "init host")),
        ("cp2", ("control-plane", "etcd member")),
        ("w1", ("worker",)),
    ]


def test_a_reached_host_that_is_neither_node_nor_member_is_listed_with_its_file_roles(
    state: StateDir,
) -> None:
    """An LB-only host is never a node or an etcd member; deleted from the file, it must still
    be taken out (its keepalived would go on announcing the VIP)."""
    rec = recorded(state)
    lb1 = {"name": "lb1", "address": "10.88.0.31", "roles": ["lb"]}
    rec.reached({"lb1": lb1, "cp1": host_entry(cluster_with().host("cp1"))})
    m = membership(cluster_with(CP4, without=("cp1",)), rec)
    assert [(x.name, x.roles) for x in m.leaving] == [("cp1", ("etcd member",)), ("lb1", ("lb",))]


def test_plan_lists_joining_and_missing_hosts_from_the_record(state: StateDir) -> None:
    rec = recorded(state, init=True)
    plan = build_plan(cluster_with(CP4, CP5, without=("w1",)), record=rec)
    assert plan.membership == [
        "joining as nodes: cp4, cp5",
        "joining etcd (as learners, promoted once caught up): cp4, cp5",
        "recorded but not in the file: w1 (worker)",
    ]
    assert plan.as_dict()["membership"] == plan.membership


def test_apply_without_prune_refuses_missing_hosts_and_contacts_no_host(
    old: Cluster, state: StateDir
) -> None:
    recorded(state)
    new = cluster_with(CP4, without=("cp3",))
    ts = converged_for(old, new, state)
    with pytest.raises(MembershipError) as e:
        run_apply(new, state, ts)
    msg = str(e.value)
    assert "cp3 (etcd member)" in msg
    assert "--prune" in msg
    assert "Nothing was changed" in msg
    assert all(not t.calls for t in ts.values())


# --- an external etcd member joins a running etcd -----------------------------------------------


def member_list(*members: dict[str, Any]) -> str:
    return json.dumps({"header": {"cluster_id": 1, "member_id": 11}, "members": list(members)})


def started(i: int) -> dict[str, Any]:
    return {
        "ID": 1000 + i,
        "name": f"cp{i}",
        "peerURLs": [PEER.format(10 + i)],
        "clientURLs": [f"https://10.88.0.{10 + i}:2379"],
    }


class EtcdOnCp1:
    """The running etcd as etcdctl reports it: `member add` adds an unstarted learner,
    `promote` refuses a learner until it has caught up (here: its second attempt)."""

    def __init__(self) -> None:
        self.members = [started(1), started(2), started(3)]
        self.promote_attempts: dict[str, int] = {}
        self.just_promoted = False
        self.refused_adds = 0

    def list(self, _call: Call) -> str:
        return member_list(*self.members)

    def add(self, call: Call) -> Reply | str:
        if self.just_promoted:  # a member that just joined is not "active" for a moment
            self.just_promoted = False
            self.refused_adds += 1
            return Reply(exit_status=1, stderr="Error: etcdserver: unhealthy cluster\n")
        m = re.search(r"member add (\S+) --peer-urls=(\S+) --learner", call.target)
        assert m is not None
        assert not any(x.get("isLearner") for x in self.members), "etcd takes one learner"
        new_id = 0xABC + len(self.members)
        self.members.append({"ID": new_id, "peerURLs": [m.group(2)], "isLearner": True})
        return f'Member {new_id:x} added to cluster 1\n\nETCD_NAME="{m.group(1)}"\n'

    def promote(self, call: Call) -> Reply | str:
        hex_id = call.target.rsplit(" ", 1)[1]
        (i,) = [i for i, x in enumerate(self.members) if f"{x['ID']:x}" == hex_id]
        n = self.promote_attempts[hex_id] = self.promote_attempts.get(hex_id, 0) + 1
        if n < 2:
            return Reply(
                exit_status=1,
                stderr="Error: etcdserver: can only promote a learner member which is in sync "
                "with leader",
            )
        self.members[i] = {**started(i + 1), "ID": self.members[i]["ID"]}
        self.just_promoted = True
        return f"Member {hex_id} promoted in cluster 1\n"

    def health(self, _call: Call) -> str:
        return json.dumps(
            [
                {"endpoint": f"https://10.88.0.{10 + i}:2379", "health": True}
                for i in range(1, len(self.members) + 1)
            ]
        )


def script_etcd(t: FakeHostTransport, etcd: EtcdOnCp1) -> None:
    rules: list[tuple[re.Pattern[str], Any]] = [
        (re.compile(r"ETCDCTL_API=3 etcdctl .* member list -w json"), etcd.list),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* member add .*"), etcd.add),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* member promote \w+"), etcd.promote),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* endpoint health --cluster -w json"), etcd.health),
    ]
    t.rules[1:1] = rules  # after the facts rule, before the converged cluster's answers


@pytest.fixture
def joined(old: Cluster, state: StateDir, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, EtcdOnCp1]:
    monkeypatch.setattr(etcd_join, "PROMOTE_RETRY", 0.0)
    recorded(state)
    new = cluster_with(CP4, CP5)
    ts = converged_for(old, new, state)
    etcd = EtcdOnCp1()
    for name in LB:
        script_etcd(ts[name], etcd)
    return run_apply(new, state, ts), etcd


def test_new_etcd_hosts_are_added_as_learners_one_at_a_time_then_promoted(
    joined: tuple[Any, EtcdOnCp1],
) -> None:
    run, etcd = joined
    assert run.result.ok, run.result.failures
    cmds = [c for t in run.transports.values() for c in t.commands if "etcdctl" in c]
    steps = [re.sub(r".* member (add|promote) (\S+).*", r"\1 \2", c) for c in cmds
             if " member add " in c or " member promote " in c]  # fmt: skip
    # Each learner is promoted (refused once while it catches up) before the next is added,
    # and that add is refused once too ("unhealthy cluster" right after the promotion).
    assert steps in (
        ["add cp4", "promote abf", "promote abf", "add cp5", "add cp5", "promote ac0",
         "promote ac0"],
        ["add cp5", "promote abf", "promote abf", "add cp4", "add cp4", "promote ac0",
         "promote ac0"],
    )  # fmt: skip
    assert etcd.refused_adds == 1
    assert [m["name"] for m in etcd.members] == ["cp1", "cp2", "cp3", "cp4", "cp5"]
    assert not any(m.get("isLearner") for m in etcd.members)
    assert run.state.record().etcd_members == ["cp1", "cp2", "cp3", "cp4", "cp5"]


def test_a_learner_starts_with_the_existing_cluster_it_was_added_to(
    joined: tuple[Any, EtcdOnCp1],
) -> None:
    run, _ = joined
    first: dict[str, list[str]] = {}
    for name in ("cp4", "cp5"):
        env = run.transports[name].files[ETCD_ENV_FILE].content.decode()
        assert "ETCD_INITIAL_CLUSTER_STATE=existing\n" in env
        found = re.search(r"^ETCD_INITIAL_CLUSTER=(.*)$", env, re.M)
        assert found is not None
        first[name] = found.group(1).split(",")
        descriptions = [d for p, h, d in triples(run.result.changes) if h == name and p == "etcd"]
        assert descriptions[-1] == "start etcd"
    three = [f"cp{i}=https://10.88.0.1{i}:2380" for i in (1, 2, 3)]
    # The second learner's list holds the first, promoted, and itself: what etcd has.
    assert sorted(map(len, first.values())) == [4, 5]
    for peers in first.values():
        assert peers[:3] == three


def test_running_members_are_neither_rewritten_nor_restarted_for_new_members(
    joined: tuple[Any, EtcdOnCp1],
) -> None:
    run, _ = joined
    for name in LB:
        etcd_changes = [d for p, h, d in triples(run.result.changes) if h == name and p == "etcd"]
        assert all(re.match(r"etcd member (add|promote) cp[45] ", d) for d in etcd_changes)
        assert not any("restart etcd" in c for c in run.transports[name].commands)
        assert ETCD_ENV_FILE not in run.transports[name].files  # never written


def test_every_lb_host_gets_the_new_backends(joined: tuple[Any, EtcdOnCp1]) -> None:
    run, _ = joined
    for name in (*LB, "cp4", "cp5"):
        cfg = run.transports[name].files["/etc/haproxy/haproxy.cfg"].content.decode()
        for new in ("cp4 10.88.0.14:6443", "cp5 10.88.0.15:6443"):
            assert f"server {new}" in cfg, name


def test_a_learner_left_by_an_interrupted_join_is_started_and_promoted_not_added_again(
    old: Cluster, state: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(etcd_join, "PROMOTE_RETRY", 0.0)
    recorded(state)
    new = cluster_with(CP4, CP5)
    ts = converged_for(old, new, state)
    etcd = EtcdOnCp1()
    etcd.members.append({"ID": 0xABF, "peerURLs": [PEER.format(14)], "isLearner": True})
    for name in LB:
        script_etcd(ts[name], etcd)
    run = run_apply(new, state, ts)
    assert run.result.ok, run.result.failures
    adds = [c for t in ts.values() for c in t.commands if " member add " in c]
    assert {c.split(" member add ")[1].split()[0] for c in adds} == {"cp5"}
    assert etcd.promote_attempts["abf"] == 2


def test_a_member_with_the_new_hosts_name_but_another_address_is_refused(
    old: Cluster, state: StateDir
) -> None:
    recorded(state)
    new = cluster_with(CP4, CP5)
    ts = converged_for(old, new, state)
    etcd = EtcdOnCp1()
    etcd.members.append({**started(4), "peerURLs": ["https://10.88.0.99:2380"]})
    for name in LB:
        script_etcd(ts[name], etcd)
    run = run_apply(new, state, ts)
    failed = {f.host: f.message for f in run.result.failures}
    assert "10.88.0.99" in failed["cp4"]
    assert not any(" member add cp4 " in c for t in ts.values() for c in t.commands)


# --- removal: apply --prune ----------------------------------------------------------------------

FIVE = ("cp1", "cp2", "cp3", "cp4", "cp5")
VIP = "10.88.0.10"


class Survivors:
    """The etcd and the VIP as the surviving hosts see them during a removal."""

    def __init__(self, healthy: tuple[str, ...] = FIVE) -> None:
        self.members = [started(i) for i in range(1, 6)]
        self.healthy = set(healthy)
        self.vip_owner = "cp1"
        self.leader = "cp3"  # a survivor, unless a test says otherwise
        self.log: list[str] = []

    def list(self, _call: Call) -> str:
        return member_list(*self.members)

    def health(self, _call: Call) -> str:
        return json.dumps([
            {"endpoint": m["clientURLs"][0], "health": m["name"] in self.healthy}
            for m in self.members
        ])  # fmt: skip

    def remove(self, call: Call) -> str:
        hex_id = call.target.rsplit(" ", 1)[1]
        gone = [m for m in self.members if f"{m['ID']:x}" == hex_id]
        self.members = [m for m in self.members if m not in gone]
        self.log.append(f"member remove {gone[0]['name']}")
        return f"Member {hex_id} removed from cluster 1\n"

    def status(self, call: Call) -> str:
        """`endpoint status` of the members whose client URLs the command names."""
        urls = re.search(r"--endpoints=(\S+)", call.target)
        asked = urls.group(1).split(",") if urls else []
        lead = next(m["ID"] for m in self.members if m["name"] == self.leader)
        return json.dumps([
            {"Endpoint": m["clientURLs"][0],
             "Status": {"header": {"member_id": m["ID"]}, "leader": lead}}
            for m in self.members if m["clientURLs"][0] in asked
        ])  # fmt: skip

    def move_leader(self, call: Call) -> str:
        hex_id = call.target.rsplit(" ", 1)[1]
        heir = next(m["name"] for m in self.members if f"{m['ID']:x}" == hex_id)
        self.log.append(f"move leader {self.leader} -> {heir}")
        self.leader = heir
        return f"Leadership transferred to {hex_id}\n"

    def holds_vip(self, name: str) -> Reply:
        return Reply() if self.vip_owner == name else Reply(exit_status=1)

    def stop_keepalived(self, name: str) -> Reply:
        self.log.append(f"stop keepalived {name}")
        if self.vip_owner == name:
            self.vip_owner = "cp3"  # the best backup takes over
        return Reply()


CLEANUP = re.compile(r"for u in kubelet keepalived haproxy etcd; do systemctl disable .*")
CHECK_CLEAN = re.compile(r"ls -d .*; true")


def script_removal(t: FakeHostTransport, world: Survivors, name: str) -> None:
    def logged(what: str) -> Any:
        def answer(call: Call) -> Reply:
            world.log.append(f"{what} {name}")
            return Reply()

        return answer

    rules: list[tuple[re.Pattern[str] | str, Any]] = [
        (re.compile(r"ETCDCTL_API=3 etcdctl .* member list -w json"), world.list),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* endpoint health --cluster -w json"), world.health),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* member remove \w+"), world.remove),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* endpoint status -w json"), world.status),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* move-leader \w+"), world.move_leader),
        (re.compile(r"ip -o -4 addr show \| grep -qF 'inet 10\.88\.0\.10/'"),
         lambda _c: world.holds_vip(name)),
        ("systemctl stop keepalived", lambda _c: world.stop_keepalived(name)),
        (re.compile(r".*systemctl reload-or-restart haproxy"), logged("reload haproxy")),
        (CLEANUP, logged("cleanup")),
        (CHECK_CLEAN, Reply()),
    ]  # fmt: skip
    t.rules[1:1] = rules


def five(state: StateDir) -> Cluster:
    five_cps = cluster_with(CP4, CP5)
    rec = state.record()
    rec.etcd_seen(list(FIVE))
    rec.reached({h.name: host_entry(h) for h in five_cps.hosts})
    state.save_record(rec)
    return five_cps


def prune_run(
    state: StateDir,
    *,
    leaving: tuple[str, ...] = ("cp1", "cp2"),
    unreachable: tuple[str, ...] = (),
    healthy: tuple[str, ...] = FIVE,
    leader: str = "cp3",
) -> tuple[Any, Survivors, dict[str, FakeHostTransport]]:
    old = five(state)
    new = cluster_with(CP4, CP5, without=leaving)
    world = Survivors(healthy)
    world.leader = leader
    ts = converged_for(old, old, state)
    ts["cp1"].rules[0] = (ts["cp1"].rules[0][0], _facts_with_vip(old, state))
    for name, t in ts.items():
        script_removal(t, world, name)
    for name in unreachable:
        del ts[name]
    events: list[Event] = []
    result = asyncio.run(apply(new, state=state, transports=dict(ts), skip=list(SKIP),
                               prune=True, emit=events.append))  # fmt: skip
    return (result, events), world, ts


def _facts_with_vip(old: Cluster, state: StateDir) -> Any:
    h = converged_host(old, old.host("cp1"), state)
    h.vip = True
    return lambda call: render_facts(h, call.target)


@pytest.fixture
def pruned(state: StateDir) -> tuple[Any, Survivors, dict[str, FakeHostTransport]]:
    """cp1 (the VIP owner) and cp2 removed from a converged 5-control-plane cluster."""
    (result, _), world, ts = prune_run(state)
    assert result.ok, result.failures
    return result, world, ts


def test_prune_hands_the_vip_over_before_the_survivors_drop_the_leaving_backends(
    pruned: tuple[Any, Survivors, dict[str, FakeHostTransport]],
) -> None:
    result, world, ts = pruned
    first_reload = next(i for i, x in enumerate(world.log) if x.startswith("reload haproxy"))
    # The other leaver first, the owner last: the VIP goes straight to a survivor.
    assert world.log[:2] == ["stop keepalived cp2", "stop keepalived cp1"]
    assert world.log.index("stop keepalived cp1") < first_reload
    assert world.vip_owner == "cp3"
    # The new owner gets its top-priority config before any other survivor's keepalived.
    keepalived = [(h, d) for p, h, d in triples(result.changes)
                  if "keepalived" in d and h in ("cp3", "cp4", "cp5")]  # fmt: skip
    assert keepalived[:2] == [("cp3", "write /etc/keepalived/keepalived.conf"),
                              ("cp3", "reload keepalived (the new VIP owner first)")]  # fmt: skip
    for name in ("cp3", "cp4", "cp5"):
        cfg = ts[name].files["/etc/haproxy/haproxy.cfg"].content.decode()
        assert "server cp1 " not in cfg
        assert "server cp2 " not in cfg
        assert "server cp3 10.88.0.13:6443" in cfg


def test_prune_removes_the_etcd_members_after_the_lb_update_then_cleans_the_hosts(
    state: StateDir, pruned: tuple[Any, Survivors, dict[str, FakeHostTransport]]
) -> None:
    _, world, _ = pruned
    last_reload = max(i for i, x in enumerate(world.log) if x.startswith("reload haproxy"))
    removal = world.log[last_reload + 1 :]
    assert removal == ["member remove cp1", "cleanup cp1", "member remove cp2", "cleanup cp2"]
    assert [m["name"] for m in world.members] == ["cp3", "cp4", "cp5"]
    rec = state.record()
    assert rec.etcd_members == ["cp3", "cp4", "cp5"]
    assert set(rec.hosts) == {"cp3", "cp4", "cp5", "w1"}
    assert [r["host"] for r in rec.removed] == ["cp1", "cp2"]


def test_a_leaving_etcd_leader_hands_the_leadership_to_a_survivor_before_its_removal(
    state: StateDir,
) -> None:
    # Removed while it leads, the survivors would go an election timeout without a leader.
    (result, _), world, ts = prune_run(state, leader="cp2")
    assert result.ok, result.failures
    assert world.log[-5:] == ["member remove cp1", "cleanup cp1", "move leader cp2 -> cp3",
                              "member remove cp2", "cleanup cp2"]  # fmt: skip
    assert world.leader == "cp3"
    (cmd,) = [c for c in ts["cp3"].commands if " move-leader " in c]
    assert "--endpoints=https://10.88.0.12:2379 " in cmd


def test_a_leaving_member_that_does_not_lead_is_removed_without_a_leadership_move(
    pruned: tuple[Any, Survivors, dict[str, FakeHostTransport]],
) -> None:
    _, world, ts = pruned
    assert not [x for x in world.log if x.startswith("move leader")]
    assert world.leader == "cp3"
    assert not [c for t in ts.values() for c in t.commands if " move-leader " in c]


def test_the_cleanup_removes_hakubes_files_kubeadms_leftovers_and_cni_state(
    state: StateDir,
) -> None:
    _, _, ts = prune_run(state)
    (script,) = [c for c in ts["cp2"].commands if CLEANUP.fullmatch(c)]
    for path in ("/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf",
                 "/etc/default/etcd", "/var/lib/etcd", "/etc/etcd/pki", "/etc/cni/net.d",
                 "/var/lib/cni", "/etc/kubernetes", "/etc/hakube"):  # fmt: skip
        assert f" {path} " in script or f" {path};" in script, path
    assert "ip link delete $l" in script
    assert "/^# BEGIN hakube$/,/^# END hakube$/d" in script


def test_prune_takes_out_a_host_that_apply_set_up_but_kubeadm_never_joined(
    state: StateDir,
) -> None:
    (result, _), world, _ = prune_run(state, leaving=("w1",))
    assert result.ok, result.failures
    assert world.log[-1] == "cleanup w1"
    assert not [x for x in world.log if x.startswith("member remove")]
    rec = state.record()
    assert "w1" not in rec.hosts
    assert [r["host"] for r in rec.removed] == ["w1"]


def test_an_unreachable_host_is_removed_from_the_survivors_with_a_warning(
    state: StateDir,
) -> None:
    (result, events), world, _ = prune_run(state, unreachable=("cp2",))
    assert result.ok, result.failures
    assert "member remove cp2" in world.log
    assert "cleanup cp2" not in world.log
    warnings = [e.message for e in events if e.kind is EventKind.MEMBERSHIP and e.host == "cp2"]
    assert any("unreachable" in w for w in warnings)
    assert "cp2" not in state.record().etcd_members


def test_a_removal_that_would_break_quorum_is_refused_with_the_numbers_and_changes_nothing(
    state: StateDir,
) -> None:
    (result, _), world, ts = prune_run(state, healthy=("cp1", "cp2", "cp3"))
    (failure,) = result.failures
    assert failure.phase == "remove/handover"
    assert "leaves etcd 3 member(s) with 1 healthy, and quorum needs 2" in failure.message
    assert not world.log
    assert not [c for t in ts.values() for c in t.calls if c.kind == "put"]
    assert state.record().etcd_members == list(FIVE)


def test_a_refused_removal_of_the_init_host_keeps_it_the_init_host(state: StateDir) -> None:
    # The hand-over to a survivor belongs to a removal that goes ahead: saved before the
    # refusal, the record named a successor while cp1 still ran everything.
    recorded(state, init=True)
    (result, _), world, _ = prune_run(state, healthy=("cp1", "cp2", "cp3"))
    (failure,) = result.failures
    assert failure.phase == "remove/handover"
    assert not world.log
    assert state.record().init_host == "cp1"
    assert state.record().removed == []


def test_a_removal_that_goes_ahead_hands_the_init_role_to_a_joined_survivor(
    state: StateDir,
) -> None:
    recorded(state, init=True)
    (result, _), _, _ = prune_run(state)
    rec = state.record()
    assert rec.init_host == "cp3", result.failures
    assert rec.removed[0]["init_host_was"] == "cp1"
