"""A lab's state on disk: its shape and image in state.json, and the per-lab lock.

state.json is written before anything else exists, so `down` finds what to remove after a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hakube.fileio import exclusive_lock
from hakube_lab.addressing import SPARE, LabError, LabInputError, LabPlan, plan_lab, validate_name

STATE_ROOT = Path("/var/lib/hakube/lab")


def state_file(state_root: Path, name: str) -> Path:
    return state_root / name / "state.json"


def read_plan(name: str, state_root: Path) -> LabPlan:
    """The plan of a lab that was brought up, from the shape its state file recorded."""
    validate_name(name)
    path = state_file(state_root, name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabInputError(f"no lab named {name!r} (no {path}); run `hakube lab up`") from None
    # Labs from before spare hosts existed have none.
    spares = data.get("spares", 0)
    mode = data.get("endpoint_mode", "vip")  # and before endpoint modes
    return plan_lab(name, data["control_planes"], data["workers"], data["subnet"], spares, mode)


def shape_data(plan: LabPlan) -> dict[str, Any]:
    def count(role: str) -> int:
        return sum(1 for h in plan.hosts if h.role == role)

    return {
        "name": plan.name,
        "subnet": str(plan.subnet),
        "control_planes": count("control-plane"),
        "workers": count("worker"),
        "spares": count(SPARE),
        "endpoint_mode": plan.endpoint_mode,
    }


def write_state(path: Path, plan: LabPlan, image: Path, mirror: Path) -> None:
    data = shape_data(plan) | {"image": str(image), "mirror": str(mirror)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.rename(path)


def read_state(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@contextmanager
def lab_lock(state_root: Path, name: str) -> Iterator[None]:
    """One lab command at a time per lab; fails at once when another one holds it."""
    # Outside the state dir so `down` can delete that while holding the lock.
    state_root.mkdir(parents=True, exist_ok=True)
    lock_path = state_root / f".{name}.lock"
    busy = f"another hakube lab command is working on lab {name!r} right now"
    with exclusive_lock(lock_path, lambda: LabError(busy)):
        try:
            yield
        finally:
            # A failed first `up` must not leave its lock file behind.
            if not (state_root / name).exists():
                lock_path.unlink(missing_ok=True)
