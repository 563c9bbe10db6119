"""Which scenarios a run may include: everything on a lab, less on a real site."""

from __future__ import annotations

from collections.abc import Sequence

from hakube_lab.drill.scenarios import ALL, SCENARIOS, DrillError
from hakube_lab.lab import Lab


def check_allowed(names: Sequence[str], *, lab: Lab | None, allow_poweroff: bool) -> None:
    """Refuse what a real site must not get: isolate always, host-down without the flag."""
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise DrillError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    if lab is not None:
        return
    for n in names:
        sc = SCENARIOS.get(n)
        if sc is not None and sc.lab_only:
            raise DrillError(f"{n} is lab only")
        if sc is not None and sc.poweroff and not allow_poweroff:
            raise DrillError(
                f"{n} powers a host off: refused on a real site without --allow-poweroff"
            )
