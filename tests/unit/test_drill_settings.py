"""Scenario gating: what a real site may get."""

from __future__ import annotations

import pytest

from hakube_lab.drill.policy import check_allowed
from hakube_lab.drill.scenarios import ALL, DrillError


def test_real_site_refuses_lab_only_and_poweroff() -> None:
    check_allowed(ALL, lab=object(), allow_poweroff=False)  # type: ignore[arg-type]
    with pytest.raises(DrillError, match="lab only"):
        check_allowed(["isolate"], lab=None, allow_poweroff=True)
    with pytest.raises(DrillError, match="allow-poweroff"):
        check_allowed(["host-down"], lab=None, allow_poweroff=False)
    check_allowed(["host-down", "haproxy-down"], lab=None, allow_poweroff=True)
    with pytest.raises(DrillError, match="unknown"):
        check_allowed(["nope"], lab=None, allow_poweroff=False)
