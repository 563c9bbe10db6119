"""The local multi-host lab: systemd-nspawn hosts on an isolated bridge with an apt mirror.

Example::

    from hakube_lab import Lab, running_lab
    with running_lab("t1", control_planes=2, workers=0, subnet="10.123.9.0/24") as lab:
        lab.run("cp1", "hostname")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hakube_lab.addressing import LabError

if TYPE_CHECKING:
    from hakube_lab.lab import Lab, LabHost, destroy, running_lab

__all__ = ["Lab", "LabError", "LabHost", "destroy", "running_lab"]


def __getattr__(name: str) -> Any:
    # `hakube --help` mounts the lab's commands; loading the lab itself (asyncio, subprocess
    # plumbing) waits until something here is really used.
    if name in ("Lab", "LabHost", "destroy", "running_lab"):
        return getattr(importlib.import_module("hakube_lab.lab"), name)
    raise AttributeError(name)
