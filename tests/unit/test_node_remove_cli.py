"""`hakube node remove` and `hakube apply --prune --dry-run` from the command line, against the
scripted hosts of test_membership (a clearly marked fake: no host is contacted).

A converged 5-control-plane cluster (external etcd) is recorded; the commands run through the
real CLI, with only `run_apply` pointed at the scripted transports.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_apply_scripted import CLUSTER_DATA, NAME, SKIP, FakeHostTransport
from test_membership import (
    CP4,
    CP5,
    FIVE,
    Survivors,
    _facts_with_vip,
    converged_for,
    five,
    script_removal,
)
from typer.testing import CliRunner

from hakube.cli import app
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows import apply as apply_module

runner = CliRunner()


class Hosts:
    """The five scripted control planes and w1, and every apply the CLI started."""

    def __init__(self, state: StateDir, healthy: tuple[str, ...] = FIVE) -> None:
        old = five(state)
        self.world = Survivors(healthy)
        self.ts: dict[str, FakeHostTransport] = converged_for(old, old, state)
        self.ts["cp1"].rules[0] = (self.ts["cp1"].rules[0][0], _facts_with_vip(old, state))
        for name, t in self.ts.items():
            script_removal(t, self.world, name)
        self.applies: list[dict[str, Any]] = []

    def run_apply(self, cluster: Cluster, **kwargs: Any) -> apply_module.ApplyResult:
        self.applies.append({"hosts": [h.name for h in cluster.hosts], **kwargs})
        kwargs["skip"] = [*SKIP, *kwargs.get("skip", [])]
        return asyncio.run(apply_module.apply(cluster, transports=dict(self.ts), **kwargs))

    def puts(self) -> list[str]:
        return [f"{n}:{c.target}" for n, t in self.ts.items() for c in t.calls if c.kind == "put"]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    monkeypatch.setenv("HAKUBE_STATE_DIR", str(tmp_path / "state"))
    return StateDir(NAME, root=tmp_path / "state")


def cluster_file(tmp_path: Path, *, without: tuple[str, ...] = ()) -> Path:
    data = copy.deepcopy(CLUSTER_DATA)
    data["hosts"] = [h for h in [*data["hosts"], CP4, CP5] if h["name"] not in without]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def scripted(state: StateDir, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Hosts:
    hosts = Hosts(state, **kw)
    monkeypatch.setattr(apply_module, "run_apply", hosts.run_apply)
    return hosts


def test_an_unknown_host_exits_2_naming_it_and_contacts_nothing(
    state: StateDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = scripted(state, monkeypatch)
    before = (state.path / "cluster.json").read_text()
    res = runner.invoke(app, ["node", "remove", "cp9", "-f", str(cluster_file(tmp_path)), "--yes"])
    assert res.exit_code == 2
    assert "cp9 is not recorded as part of cluster 'lab'" in res.output
    assert not hosts.applies
    assert (state.path / "cluster.json").read_text() == before


def test_a_host_already_missing_from_the_file_too_sends_the_user_to_prune(
    state: StateDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = scripted(state, monkeypatch)
    file = cluster_file(tmp_path, without=("cp4", "cp5"))
    res = runner.invoke(app, ["node", "remove", "cp3", "-f", str(file), "--yes"])
    assert res.exit_code == 2
    assert "cp4, cp5 also left" in res.output
    assert "hakube apply --prune" in res.output
    assert not hosts.applies


def test_without_yes_it_asks_and_a_no_changes_nothing(
    state: StateDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = scripted(state, monkeypatch)
    file = str(cluster_file(tmp_path))
    res = runner.invoke(app, ["node", "remove", "cp2", "-f", file], input="n\n")
    assert res.exit_code == 1
    assert "Remove cp2 (etcd member) from cluster 'lab'?" in res.output
    assert "nothing was changed" in res.output
    assert not hosts.applies
    res = runner.invoke(app, ["node", "remove", "cp2", "-f", file, "-o", "json"])
    assert res.exit_code == 2
    assert json.loads(res.output)["error"].startswith("--yes is needed with --output json")
    assert not hosts.applies


def test_yes_removes_the_host_and_tells_to_delete_it_from_the_file(
    state: StateDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = scripted(state, monkeypatch)
    res = runner.invoke(app, ["node", "remove", "cp2", "-f", str(cluster_file(tmp_path)), "--yes"])
    assert res.exit_code == 0, res.output
    (run,) = hosts.applies
    assert "cp2" not in run["hosts"]
    assert run["prune"] is True
    assert [h.name for h in run["leaving_from"]] == ["cp2"]
    assert "member remove cp2" in hosts.world.log
    assert "cleanup cp2" in hosts.world.log
    assert "cp2" not in StateDir(NAME).record().etcd_members
    assert "cp2 is removed: delete it from" in res.output


def test_a_removal_that_breaks_quorum_exits_1_with_the_numbers_and_changes_nothing(
    state: StateDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = scripted(state, monkeypatch, healthy=("cp1", "cp2", "cp4"))
    res = runner.invoke(app, ["node", "remove", "cp2", "-f", str(cluster_file(tmp_path)), "--yes"])
    assert res.exit_code == 1
    assert "leaves etcd 4 member(s) with 2 healthy, and quorum needs 3" in " ".join(
        res.output.split()
    )
    assert not hosts.world.log
    assert not hosts.puts()
    assert StateDir(NAME).record().etcd_members == list(FIVE)


def test_prune_dry_run_lists_the_leaving_hosts_and_changes_nothing(
    state: StateDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = scripted(state, monkeypatch)
    before = (state.path / "cluster.json").read_text()
    file = cluster_file(tmp_path, without=("cp1", "cp2"))
    res = runner.invoke(app, ["apply", "-f", str(file), "--prune", "--dry-run", "-o", "json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    membership = [x["message"] for x in lines if x.get("event") == "membership"]
    assert any("cp1" in m for m in membership), membership
    assert any("cp2" in m for m in membership), membership
    result = lines[-1]
    assert result["dry_run"] is True
    planned = [c["description"] for c in result["changes"]]
    assert any("etcd member remove cp1" in d for d in planned), planned
    assert not any(c["applied"] for c in result["changes"])
    assert not hosts.world.log  # no keepalived stopped, no member removed, no cleanup
    assert not hosts.puts()
    assert (state.path / "cluster.json").read_text() == before
