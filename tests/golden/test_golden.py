"""Rendered files of every example cluster, pinned byte for byte.

`UPDATE_GOLDEN=1 pytest tests/golden` rewrites the files after an intended change; review the
diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hakube.render import render_all, render_host_blocks
from hakube.secrets import Secrets
from hakube.spec.load import load_cluster_file

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent
SPECS = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("tests/data/specs/*.yaml")])

#: Fixed so that golden files are stable; never used outside tests.
FAKE_SECRETS = Secrets(
    # Positional: vrrp_password, stats_password, bootstrap_token, certificate_key (fakes).
    "vrrpPa55wordTooLong",
    "stats-Pa55word-0123456789",
    "abcdef.0123456789abcdef",
    "0123456789abcdef" * 4,
)
CA_HASH = "sha256:" + "ab" * 32


def rendered(spec: Path) -> dict[str, str]:
    """Relative golden path → content, for every file and managed block of every host."""
    cluster = load_cluster_file(spec).cluster
    out: dict[str, str] = {}
    for host_name, files in render_all(cluster, FAKE_SECRETS, ca_cert_hash=CA_HASH).items():
        for f in files:
            reload = "daemon-reload" if f.daemon_reload else f.reload
            header = (
                f"# mode={f.mode:04o} secret={f.secret} validate={f.validate} reload={reload}\n"
            )
            out[f"{host_name}{f.path}"] = header + f.content
        for b in render_host_blocks(cluster, cluster.host(host_name)):
            out[f"{host_name}{b.path}.block"] = b.text()
    return out


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_golden(spec: Path) -> None:
    expected_dir = GOLDEN / spec.stem
    got = rendered(spec)
    if os.environ.get("UPDATE_GOLDEN"):
        for old in expected_dir.rglob("*"):
            if old.is_file() and str(old.relative_to(expected_dir)) not in got:
                old.unlink()
        for rel, content in got.items():
            target = expected_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        return
    on_disk = {
        str(p.relative_to(expected_dir)): p.read_text(encoding="utf-8")
        for p in expected_dir.rglob("*")
        if p.is_file()
    }
    assert sorted(got) == sorted(on_disk), (
        "file set changed: run UPDATE_GOLDEN=1 pytest tests/golden"
    )
    for rel, content in got.items():
        assert content == on_disk[rel], f"{spec.stem}/{rel} differs: UPDATE_GOLDEN=1 to accept"
