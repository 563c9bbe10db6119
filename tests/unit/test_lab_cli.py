"""The lab's commands refuse bad names before touching anything: exit 2, the right message, one
JSON document with --output json, nothing written under the home directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hakube_lab.cli as lab_cli
from hakube.cli import app
from hakube_lab.addressing import plan_lab
from hakube_lab.lab import Lab
from hakube_lab.statefile import state_file, write_state

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HAKUBE_STATE_DIR", str(tmp_path / "state"))
    return home


@pytest.fixture
def lab_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """A lab that exists only as its state file (no host runs): enough to name its hosts."""
    root = tmp_path / "labs"
    path = state_file(root, "hkx")
    path.parent.mkdir(parents=True)
    write_state(path, plan_lab("hkx", 3, 1, "10.123.250.0/24"), Path("/none"), Path("/none"))
    monkeypatch.setattr(lab_cli, "_load", lambda name: Lab.load(name, root))
    return root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lab", "ssh", "--name", "nosuch", "cp1"], "no lab named 'nosuch'"),
        (["lab", "ssh", "--name", "Bad!", "cp1"], "lab name 'Bad!' is invalid"),
        (["lab", "status", "--name", "nosuch"], "no lab named 'nosuch'"),
        (["lab", "stop", "--name", "nosuch", "cp1"], "no lab named 'nosuch'"),
        (["drill", "--lab", "nosuch"], "no lab named 'nosuch'"),
        (["drill", "--lab", "Bad!"], "lab name 'Bad!' is invalid"),
        (
            ["lab", "up", "-n", "hkx", "--subnet", "10.123.250.0/24", "--endpoint-mode", "none"],
            "endpoint mode 'none' is not one the lab models: use vip, cloud-lb, local-lb",
        ),
    ],
)
def test_unknown_or_invalid_lab_exits_2_and_writes_nothing_home(
    home: Path, argv: list[str], message: str
) -> None:
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.stderr.split())
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(
    "argv", [["lab", "status", "--name", "nosuch"], ["drill", "--lab", "Bad!"]]
)
@pytest.mark.usefixtures("home")
def test_lab_refusals_are_one_json_document_with_output_json(argv: list[str]) -> None:
    res = runner.invoke(app, [*argv, "--output", "json"])
    assert res.exit_code == 2
    data = json.loads(res.stdout)
    assert data["ok"] is False
    assert data["exit_code"] == 2
    assert "lab" in data["error"]


@pytest.mark.usefixtures("lab_root")
@pytest.mark.parametrize("command", ["ssh", "stop", "isolate"])
def test_unknown_host_of_an_existing_lab_exits_2_naming_the_hosts(home: Path, command: str) -> None:
    res = runner.invoke(app, ["lab", command, "--name", "hkx", "cp9"])
    assert res.exit_code == 2, res.output
    said = " ".join(res.stderr.split())
    assert "lab hkx has no host 'cp9' (hosts: cp1, cp2, cp3, w1)" in said
    assert list(home.iterdir()) == []


@pytest.mark.usefixtures("lab_root")
def test_drill_retries_reach_the_probe_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--retries 0` measures a client without retry (the issue's restore figure)."""
    from hakube_lab.drill import workflow
    from hakube_lab.drill.scenarios import Settings

    seen: list[Settings | None] = []

    def fake_run_drill(*args: object, **_k: object) -> workflow.DrillReport:
        plan = args[-1]
        assert isinstance(plan, workflow.DrillPlan)
        seen.append(plan.settings)
        return workflow.DrillReport("hakube defaults")

    monkeypatch.setattr(workflow, "run_drill", fake_run_drill)
    tutorial = str(Path(__file__).parents[2] / "examples/tutorial.yaml")
    argv = ["drill", "--lab", "hkx", "-f", tutorial, "-s", "host-down", "--retries", "0"]
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert [s.retries if s else None for s in seen] == [0]
    res = runner.invoke(app, [*argv[:-1], "9"])
    assert res.exit_code == 2
    assert "--retries" in " ".join(res.output.split())
