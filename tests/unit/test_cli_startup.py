"""Start-up cost guards: what `hakube --help` and `hakube validate` import, and the cheap
entry-point reader that mounts plugins (bench/startup.py has the figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from hakube.cli import PLUGIN_GROUP, plugin_registrars

ROOT = Path(__file__).resolve().parents[2]

# Each of these costs tens of milliseconds to import and none is needed to parse the command
# line, print help or validate a file: a module-level import of one of them in the CLI (or in
# anything it imports at start-up) shows up here.
NEVER_AT_START = ("asyncssh", "cryptography", "jinja2", "asyncio", "hakube.workflows",
                  "hakube.phases", "hakube.transport", "hakube.pki")  # fmt: skip


def modules_loaded_by(*args: str) -> set[str]:
    """sys.modules after running `hakube ARGS` in a fresh interpreter, as the script would."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['hakube', *{list(args)!r}]\n"
        "from hakube.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('MODULES ' + json.dumps(sorted(sys.modules)) + '\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    line = [x for x in done.stderr.splitlines() if x.startswith("MODULES ")]
    assert line, done.stderr
    return set(json.loads(line[-1].removeprefix("MODULES ")))


def heavy(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if m in names or m.startswith(tuple(f"{n}." for n in names)))


# Help and usage errors use click's plain layout: typer's rich layout (typer.rich_utils) imports
# rich's markdown, syntax and traceback modules for every help screen.
RICH_HELP = ("typer.rich_utils", "markdown_it", "rich")


def test_help_imports_no_network_crypto_template_model_or_rich_code() -> None:
    loaded = modules_loaded_by("--help")
    assert "hakube_lab.cli" in loaded  # the plugins are mounted: help lists lab, demo, drill
    assert "hakube.importers.cli" in loaded
    assert heavy(loaded, (*NEVER_AT_START, *RICH_HELP, "pydantic", "yaml",
                          "importlib.metadata")) == []  # fmt: skip


def test_a_usage_error_imports_no_rich() -> None:
    assert heavy(modules_loaded_by("validate", "--no-such-option"), RICH_HELP) == []


def test_validate_imports_the_model_but_no_network_crypto_templates_or_rich() -> None:
    # Its output goes to a pipe here: plain text, so rich is not imported (`say`).
    loaded = modules_loaded_by("validate", "-f", "examples/tutorial.yaml")
    assert "hakube.spec.model" in loaded
    # validate names a product command: neither the day-2 commands, `import`, nor any plugin
    # is mounted.
    assert heavy(loaded, (*NEVER_AT_START, "hakube.ops_cli", "hakube.importers", "hakube_lab",
                          "rich")) == []  # fmt: skip


def test_a_bad_file_is_reported_without_rich_off_a_terminal(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: hakube/v1alpha1\nkind: Cluster\nname: X_\nhosts: []\n")
    assert heavy(modules_loaded_by("validate", "-f", str(bad)), ("rich",)) == []


def test_a_day2_command_is_mounted_when_named() -> None:
    loaded = modules_loaded_by("status", "--help")
    assert "hakube.ops_cli" in loaded
    assert heavy(loaded, ("hakube_lab", "asyncio", "asyncssh")) == []


def test_import_is_mounted_when_named() -> None:
    loaded = modules_loaded_by("import", "kubeasz", "--help")
    assert "hakube.importers.cli" in loaded
    assert heavy(loaded, ("hakube_lab", "asyncio", "asyncssh", "jinja2")) == []


def write_dist(site: Path, dist: str, entry_points: str, module: str = "", code: str = "") -> None:
    info = site / f"{dist}.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(entry_points)
    if module:
        (site / f"{module}.py").write_text(code)


def test_plugin_entry_points_are_read_from_dist_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, later = tmp_path / "first", tmp_path / "later"
    code = "def register(app):\n    app.command('{name}')(lambda: None)\n"
    points = (
        f"[console_scripts]\nx = other:main\n\n[{PLUGIN_GROUP}]\none = hkt_plugin_one:register\n"
    )
    write_dist(first, "ext_one-1.0", points, "hkt_plugin_one", code.format(name="one"))
    # Not importable: passed over, as a half-removed package must not break the CLI.
    write_dist(first, "ext_gone-2.0", f"[{PLUGIN_GROUP}]\ngone = hkt_no_such_module:register\n")
    # The same distribution again later on sys.path: the first one wins, as with pip's view.
    write_dist(later, "ext.one-0.9", f"[{PLUGIN_GROUP}]\nold = hkt_plugin_old:register\n",
               "hkt_plugin_old", code.format(name="old"))  # fmt: skip
    monkeypatch.setattr(sys, "path", [str(first), str(tmp_path / "missing"), str(later)])
    app = typer.Typer()
    try:
        for register in plugin_registrars(PLUGIN_GROUP):
            register(app)
    finally:
        for name in ("hkt_plugin_one", "hkt_plugin_old"):
            sys.modules.pop(name, None)
    assert [c.name for c in app.registered_commands] == ["one"]
