"""Lab tests boot real systemd-nspawn hosts: root and the Debian tools are required."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import apply
from hakube_lab import Lab, running_lab
from hakube_lab.demo import SKIPPED
from hakube_lab.standin import prepare_standins
from hakube_lab.system import TOOLS, missing_tools


def lab_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, bridges, overlay mounts)"
    missing = missing_tools()
    if missing:
        pkgs = " ".join(sorted({TOOLS[t] for t in missing}))
        return f"lab tests need {', '.join(missing)} (apt-get install {pkgs})"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = lab_skip_reason()
    if reason is None:
        return
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def lab3() -> Iterator[Lab]:
    """cp1, cp2, w1 on their own subnet; torn down even when a test fails."""
    with running_lab("hkt1", control_planes=2, workers=1, subnet="10.123.201.0/24") as lab:
        yield lab


@contextmanager
def converged_lab(
    name: str, subnet: str, endpoint_mode: str, state_root: Path
) -> Iterator[tuple[Lab, Cluster]]:
    """3 control planes and 1 worker, stand-ins installed and applied (Kubernetes phases
    skipped), with the state dir under `state_root`; torn down even when a test fails."""
    with (
        pytest.MonkeyPatch.context() as mp,
        running_lab(name, 3, 1, subnet, endpoint_mode=endpoint_mode) as lab,
    ):
        mp.setenv("HAKUBE_STATE_DIR", str(state_root))
        assert os.environ["HAKUBE_STATE_DIR"] == str(state_root)
        cluster = load_cluster_file(lab.cluster_file).cluster
        asyncio.run(prepare_standins(cluster, StateDir(cluster.name)))
        result = asyncio.run(apply(cluster, state=StateDir(cluster.name), skip=SKIPPED))
        assert result.ok, result.failures
        yield lab, cluster
