"""Membership changes on the kubeadm side, stacked etcd, through the scripted transport.

kubeadm cannot run here. The join replies are real kubeadm output (``1.32-join-control-plane-1``
from ../shared; these tests skip when it is absent); the commands hakube sends are asserted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from typing import Any

import pytest
from test_phases_kubeadm import (
    CLUSTER_DATA,
    JOIN_CMD,
    JOIN_TOKEN,
    LEFTOVERS,
    NODE_GET,
    RM_JOIN,
    SHARED,
    TOKEN_CREATE,
    TOKEN_DELETE,
    VALIDATE,
    make_ctx,
)

from hakube.facts.host import FileState
from hakube.membership import Leaving, membership, without
from hakube.phases.base import Event, EventKind, PhaseError, gather_hosts
from hakube.phases.kubeadm import KUBELET_CONF, JoinControlPlanes
from hakube.phases.remove import Handover, Removal, RemoveHosts
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.scripted import Call, Reply, ScriptedTransport

JOIN_CP = SHARED / "1.32-join-control-plane-1.txt"
needs_transcript = pytest.mark.skipif(not JOIN_CP.exists(), reason="../shared is absent")


def stacked(*names: str) -> Cluster:
    hosts = [{"name": f"cp{i}", "address": f"10.88.0.1{i}", "roles": ["control-plane"]}
             for i in range(1, 6)]  # fmt: skip
    hosts.append({"name": "w1", "address": "10.88.0.21", "roles": ["worker"]})
    data = {**CLUSTER_DATA, "etcd": {"topology": "stacked"}}
    data["hosts"] = [h for h in hosts if h["name"] in names]
    return load_cluster_data(data).cluster


@pytest.fixture
def state(tmp_path: Any) -> StateDir:
    return StateDir("lab", root=tmp_path)


def recorded(state: StateDir, cluster: Cluster, *nodes: str) -> None:
    rec = state.record()
    rec.initialised("cp1", cluster, at=time.time())  # certificates still uploaded
    for n in nodes:
        rec.joined(n, "worker" if n.startswith("w") else "control-plane")
    state.save_record(rec)


@needs_transcript
def test_new_control_planes_join_a_recorded_stacked_cluster_one_at_a_time(
    state: StateDir,
) -> None:
    cluster = stacked("cp1", "cp2", "cp3", "cp4", "cp5", "w1")
    recorded(state, cluster, "cp2", "cp3", "w1")
    assert membership(cluster, state.record()).joining_nodes == ("cp4", "cp5")
    output = JOIN_CP.read_text()
    ts = {h.name: ScriptedTransport(h.name) for h in cluster.hosts}
    ts["cp1"].on(TOKEN_CREATE, Reply(stdout=JOIN_TOKEN + "\n"))
    ts["cp1"].on(TOKEN_DELETE, Reply()).on(NODE_GET, Reply(stdout="node/x\n"))
    for name in ("cp4", "cp5"):
        ts[name].on(LEFTOVERS, Reply(exit_status=2)).on(VALIDATE, Reply())
        ts[name].on(JOIN_CMD, Reply(stdout=output)).on(RM_JOIN, Reply())
    ctx = make_ctx(cluster, state, dict(ts), "kubeadm/join-control-planes")
    for name in ("cp2", "cp3"):  # joined and recorded by an earlier apply
        ctx.facts[name].files[KUBELET_CONF] = FileState("0" * 64, 0o600, "root:root")
    phase = JoinControlPlanes()
    failures = asyncio.run(
        gather_hosts(phase.hosts(ctx), functools.partial(phase.run, ctx), serial=True)
    )
    assert failures == {}
    asyncio.run(phase.finish(ctx))
    assert not ts["cp2"].calls
    assert not ts["cp3"].calls
    for name in ("cp4", "cp5"):
        assert ts[name].commands.count(JOIN_CMD) == 1
        join = next(c for c in ts[name].calls if c.kind == "put" and "join.yaml" in c.target)
        assert join.content is not None
        assert "controlPlane" in join.content.decode()
    assert state.record().nodes == {
        "cp2": "control-plane", "cp3": "control-plane", "w1": "worker",
        "cp4": "control-plane", "cp5": "control-plane",
    }  # fmt: skip


KUBECTL = r"kubectl --kubeconfig /etc/kubernetes/admin\.conf"
#: etcdctl in the admin host's etcd pod, then what it asks ({admin}: that host).
IN_POD = KUBECTL + r" -n kube-system exec etcd-{admin} -- etcdctl --endpoints=\S+ .* "
STACKED = {"list": r"member list -w json", "remove": r"member remove \w+",
           "status": r"endpoint status -w json", "move": r"move-leader \w+"}  # fmt: skip


class Kube:
    """The API and stacked etcd as kubectl on cp1 sees them."""

    def __init__(
        self, *, reset_removes_member: bool, api_down: bool = False, leader: str = "cp1"
    ) -> None:
        self.nodes = {"cp1", "cp2", "cp3", "cp4", "cp5", "w1"}
        self.members = {f"cp{i}": 0x100 + i for i in range(1, 6)}
        self.reset_removes_member = reset_removes_member
        self.api_down = api_down
        self.leader = leader
        #: Names whose etcd does not answer (its pod stopped, the host cut off).
        self.silent: set[str] = set()
        self.log: list[str] = []

    def get_node(self, call: Call) -> Reply:
        name = call.target.split(" get node ")[1].split()[0]
        if self.api_down:  # kubectl's words when the API server does not answer
            return Reply(exit_status=1, stderr="The connection to the server 10.88.0.10:8443 "
                         "was refused - did you specify the right host or port?\n")  # fmt: skip
        if name not in self.nodes:
            not_found = f'Error from server (NotFound): nodes "{name}" not found\n'
            return Reply(exit_status=1, stderr=not_found)
        return Reply(stdout=f"node/{name}\n")

    def drain(self, call: Call) -> Reply:
        self.log.append("drain " + call.target.split(" drain ")[1].split()[0])
        return Reply()

    def delete(self, call: Call) -> Reply:
        name = call.target.split(" delete node ")[1].split()[0]
        self.nodes.discard(name)
        self.log.append(f"delete node {name}")
        return Reply()

    @staticmethod
    def url(name: str, port: int) -> str:
        return f"https://10.88.0.1{name[-1]}:{port}"

    def member_list(self, _call: Call) -> str:
        # The shape etcdctl 3.4 prints (tests/data/ops, read on the lab's members).
        return json.dumps({"header": {"cluster_id": 3881273849046472284, "raft_term": 2},
                           "members": [
            {"ID": i, "name": n, "peerURLs": [self.url(n, 2380)],
             "clientURLs": [self.url(n, 2379)]} for n, i in self.members.items()
        ]})  # fmt: skip

    def asked(self, call: Call) -> str:
        """The member the command's --endpoints names."""
        found = re.search(r"--endpoints=(\S+)", call.target)
        assert found is not None
        return next(n for n in self.members if self.url(n, 2379) == found.group(1))

    def status(self, call: Call) -> Reply:
        name = self.asked(call)
        if name in self.silent:  # etcdctl's words when the member does not answer
            return Reply(exit_status=1, stderr=f"{{\"level\":\"warn\",\"msg\":\"retrying of "
                         f"unary invoker failed\"}}\nFailed to get the status of endpoint "
                         f"{self.url(name, 2379)} (context deadline exceeded)\n")  # fmt: skip
        # The shape etcdctl 3.4 prints (tests/data/ops/etcd-cp1-etcdctl-and-gateway.txt, read
        # on a lab member).
        return Reply(stdout=json.dumps([{"Endpoint": self.url(name, 2379), "Status": {
            "header": {"cluster_id": 3881273849046472284, "member_id": self.members[name],
                       "revision": 1, "raft_term": 2},
            "version": "3.4.23", "dbSize": 20480, "leader": self.members[self.leader],
            "raftIndex": 3948, "raftTerm": 2, "raftAppliedIndex": 3948, "dbSizeInUse": 20480,
        }}]) + "\n")  # fmt: skip

    def move_leader(self, call: Call) -> Reply:
        assert self.asked(call) == self.leader, "move-leader is answered by the leader only"
        hex_id = call.target.rsplit(" ", 1)[1]
        heir = next(n for n, i in self.members.items() if f"{i:x}" == hex_id)
        self.log.append(f"move leader {self.leader} -> {heir}")
        old, self.leader = self.members[self.leader], heir
        return Reply(stdout=f"Leadership transferred from {old:x} to {hex_id}\n")

    def member_remove(self, call: Call) -> Reply:
        hex_id = call.target.rsplit(" ", 1)[1]
        name = next(n for n, i in self.members.items() if f"{i:x}" == hex_id)
        del self.members[name]
        self.log.append(f"member remove {name}")
        return Reply()

    def reset(self, name: str) -> Reply:
        self.log.append(f"kubeadm reset {name}")
        if self.reset_removes_member:
            self.members.pop(name, None)
        return Reply()


def remove_cp(
    state: StateDir,
    kube: Kube,
    *,
    reachable: bool = True,
    events: list[Event] | None = None,
    leaving: str = "cp2",
) -> ScriptedTransport:
    """Remove `leaving` through cp1's admin.conf, or through cp2's when the init host cp1 leaves
    (the hand-over phase gave its role to cp2)."""
    before = stacked("cp1", "cp2", "cp3", "cp4", "cp5", "w1")
    recorded(state, before, "cp2", "cp3", "cp4", "cp5", "w1")
    roles = ("init host",) if leaving == "cp1" else ("control-plane",)
    admin = "cp2" if leaving == "cp1" else "cp1"
    after = without(before, [leaving])
    ta = ScriptedTransport(admin)
    ta.on(re.compile(KUBECTL + r" get node \S+ -o name"), kube.get_node)
    ta.on(re.compile(KUBECTL + rf" drain {leaving} --ignore-daemonsets .*"), kube.drain)
    ta.on(re.compile(KUBECTL + rf" delete node {leaving} --ignore-not-found"), kube.delete)
    in_pod = IN_POD.format(admin=admin)
    ta.on(re.compile(in_pod + STACKED["list"]), kube.member_list)
    ta.on(re.compile(in_pod + STACKED["remove"]), kube.member_remove)
    ta.on(re.compile(in_pod + STACKED["status"]), kube.status)
    ta.on(re.compile(in_pod + STACKED["move"]), kube.move_leader)
    tl = ScriptedTransport(leaving)
    tl.on(re.compile(r"if command -v kubeadm >/dev/null; then kubeadm reset -f .*"),
          lambda _c: kube.reset(leaving))  # fmt: skip
    tl.on(re.compile(r"ls -d .*; true"), Reply())
    given = {admin: ta} | ({leaving: tl} if reachable else {})
    sink: list[Event] = [] if events is None else events
    ctx = make_ctx(after, state, given, "remove/hosts", emit=sink.append)
    removal = Removal(
        (Leaving(leaving, roles),), {leaving: before.host(leaving)},
        set() if reachable else {leaving}, init_successor="cp2" if leaving == "cp1" else None,
    )  # fmt: skip
    Handover(removal)._hand_init_over(ctx)  # what remove/handover records first
    asyncio.run(RemoveHosts(removal).run(ctx, after.host(admin)))
    return tl


def test_a_stacked_control_plane_is_drained_reset_and_its_node_deleted(state: StateDir) -> None:
    kube = Kube(reset_removes_member=True)
    remove_cp(state, kube)
    assert kube.log == ["drain cp2", "kubeadm reset cp2", "delete node cp2"]
    assert "cp2" not in kube.members
    assert "cp2" not in state.record().nodes


def test_a_leading_stacked_member_hands_its_leadership_to_a_survivor_before_kubeadm_reset(
    state: StateDir,
) -> None:
    # Reset while it leads, it would leave the survivors leaderless for an election timeout
    # (every apiserver unready meanwhile): the leader is asked, through the admin host's pod.
    kube = Kube(reset_removes_member=True, leader="cp2")
    remove_cp(state, kube)
    moved = ["drain cp2", "move leader cp2 -> cp1", "kubeadm reset cp2", "delete node cp2"]
    assert kube.log == moved
    assert kube.leader == "cp1"


def test_a_stacked_member_that_does_not_lead_is_reset_without_a_leadership_move(
    state: StateDir,
) -> None:
    kube = Kube(reset_removes_member=True, leader="cp3")
    remove_cp(state, kube)
    assert kube.log == ["drain cp2", "kubeadm reset cp2", "delete node cp2"]
    assert kube.leader == "cp3"


def test_a_stacked_member_already_gone_is_not_asked_whether_it_leads(state: StateDir) -> None:
    # An earlier run reset cp2 (its member went with it) and stopped before deleting the Node.
    kube = Kube(reset_removes_member=True, leader="cp3")
    del kube.members["cp2"]
    cp2 = remove_cp(state, kube)
    assert kube.log == ["drain cp2", "kubeadm reset cp2", "delete node cp2"]
    assert any("kubeadm reset" in c for c in cp2.commands)


def test_a_stacked_member_that_does_not_answer_is_reset_without_a_leadership_move(
    state: StateDir,
) -> None:
    kube = Kube(reset_removes_member=True, leader="cp3")
    kube.silent.add("cp2")
    remove_cp(state, kube)
    assert kube.log == ["drain cp2", "kubeadm reset cp2", "delete node cp2"]


def test_a_member_kubeadm_reset_could_not_remove_is_removed_through_a_survivor(
    state: StateDir,
) -> None:
    kube = Kube(reset_removes_member=False)
    remove_cp(state, kube)
    assert kube.log == ["drain cp2", "kubeadm reset cp2", "member remove cp2", "delete node cp2"]
    assert sorted(kube.members) == ["cp1", "cp3", "cp4", "cp5"]


def test_an_unreachable_stacked_control_plane_is_not_drained_but_leaves_etcd_and_the_api(
    state: StateDir,
) -> None:
    kube = Kube(reset_removes_member=False, leader="cp2")
    events: list[Event] = []
    cp2 = remove_cp(state, kube, reachable=False, events=events)
    assert kube.log == ["member remove cp2", "delete node cp2"]
    assert not cp2.calls
    warned = [e.message for e in events if e.kind is EventKind.MEMBERSHIP and e.host == "cp2"]
    assert any("its etcd leadership is not handed over" in w for w in warned), warned


def test_a_node_already_deleted_is_not_drained_and_the_removal_goes_on(state: StateDir) -> None:
    # An earlier run deleted the Node and stopped later: a definite NotFound resumes.
    kube = Kube(reset_removes_member=True)
    kube.nodes.discard("cp2")
    remove_cp(state, kube)
    assert kube.log == ["kubeadm reset cp2", "delete node cp2"]
    assert "cp2" not in state.record().nodes


def test_an_api_that_cannot_say_whether_the_node_exists_stops_the_removal(
    state: StateDir,
) -> None:
    # Not knowing is not "already deleted": draining is skipped only on a definite NotFound.
    kube = Kube(reset_removes_member=True, api_down=True)
    with pytest.raises(PhaseError, match=r"whether the cluster still has a Node cp2 cannot be"):
        remove_cp(state, kube)
    assert kube.log == []
    assert "cp2" in kube.members
    assert "cp2" in state.record().nodes


def test_the_leaving_init_host_is_drained_hands_over_etcd_leadership_reset_and_deleted(
    state: StateDir,
) -> None:
    # The record lists the init host apart from the joined nodes: it is a control plane all the
    # same, and cp2 took its role (admin.conf).
    kube = Kube(reset_removes_member=True, leader="cp1")
    remove_cp(state, kube, leaving="cp1")
    assert kube.log == ["drain cp1", "move leader cp1 -> cp2", "kubeadm reset cp1",
                        "delete node cp1"]  # fmt: skip
    assert sorted(kube.members) == ["cp2", "cp3", "cp4", "cp5"]
    rec = state.record()
    assert rec.init_host == "cp2"
    assert "cp1" not in rec.nodes


def test_an_init_host_removal_that_stopped_half_way_is_found_again_as_a_leaving_control_plane(
    state: StateDir,
) -> None:
    kube = Kube(reset_removes_member=True, api_down=True)
    with pytest.raises(PhaseError, match=r"whether the cluster still has a Node cp1 cannot be"):
        remove_cp(state, kube, leaving="cp1")
    rec = state.record()
    assert rec.init_host == "cp2"
    after = without(stacked("cp1", "cp2", "cp3", "cp4", "cp5", "w1"), ["cp1"])
    assert membership(after, rec).leaving == (Leaving("cp1", ("control-plane",)),)
