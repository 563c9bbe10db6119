"""run_drill and run_comparison follow their DrillPlan: every scenario once per repeat with the
plan's settings, errors kept per run, the report written; a comparison drills both
configurations with the state it was given and re-applies hakube's files even after a failure;
run_preemption interleaves preempt and nopreempt run by run.
The lab-driving Drill is replaced by a recorder here (tests/lab/test_drill.py drills for real).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
from fakes import ROOT

from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube_lab.drill import workflow
from hakube_lab.drill.report import RunMetrics
from hakube_lab.drill.scenarios import DrillError, Settings, slug
from hakube_lab.lab import Lab

LAB = cast(Lab, object())  # only handed to Drill, which is the recorder below


def metrics(scenario: str, config: str, run: int) -> RunMetrics:
    return RunMetrics(scenario, config, run, "cp1", "cp1", "cp2", "cp1", 1.0, 1.2, 0.5, 2.0,
                      0.0, 100, 3, 0, 0, 1, 2.5, True, True, 2, 0.1, True, True)  # fmt: skip


class Recorder:
    """Stands in for `Drill`: records how it was built and what it was asked to run."""

    built: ClassVar[list[dict[str, Any]]] = []
    runs: ClassVar[list[tuple[str, str, int, float]]] = []
    fail: ClassVar[set[tuple[str, int]]] = set()

    def __init__(self, cluster: Cluster, lab: Lab, out_dir: Path, **kw: Any) -> None:
        self.config = str(kw["config"])
        Recorder.built.append({"out_dir": out_dir, "cluster": cluster, **kw})

    def run(self, name: str, index: int, *, soak_seconds: float) -> RunMetrics:
        Recorder.runs.append((self.config, name, index, soak_seconds))
        if (name, index) in Recorder.fail:
            raise DrillError("the VIP never moved")
        return metrics(name, self.config, index)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    Recorder.built, Recorder.runs, Recorder.fail = [], [], set()
    monkeypatch.setattr(workflow, "Drill", Recorder)
    return Recorder


class Journal:
    """What happened, in order: holds taken and released, reconfigurations, runs."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.events.append("take")
        yield
        self.events.append("release")

    def inner(self) -> list[str]:
        """The events without the holds."""
        return [e for e in self.events if e not in ("take", "release")]


@pytest.fixture
def journal(recorder: type[Recorder], monkeypatch: pytest.MonkeyPatch) -> Journal:
    """A journal that also records every run the recorder is asked for."""
    j = Journal()
    real_run = recorder.run

    def run(self: Recorder, name: str, index: int, *, soak_seconds: float) -> RunMetrics:
        j.events.append(f"run {self.config} {name} #{index}")
        return real_run(self, name, index, soak_seconds=soak_seconds)

    monkeypatch.setattr(recorder, "run", run)
    return j


def tutorial_cluster() -> Cluster:
    return load_cluster_file(ROOT / "examples" / "tutorial.yaml").cluster


def test_run_drill_runs_each_scenario_per_repeat_with_the_plans_settings(
    tmp_path: Path, recorder: type[Recorder]
) -> None:
    logged: list[str] = []
    recorder.fail = {("host-down", 2)}
    settings = Settings(soak_loss=0.02)
    plan = workflow.DrillPlan(
        ["haproxy-down", "host-down"], tmp_path, 2, 5.0, settings=settings, log=logged.append
    )
    report = workflow.run_drill(tutorial_cluster(), LAB, plan, config="my config")
    assert recorder.runs == [
        ("my config", "haproxy-down", 1, 5.0),
        ("my config", "host-down", 1, 5.0),
        ("my config", "haproxy-down", 2, 5.0),
        ("my config", "host-down", 2, 5.0),
    ]
    (built,) = recorder.built
    assert built["settings"] is settings
    assert built["cafile"] is None  # no state: the probe has no CA to check against
    assert built["out_dir"] == tmp_path
    assert [(m.scenario, m.run) for m in report.runs] == [
        ("haproxy-down", 1),
        ("host-down", 1),
        ("haproxy-down", 2),
    ]
    assert report.errors == ["host-down #2: the VIP never moved"]
    assert any("host-down #2" in line for line in logged)
    written = json.loads((tmp_path / f"{slug('my config')}.json").read_text())
    assert written["config"] == "my config"
    assert written["summary"]["haproxy-down"]["runs"] == 2


def test_run_drill_refuses_an_unknown_scenario_before_building_the_drill(
    tmp_path: Path, recorder: type[Recorder]
) -> None:
    with pytest.raises(DrillError, match="unknown scenario"):
        workflow.run_drill(tutorial_cluster(), LAB, workflow.DrillPlan(["nosuch"], tmp_path))
    assert recorder.built == []


def test_run_comparison_drills_both_configurations_and_always_restores_the_defaults(
    tmp_path: Path, recorder: type[Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[str] = []

    async def apply_lb(cluster: Cluster, state: StateDir) -> None:
        applied.append(state.path.name)

    def install_tutorial(*_args: Any) -> None:
        applied.append("tutorial files")
        raise DrillError("cannot write haproxy.cfg")

    def write_ca(state: StateDir, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir / f"{state.path.name}-ca.crt"

    monkeypatch.setattr(workflow, "_apply_lb", apply_lb)
    monkeypatch.setattr(workflow, "install_tutorial", install_tutorial)
    monkeypatch.setattr(workflow, "write_ca", write_ca)
    state = StateDir("tutorial", root=tmp_path / "state")
    plan = workflow.DrillPlan(["haproxy-down"], tmp_path / "out", repeat=1, soak_seconds=1.0)
    with pytest.raises(DrillError, match=r"cannot write haproxy\.cfg"):
        workflow.run_comparison(tutorial_cluster(), LAB, state, plan)
    # The defaults were drilled with the state's CA, then re-applied after the failed install.
    assert [b["config"] for b in recorder.built] == [workflow.DEFAULTS]
    assert recorder.built[0]["cafile"] == tmp_path / "out" / "tutorial-ca.crt"
    assert applied == ["tutorial", "tutorial files", "tutorial"]


def test_the_plans_hold_is_taken_around_each_run_and_each_reconfiguration_only(
    tmp_path: Path, recorder: type[Recorder], journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bench on a shared lab holds the lab lock for one run (or one apply) at a time and lets
    # other users in between: every run and every reconfiguration happen inside a hold.
    async def apply_lb(cluster: Cluster, state: StateDir) -> None:
        journal.events.append("apply")

    def install_tutorial(*_args: Any) -> None:
        journal.events.append("tutorial files")

    monkeypatch.setattr(workflow, "_apply_lb", apply_lb)
    monkeypatch.setattr(workflow, "install_tutorial", install_tutorial)
    monkeypatch.setattr(workflow, "write_ca", lambda _s, out: out / "ca.crt")
    state = StateDir("tutorial", root=tmp_path / "state")
    plan = workflow.DrillPlan(["host-down"], tmp_path, repeat=2, hold=journal.hold)
    workflow.run_comparison(tutorial_cluster(), LAB, state, plan)
    inner = journal.inner()
    assert inner == [
        "apply",
        f"run {workflow.DEFAULTS} host-down #1",
        f"run {workflow.DEFAULTS} host-down #2",
        "tutorial files",
        f"run {workflow.TUTORIAL} host-down #1",
        f"run {workflow.TUTORIAL} host-down #2",
        "apply",
    ]
    assert journal.events == [x for e in inner for x in ("take", e, "release")]
    # Each column is judged by its own preemption: the tutorial's MASTER preempts, and so do
    # hakube's defaults.
    preempts = [(b["config"], b["cluster"].endpoint.vrrp.preempt) for b in recorder.built]
    assert preempts == [(workflow.DEFAULTS, True), (workflow.TUTORIAL, True)]


def test_run_preemption_interleaves_both_columns_and_reapplies_the_clusters_own_settings(
    tmp_path: Path, recorder: type[Recorder], journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Round by round, preempt then nopreempt, each applied (with its own preemption) right
    # before its runs, the whole round under one hold so both columns see the same load; the
    # file's own settings go back on at the end.
    async def apply_lb(cluster: Cluster, state: StateDir) -> None:
        journal.events.append(f"apply preempt={cluster.endpoint.vrrp.preempt}")

    monkeypatch.setattr(workflow, "_apply_lb", apply_lb)
    monkeypatch.setattr(workflow, "write_ca", lambda _s, out: out / "ca.crt")
    state = StateDir("tutorial", root=tmp_path / "state")
    plan = workflow.DrillPlan(["host-down", "isolate"], tmp_path, repeat=2, hold=journal.hold)
    reports = workflow.run_preemption(tutorial_cluster(), LAB, state, plan)
    inner = journal.inner()
    p, n = workflow.PREEMPT, workflow.NOPREEMPT
    own = f"apply preempt={tutorial_cluster().endpoint.vrrp.preempt}"
    assert inner == [
        "apply preempt=True", f"run {p} host-down #1", f"run {p} isolate #1",
        "apply preempt=False", f"run {n} host-down #1", f"run {n} isolate #1",
        "apply preempt=True", f"run {p} host-down #2", f"run {p} isolate #2",
        "apply preempt=False", f"run {n} host-down #2", f"run {n} isolate #2",
        own,
    ]  # fmt: skip
    assert journal.events == ["take", *inner[:6], "release", "take", *inner[6:12], "release",
                      "take", own, "release"]  # fmt: skip
    assert [r.config for r in reports] == [p, n]
    assert [len(r.runs) for r in reports] == [4, 4]
    # Each column is judged by its own preemption (the restore waits for the VIP to go home
    # only with preempt on).
    built = {b["config"]: b["cluster"].endpoint.vrrp.preempt for b in recorder.built}
    assert built == {p: True, n: False}
    assert json.loads((tmp_path / f"{slug(n)}.json").read_text())["summary"]["isolate"]["runs"] == 2


def test_run_preemption_puts_the_clusters_settings_back_after_a_failed_apply(
    tmp_path: Path, recorder: type[Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[bool] = []

    async def apply_lb(cluster: Cluster, state: StateDir) -> None:
        applied.append(cluster.endpoint.vrrp.preempt)
        if len(applied) == 2:
            raise DrillError("apply --only lb failed: cp2: keepalived -t refused the file")

    monkeypatch.setattr(workflow, "_apply_lb", apply_lb)
    monkeypatch.setattr(workflow, "write_ca", lambda _s, out: out / "ca.crt")
    state = StateDir("tutorial", root=tmp_path / "state")
    plan = workflow.DrillPlan(["host-down"], tmp_path, repeat=3)
    with pytest.raises(DrillError, match="keepalived -t refused"):
        workflow.run_preemption(tutorial_cluster(), LAB, state, plan)
    assert applied == [True, False, tutorial_cluster().endpoint.vrrp.preempt]
    assert [r[:3] for r in recorder.runs] == [(workflow.PREEMPT, "host-down", 1)]
