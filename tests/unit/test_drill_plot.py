"""The timeline plot writes a PNG (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hakube_lab.drill.report import Marks, Request, VipSample

pytest.importorskip("matplotlib")


def test_timeline_png(tmp_path: Path) -> None:
    from hakube_lab.drill.plot import plot_timeline

    reqs = [Request(i * 0.02, i * 0.02 + 0.01, ok=not 100 <= i < 110, tries=1 + (i == 111))
            for i in range(300)]  # fmt: skip
    samples = [VipSample(i * 0.05, ("cp1",) if i < 42 else ("cp1", "cp2"),
                         ("cp1",) if i < 40 else ("cp2",)) for i in range(120)]  # fmt: skip
    path = plot_timeline(tmp_path / "x" / "t.png", "test", reqs, samples,
                         Marks(0, 2, 2, 4, 4, 6), ["cp1", "cp2", "cp3"])  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
