"""`hakube apply phase NAME`: one phase alone, refused while a phase it needs never completed.

Runs through the scripted hosts of test_apply_scripted (a clearly marked fake: no SSH).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakes import ROOT
from test_apply_scripted import (
    CLUSTER_DATA,
    NAME,
    SKIP,
    FakeHostTransport,
    fresh_host,
    make_transports,
    run_apply,
)
from typer.testing import CliRunner

from hakube.cli import app
from hakube.phases.base import Event, EventKind
from hakube.record import RECORD_FILE, ClusterRecord
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.workflows.apply import ApplyResult, PhaseNeedsError, apply, apply_phases


@pytest.fixture(name="cluster")
def _cluster() -> Cluster:
    return load_cluster_data(CLUSTER_DATA).cluster


@pytest.fixture(name="state")
def _state(tmp_path: Path) -> StateDir:
    return StateDir(NAME, root=tmp_path / "state")


def alone(
    cluster: Cluster, state: StateDir, ts: dict[str, FakeHostTransport], name: str
) -> tuple[ApplyResult, list[Event]]:
    events: list[Event] = []
    given: dict[str, Transport] = dict(ts)
    result = asyncio.run(
        apply(cluster, state=state, transports=given, only=[name], alone=True, emit=events.append)
    )
    return result, events


def test_every_need_names_a_phase_that_runs_before_it() -> None:
    order = [p.name for p in apply_phases()]
    for i, phase in enumerate(apply_phases()):
        for need in phase.needs:
            assert need in order[:i], f"{phase.name} needs {need}, which does not run before it"


def test_a_phase_alone_on_a_new_cluster_is_refused_before_anything_is_touched(
    cluster: Cluster, state: StateDir
) -> None:
    ts = make_transports(cluster, state)
    with pytest.raises(PhaseNeedsError) as caught:
        alone(cluster, state, ts, "lb/keepalived")
    msg = str(caught.value)
    assert "lb/keepalived needs packages first, which never completed on cp1, cp2, cp3" in msg
    assert "lb/keepalived needs lb/haproxy first, which never completed on cp1, cp2, cp3" in msg
    assert "`hakube apply phase packages` first. Nothing was changed." in msg
    assert all(t.calls == [] for t in ts.values())
    assert not (state.path / RECORD_FILE).exists()


def test_a_need_selected_in_the_same_run_is_met_by_running_it_first(
    cluster: Cluster, state: StateDir
) -> None:
    ts = make_transports(cluster, state)
    with pytest.raises(PhaseNeedsError) as caught:
        alone(cluster, state, ts, "lb")  # the family: haproxy runs before keepalived
    assert "needs lb/haproxy" not in str(caught.value)
    assert "lb/haproxy needs packages first" in str(caught.value)


def test_after_a_full_apply_one_phase_runs_alone_and_says_what_it_needed(
    cluster: Cluster, state: StateDir
) -> None:
    ts = make_transports(cluster, state)
    first = run_apply(cluster, state, ts)
    assert first.result.ok, first.result.failures
    done = state.record().phases_done
    assert done["packages"] == ["cp1", "cp2", "cp3", "w1"]
    assert done["lb/haproxy"] == ["cp1", "cp2", "cp3"]
    assert not set(done) & set(SKIP)  # skipped phases are not recorded as done

    result, events = alone(cluster, state, ts, "lb/keepalived")
    assert result.ok, result.failures
    assert result.phases_run == ["lb/keepalived"]
    assert result.changes == []  # the first run converged it
    needs = [e.message for e in events if e.kind is EventKind.NEEDS]
    assert needs == [
        "lb/keepalived needs packages, lb/haproxy before it: met (run before, as the record "
        "shows, selected now, or not used by this cluster)"
    ]


def test_a_host_new_to_the_file_is_refused_a_phase_whose_need_never_ran_on_it(
    cluster: Cluster, state: StateDir
) -> None:
    ts = make_transports(cluster, state)
    assert run_apply(cluster, state, ts).result.ok
    w2 = {"name": "w2", "address": "10.88.0.22", "roles": ["worker"]}
    data: dict[str, Any] = {**CLUSTER_DATA, "hosts": [*CLUSTER_DATA["hosts"], w2]}
    grown = load_cluster_data(data).cluster
    ts["w2"] = FakeHostTransport(fresh_host(grown, grown.host("w2")))
    with pytest.raises(PhaseNeedsError, match="runtime needs packages first, which never "
                       "completed on w2\n"):  # fmt: skip
        alone(grown, state, ts, "runtime")
    assert ts["w2"].calls == []


def test_a_dry_run_records_no_phase_as_done(cluster: Cluster, state: StateDir) -> None:
    ts = make_transports(cluster, state, read_only=True)
    assert run_apply(cluster, state, ts, dry_run=True).result.ok
    assert not (state.path / RECORD_FILE).exists()


def test_a_removed_host_leaves_the_phases_it_completed() -> None:
    record = ClusterRecord.new("c")
    record.phase_done("runtime", ["cp1", "w1"])
    record.phase_done("runtime", ["w2", "w1"])
    assert record.phases_done == {"runtime": ["cp1", "w1", "w2"]}
    record.forget("w1")
    assert record.phases_done == {"runtime": ["cp1", "w2"]}


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["phase"], "apply takes none, or `phase NAME`"),
        (["phaze", "lb"], "unexpected argument 'phaze lb'"),
        (["phase", "lb", "--only", "etcd"], "--only, --skip-phases and --prune do not go"),
        (["phase", "lb", "--prune"], "--only, --skip-phases and --prune do not go"),
    ],
)
def test_bad_use_of_apply_phase_exits_2_before_reading_the_file(args: list[str], says: str) -> None:
    res = runner.invoke(app, ["apply", *args, "-f", "/nonexistent/cluster.yaml"])
    assert res.exit_code == 2, res.output
    assert says in " ".join(res.output.split())


def test_apply_phase_selects_that_phase_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import hakube.workflows.apply as workflow

    seen: dict[str, Any] = {}

    def fake_run_apply(_: Cluster, **kwargs: Any) -> ApplyResult:
        seen.update(kwargs)
        raise PhaseNeedsError("cni needs kubeadm/init first. Nothing was changed.")

    monkeypatch.setattr(workflow, "run_apply", fake_run_apply)
    res = runner.invoke(app, ["apply", "phase", "cni", "-f", str(ROOT / "examples/tutorial.yaml")])
    assert res.exit_code == 2, res.output
    assert "cni needs kubeadm/init first" in res.output
    assert (seen["only"], seen["skip"], seen["alone"]) == (["cni"], [], True)
