"""`lab down` removes everything, is harmless twice, and also works after a crash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hakube_lab import Lab, LabError, destroy

pytestmark = pytest.mark.lab

NAME = "hkt2"


def _snapshot() -> dict[str, set[str]]:
    def first_words(*cmd: str) -> set[str]:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return {ln.split()[0] for ln in out.splitlines() if ln.strip()}

    procs = {
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and (b"systemd-nspawn" in _cmdline(p) or b"http.server" in _cmdline(p))
    }
    return {
        "netns": first_words("ip", "netns", "list"),
        "links": first_words("ip", "-br", "link"),
        "mounts": set(Path("/proc/mounts").read_text().splitlines()),
        "procs": procs,
        "state": {str(p) for p in Path("/var/lib/hakube/lab").glob(f"*{NAME}*")},
    }


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_down_leaves_nothing_behind_even_after_a_crash() -> None:
    before = _snapshot()
    lab = Lab.create(NAME, control_planes=1, workers=1, subnet="10.123.202.0/24")
    try:
        lab.up()
        during = _snapshot()
        assert during["netns"] - before["netns"] == {"hk-hkt2-cp1", "hk-hkt2-w1"}
        assert len(during["procs"] - before["procs"]) >= 3  # two nspawn + the mirror
        # Same name, different shape: refused while it runs.
        with pytest.raises(LabError, match="already runs"):
            Lab.create(NAME, control_planes=2, workers=1, subnet="10.123.202.0/24").up()
        # Re-running `up` on the running lab is harmless.
        lab.up()
        # Simulate a crash that lost the bookkeeping: only names are left to go by.
        for f in ("state.json", "mirror.pid", "hosts/cp1/nspawn.pid", "hosts/w1/nspawn.pid"):
            (lab.state_dir / f).unlink()
    finally:
        removed = destroy(NAME)
    assert any(r.startswith("netns") for r in removed)
    assert destroy(NAME) == []
    after = _snapshot()
    for key in ("netns", "mounts", "procs", "state"):
        assert after[key] - before[key] == set(), key
    assert {ln for ln in after["links"] if "hkt2" in ln} == set()
