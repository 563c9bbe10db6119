"""LAB ONLY stand-ins: a host that cannot be reached is reported, never skipped in silence."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes import OPS_CLUSTER

import hakube_lab.membership
import hakube_lab.standin
from hakube.spec.load import load_cluster_data
from hakube.state import StateDir
from hakube_lab.membership import install_standins


def test_a_new_control_plane_that_cannot_be_reached_fails_the_stand_in_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # cp2 answers, cp3 refuses SSH: the membership step must not go on with cp3 serving nothing.
    installed: list[str] = []

    @contextlib.asynccontextmanager
    async def ssh(*_a: Any, **_k: Any) -> AsyncIterator[tuple[dict[str, Any], dict[str, str]]]:
        yield {"cp2": object()}, {"cp3": "connection refused"}

    async def install(_c: Any, _s: Any, host: Any, _t: Any) -> None:
        installed.append(host.name)

    for module in (hakube_lab.standin, hakube_lab.membership):
        monkeypatch.setattr(module, "ssh_transports", ssh, raising=False)
        monkeypatch.setattr(module, "install_standin", install, raising=False)
    cluster = load_cluster_data(OPS_CLUSTER).cluster
    with pytest.raises(RuntimeError, match="cp3: connection refused"):
        install_standins(cluster, StateDir("ops", root=tmp_path), ["cp2", "cp3"])
    assert installed == []
    install_standins(cluster, StateDir("ops", root=tmp_path), ["cp2"])
    assert installed == ["cp2"]
