"""Which scenarios a run may include.

The drill runs on the lab only (it needs the lab's faults and its own hosts to break), so there
is no real-site policy to apply: only names are checked.
"""

from __future__ import annotations

from collections.abc import Sequence

from hakube_lab.drill.scenarios import ALL, DrillError


def check_allowed(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise DrillError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
