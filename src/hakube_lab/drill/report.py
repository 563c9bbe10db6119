"""Pure drill arithmetic: probe logs in, figures out (gaps, detection and move times, counts),
and their aggregation over repeated runs. No I/O beyond parsing lines handed in."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Request:
    """One probe request (after its retry): start and end on CLOCK_MONOTONIC."""

    t: float
    end: float
    ok: bool
    tries: int = 1
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class VipSample:
    """Who held the VIP at time t; `reachable` leaves out holders whose cable is out."""

    t: float
    holders: tuple[str, ...]
    reachable: tuple[str, ...]


@dataclass(frozen=True)
class Marks:
    """Monotonic times of the drill's own actions."""

    start: float
    break_at: float
    break_done: float
    restore_at: float
    restore_done: float
    end: float


def _json_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The records of a probe log; a line cut short by the probe's termination is skipped."""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue


def parse_requests(lines: Iterable[str]) -> list[Request]:
    out = []
    for d in _json_lines(lines):
        out.append(Request(float(d["t"]), float(d["end"]), bool(d["ok"]), int(d.get("tries", 1)),
                           tuple(d.get("errors", ()))))  # fmt: skip
    out.sort(key=lambda r: r.t)
    return out


def parse_vip(lines: Iterable[str]) -> list[VipSample]:
    """The samples in which every host was read: one whose `ip` did not answer in time
    ("unread") says nothing about who held the VIP, and read as "nobody" it would count as a
    move there and back."""
    out = []
    for d in _json_lines(lines):
        if d.get("unread"):
            continue
        out.append(VipSample(float(d["t"]), tuple(d["holders"]), tuple(d["reachable"])))
    out.sort(key=lambda s: s.t)
    return out


def longest_gap(requests: Sequence[Request], start: float, end: float) -> float:
    """Longest stretch of [start, end] without a successful response (by completion time)."""
    points = [start, *sorted(r.end for r in requests if r.ok and start <= r.end <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


def owner_at(samples: Sequence[VipSample], t: float) -> tuple[str, ...]:
    """Reachable VIP holders at the last sample not after t (the first sample if none)."""
    if not samples:
        return ()
    best = samples[0]
    for s in samples:
        if s.t > t:
            break
        best = s
    return best.reachable


def first_change(samples: Sequence[VipSample], after: float) -> float | None:
    """First sample time after `after` whose reachable holders differ from those at `after`."""
    base = owner_at(samples, after)
    for s in samples:
        if s.t > after and s.reachable != base:
            return s.t
    return None


def moved_at(samples: Sequence[VipSample], after: float, old: str) -> float | None:
    """First time after `after` when exactly one reachable host, not `old`, holds the VIP."""
    for s in samples:
        if s.t > after and len(s.reachable) == 1 and s.reachable[0] != old:
            return s.t
    return None


def last_change(samples: Sequence[VipSample], after: float, before: float) -> float | None:
    prev = owner_at(samples, after)
    last = None
    for s in samples:
        if after < s.t <= before:
            if s.reachable != prev:
                last = s.t
            prev = s.reachable
    return last


def vip_moves(samples: Sequence[VipSample], start: float, end: float) -> int:
    """How often the single reachable owner changed within [start, end] (a failover = 1)."""
    moves = 0
    before = owner_at(samples, start)
    owner = before[0] if len(before) == 1 else None
    for s in samples:
        if not start <= s.t <= end or len(s.reachable) != 1:
            continue
        if owner is not None and s.reachable[0] != owner:
            moves += 1
        owner = s.reachable[0]
    return moves


def holder_changes(samples: Sequence[VipSample], start: float, end: float) -> int:
    """Every change of the reachable holder set within [start, end] (brief empties included)."""
    inside = [s.reachable for s in samples if start <= s.t <= end]
    return sum(1 for a, b in itertools.pairwise(inside) if a != b)


def recovered_at(requests: Sequence[Request], after: float) -> float | None:
    """Completion of the first success after the last failure that started after `after`."""
    failed = [r.t for r in requests if r.t >= after and not r.ok]
    if not failed:
        return None
    last = max(failed)
    ok = [r.end for r in requests if r.ok and r.t > last]
    return min(ok) if ok else None


@dataclass
class RunMetrics:
    """Figures of one scenario run; times in seconds relative to the break (or the restore)."""

    scenario: str
    config: str
    run: int
    target: str | None
    owner_before: str | None
    owner_during: str | None
    owner_after: str | None
    detect_s: float | None
    move_s: float | None
    first_fail_s: float | None
    gap_s: float
    gap_restore_s: float
    ok: int
    failed: int
    #: Failed requests that started after the VIP had moved, before the restore.
    failed_after_move: int
    #: Failed requests that started after the restore (the second outage, if any).
    failed_restore: int
    retried: int
    recover_s: float | None
    moved: bool
    moved_back: bool
    vip_moves: int
    break_cmd_s: float
    others_ok: bool
    end_healthy: bool
    problems: list[str] = field(default_factory=list)
    png: str | None = None
    #: Soak under loss: the same probe against one LB host's own address (the network's share).
    direct_failed: int | None = None
    direct_total: int | None = None
    marks: Marks | None = None
    #: Sessions HAProxy closed because their server was marked DOWN (from break to end, read
    #: from the balancers' logs by the runner and the soak): a client without retry sees each
    #: as a failure.
    killed_at_down: int = 0
    #: When a run broke an invariant: what the balancers logged from the break on (sessions
    #: that did not end normally, server and VRRP state changes), to say why.
    lb_log: list[str] = field(default_factory=list)

    @property
    def invariants_ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["invariants_ok"] = self.invariants_ok
        return d


def _single(owners: tuple[str, ...]) -> str | None:
    return owners[0] if len(owners) == 1 else None


def compute_metrics(
    scenario: str,
    config: str,
    run: int,
    requests: Sequence[Request],
    samples: Sequence[VipSample],
    marks: Marks,
    *,
    target: str | None = None,
    healthy_after_s: float | None = None,
    others_ok: bool = True,
    end_healthy: bool = True,
) -> RunMetrics:
    b, r, e = marks.break_at, marks.restore_at, marks.end
    before = _single(owner_at(samples, b))
    during = _single(owner_at(samples, r))
    after = _single(owner_at(samples, e))
    detect = first_change(samples, b)
    detect = detect if detect is not None and detect <= r else None
    move = moved_at(samples, b, before) if before else None
    move = move if move is not None and move <= r else None
    window = [q for q in requests if b <= q.t <= e]
    fails = [q.t for q in window if not q.ok and q.t <= r]
    candidates = [x - r for x in (last_change(samples, r, e), recovered_at(requests, r))
                  if x is not None]  # fmt: skip
    if healthy_after_s is not None:
        candidates.append(healthy_after_s)
    return RunMetrics(
        scenario=scenario,
        config=config,
        run=run,
        target=target,
        owner_before=before,
        owner_during=during,
        owner_after=after,
        detect_s=None if detect is None else detect - b,
        move_s=None if move is None else move - b,
        first_fail_s=min(fails) - b if fails else None,
        gap_s=longest_gap(requests, b, r),
        gap_restore_s=longest_gap(requests, r, e),
        ok=sum(1 for q in window if q.ok),
        failed=sum(1 for q in window if not q.ok),
        failed_after_move=sum(1 for t in fails if move is not None and t >= move),
        failed_restore=sum(1 for q in window if not q.ok and q.t >= r),
        retried=sum(1 for q in window if q.ok and q.tries > 1),
        recover_s=max(candidates) if candidates else 0.0,
        moved=during is not None and during != before,
        moved_back=before is not None and after == before and during != before,
        vip_moves=vip_moves(samples, b, e),
        break_cmd_s=marks.break_done - b,
        others_ok=others_ok,
        end_healthy=end_healthy,
        marks=marks,
    )


@dataclass(frozen=True)
class Spread:
    min: float
    median: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"min": self.min, "median": self.median, "max": self.max, "n": self.n}


def spread(values: Iterable[float | int | None]) -> Spread | None:
    """min/median/max over the runs that produced a value (None: no run did)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return Spread(min(vals), statistics.median(vals), max(vals), len(vals))


class Figure(NamedTuple):
    """One figure aggregated over repeats: a `RunMetrics` attribute, its title, its unit."""

    attribute: str
    title: str
    #: "s" for times; counts have none.
    unit: str = ""


#: The figures in table order.
FIGURES: tuple[Figure, ...] = (
    Figure("detect_s", "detect", "s"),
    Figure("move_s", "VIP moved", "s"),
    Figure("gap_s", "longest gap", "s"),
    Figure("failed", "failed"),
    Figure("failed_after_move", "failed after the move"),
    Figure("failed_restore", "failed on restore"),
    Figure("killed_at_down", "closed by HAProxy: server DOWN"),
    Figure("direct_failed", "failed, own address"),
    Figure("ok", "ok"),
    Figure("retried", "ok on retry"),
    Figure("recover_s", "recover", "s"),
    Figure("gap_restore_s", "gap on restore", "s"),
    Figure("vip_moves", "VIP moves"),
)


def aggregate(runs: Sequence[RunMetrics]) -> dict[str, Spread | None]:
    return {f.attribute: spread(getattr(m, f.attribute) for m in runs) for f in FIGURES}


def fmt_spread(s: Spread | None, unit: str, total: int | None = None) -> str:
    """'0.25 s' for one run, '0.25 s (0.22-0.31)' as median (min-max) for several."""
    if s is None:
        return "-"
    digits = 2 if unit == "s" else 0

    def f(x: float) -> str:
        return f"{x:.{digits}f}"

    text = f(s.median) + (f" {unit}" if unit else "")
    if s.n > 1 and s.min != s.max:
        text += f" ({f(s.min)}-{f(s.max)})"
    if total is not None and s.n < total:
        text += f" [{s.n}/{total}]"
    return text
