"""A lab's state on disk: its shape and image in state.json, and the per-lab lock.

state.json is written before anything else exists, so `down` finds what to remove after a crash.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakube_lab.addressing import SPARE, LabError, LabPlan, validate_name

STATE_ROOT = Path("/var/lib/hakube/lab")


@dataclass(frozen=True)
class Shape:
    control_planes: int
    workers: int
    subnet: str
    spares: int = 0


def state_file(state_root: Path, name: str) -> Path:
    return state_root / name / "state.json"


def read_shape(name: str, state_root: Path) -> Shape:
    validate_name(name)
    path = state_file(state_root, name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab named {name!r} (no {path}); run `hakube lab up`") from None
    return Shape(data["control_planes"], data["workers"], data["subnet"], data.get("spares", 0))


def shape_data(plan: LabPlan) -> dict[str, Any]:
    def count(role: str) -> int:
        return sum(1 for h in plan.hosts if h.role == role)

    return {
        "name": plan.name,
        "subnet": str(plan.subnet),
        "control_planes": count("control-plane"),
        "workers": count("worker"),
        "spares": count(SPARE),
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
    with lock_path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(
                f"another hakube lab command is working on lab {name!r} right now"
            ) from None
        try:
            yield
        finally:
            # A failed first `up` must not leave its lock file behind.
            if not (state_root / name).exists():
                lock_path.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)
