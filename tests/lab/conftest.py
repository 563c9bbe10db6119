"""Lab tests boot real systemd-nspawn hosts: root and the Debian tools are required."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hakube_lab import Lab, running_lab
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
