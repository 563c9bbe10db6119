"""Product code stands on its own: nothing under src/hakube imports the lab package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from hakube.cli import app

SRC = Path(__file__).resolve().parents[2] / "src"


def _imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append(node.args[0].value)
    return names


def test_no_product_module_imports_hakube_lab() -> None:
    offenders = []
    modules = sorted((SRC / "hakube").rglob("*.py"))
    assert modules, "no product modules found"
    for path in modules:
        for name in _imported_modules(ast.parse(path.read_text(), str(path))):
            if name == "hakube_lab" or name.startswith("hakube_lab."):
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_the_scan_sees_every_form_of_import() -> None:
    code = (
        "import hakube_lab\nfrom hakube_lab.lab import Lab\n"
        "import importlib\nimportlib.import_module('hakube_lab.cli')\n"
    )
    assert _imported_modules(ast.parse(code)) == [
        "hakube_lab",
        "hakube_lab.lab",
        "importlib",
        "hakube_lab.cli",
    ]


def test_lab_demo_and_drill_are_mounted_when_the_lab_package_is_installed() -> None:
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    for command in ("lab", "demo", "drill"):
        assert f" {command} " in res.stdout
    res = CliRunner().invoke(app, ["lab", "--help"])
    assert res.exit_code == 0, res.output
    assert "isolate" in res.stdout


def test_renderers_get_secrets_without_loading_the_pki_or_cryptography() -> None:
    code = (
        "import sys, hakube.render, hakube.secrets\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'hakube.pki',"
        " 'hakube.state'))))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
