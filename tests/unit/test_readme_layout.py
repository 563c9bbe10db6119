"""README's "Layout" names every module of the tree, and names no module that is not there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
TOPS = ("hakube", "hakube_lab")


def layout_parts() -> dict[str, list[str]]:
    """The Layout code block's entries (a line at two spaces and the deeper ones after it), for
    the part under `src/hakube/` and the part under `src/hakube_lab/`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    parts: dict[str, list[str]] = {}
    top = ""
    for line in block.splitlines():
        head = line.split()[0] if line.strip() else ""
        if not line.startswith(" ") and head:
            top = head.removeprefix("src/").rstrip("/") if head.startswith("src/") else ""
        elif top and line.startswith("  ") and not line.startswith("   "):
            parts.setdefault(top, []).append(line)
        elif top in parts and line.strip():
            parts[top][-1] += "\n" + line
    assert set(parts) == set(TOPS), parts.keys()
    return parts


def modules(top: str) -> list[Path]:
    base = SRC / top
    return sorted(p.relative_to(base) for p in base.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("top", TOPS)
def test_every_module_of_the_tree_is_named_in_the_readme_layout(top: str) -> None:
    entries = layout_parts()[top]
    missing = []
    for m in modules(top):
        # Named in an entry of its own directory: `pki/layout.py`, or `layout` in the `pki/` one.
        word = re.compile(rf"(?<![\w.]){re.escape(m.stem)}(\.py)?(?![\w-])")
        here = [e for e in entries if m.parent == Path(".") or f"{m.parent.as_posix()}/" in e]
        if not any(word.search(e) for e in here):
            missing.append(m.as_posix())
    assert not missing, f"README Layout does not name: {', '.join(missing)}"


@pytest.mark.parametrize("top", TOPS)
def test_every_module_the_readme_layout_names_exists(top: str) -> None:
    names = {m.name for m in modules(top)}
    paths = {m.as_posix() for m in modules(top)}
    named = re.findall(r"[\w/]+\.py\b", "\n".join(layout_parts()[top]))
    gone = [n for n in named if not n.startswith("tests/")
            and (n not in paths if "/" in n else n not in names)]  # fmt: skip
    assert not gone, f"README Layout names modules that do not exist: {', '.join(gone)}"
