"""Drill arithmetic on synthetic probe logs: gaps, detection/move times, counts, aggregation."""

from __future__ import annotations

import json
import subprocess

import pytest

from hakube_lab.drill.health import KILLED_AT_DOWN, KILLED_AT_DOWN_RE
from hakube_lab.drill.report import (
    Marks,
    Request,
    VipSample,
    aggregate,
    compute_metrics,
    first_change,
    fmt_spread,
    holder_changes,
    longest_gap,
    moved_at,
    parse_requests,
    parse_vip,
    recovered_at,
    spread,
    vip_moves,
)


def reqs(spec: list[tuple[float, bool]], latency: float = 0.005) -> list[Request]:
    return [Request(t, t + latency, ok) for t, ok in spec]


def every(start: float, end: float, step: float, ok: bool = True) -> list[tuple[float, bool]]:
    n = round((end - start) / step)
    return [(round(start + i * step, 6), ok) for i in range(n)]


def vip(*points: tuple[float, tuple[str, ...]]) -> list[VipSample]:
    return [VipSample(t, h, h) for t, h in points]


def test_longest_gap_counts_from_window_edges() -> None:
    log = reqs(every(0, 1, 0.02) + every(1, 1.4, 0.02, ok=False) + every(1.4, 3, 0.02))
    gap = longest_gap(log, 0.5, 2.5)
    # last success before the outage ends at 0.98 + 0.005, the first after at 1.4 + 0.005
    assert gap == pytest.approx(1.4 - 0.98)


def test_longest_gap_with_no_success_is_the_whole_window() -> None:
    assert longest_gap(reqs(every(0, 2, 0.1, ok=False)), 0.0, 2.0) == pytest.approx(2.0)


def test_detection_and_move_times() -> None:
    s = vip((0.0, ("cp1",)), (1.0, ("cp1",)), (1.05, ()), (1.3, ("cp2",)), (5.0, ("cp1",)))
    assert first_change(s, 0.5) == pytest.approx(1.05)
    assert moved_at(s, 0.5, "cp1") == pytest.approx(1.3)
    assert vip_moves(s, 0.0, 6.0) == 2
    assert holder_changes(s, 0.0, 6.0) == 3


def test_recovered_at_is_first_success_after_last_failure() -> None:
    log = reqs([(1.0, False), (1.1, True), (1.2, False), (1.3, True), (1.4, True)])
    assert recovered_at(log, 0.5) == pytest.approx(1.305)
    assert recovered_at(reqs([(1.0, True)]), 0.5) is None


def test_compute_metrics_for_a_failover() -> None:
    log = reqs(every(0, 2, 0.02) + every(2, 2.3, 0.02, ok=False) + every(2.3, 10, 0.02))
    samples = vip((0.0, ("cp1",)), (2.05, ()), (2.25, ("cp2",)), (7.0, ("cp1",)), (9.9, ("cp1",)))
    marks = Marks(start=0.0, break_at=2.0, break_done=2.01, restore_at=6.0, restore_done=6.2,
                  end=10.0)  # fmt: skip
    m = compute_metrics("haproxy-down", "defaults", 1, log, samples, marks, target="cp1")
    assert (m.owner_before, m.owner_during, m.owner_after) == ("cp1", "cp2", "cp1")
    assert m.detect_s == pytest.approx(0.05)
    assert m.move_s == pytest.approx(0.25)
    assert m.first_fail_s == pytest.approx(0.0)
    assert m.gap_s == pytest.approx(2.3 + 0.005 - 2.0)
    assert m.failed == 15
    assert m.ok == 400 - 15
    assert m.moved
    assert m.moved_back
    assert m.recover_s == pytest.approx(1.0)  # the VIP came home 1 s after the restore
    assert m.vip_moves == 2
    assert m.invariants_ok


def test_compute_metrics_without_any_change() -> None:
    log = reqs(every(0, 10, 0.02))
    m = compute_metrics("apiserver-down", "d", 1, log, vip((0.0, ("cp1",))),
                        Marks(0, 2, 2, 6, 6, 10))  # fmt: skip
    assert m.detect_s is None
    assert m.move_s is None
    assert m.first_fail_s is None
    assert m.failed == 0
    assert not m.moved
    assert not m.moved_back
    assert m.recover_s == 0.0


def test_spread_and_aggregate() -> None:
    s = spread([0.3, None, 0.1, 0.2])
    assert s is not None
    assert (s.min, s.max, s.n) == (0.1, 0.3, 3)
    assert s.median == pytest.approx(0.2)
    assert spread([None, None]) is None
    assert fmt_spread(s, "s", 4) == "0.20 s (0.10-0.30) [3/4]"
    assert fmt_spread(spread([3]), "") == "3"
    log = reqs(every(0, 4, 0.02))
    runs = [compute_metrics("x", "d", i, log, vip((0.0, ("cp1",))), Marks(0, 1, 1, 2, 2, 4))
            for i in (1, 2)]  # fmt: skip
    agg = aggregate(runs)
    assert agg["move_s"] is None
    ok = agg["ok"]
    assert ok is not None
    assert ok.n == 2
    assert ok.median == 150


def test_parse_logs_skip_torn_lines() -> None:
    lines = [
        json.dumps({"seq": 0, "t": 2.0, "end": 2.1, "ok": True, "tries": 2, "errors": ["x"]}),
        json.dumps({"seq": 1, "t": 1.0, "end": 1.1, "ok": False, "tries": 2, "errors": ["a", "b"]}),
        '{"seq": 2, "t": 3',
    ]
    r = parse_requests(lines)
    assert [x.t for x in r] == [1.0, 2.0]
    assert r[1].tries == 2
    assert r[0].errors == ("a", "b")
    v = parse_vip(['{"t": 1, "holders": ["cp1"], "reachable": []}', ""])
    assert v == [VipSample(1.0, ("cp1",), ())]


def test_killed_at_down_counts_only_sessions_haproxy_closed_for_a_down_server() -> None:
    # tcplog lines as HAProxy 2.6 wrote them on the lab's new VIP owner after a host-down: the
    # D- sessions were still connecting to the dead server when it was marked DOWN.
    log = "\n".join(
        [
            "10.1.0.1:35746 [26/Nov/2026:04:10:14.676] kube-apiserver kube-apiserver/cp2 "
            "102/0/101 0 D- 12/12/11/4/+1 0/0",
            "10.1.0.1:35760 [26/Nov/2026:04:10:14.678] kube-apiserver kube-apiserver/cp3 "
            "102/1/102 0 DC 11/11/10/5/+1 0/0",
            "10.1.0.1:35790 [26/Nov/2026:04:10:14.690] kube-apiserver kube-apiserver/cp3 "
            "-1/0/20 4120 -- 11/11/10/5/0 0/0",
            "10.1.0.1:35792 [26/Nov/2026:04:10:14.695] kube-apiserver kube-apiserver/cp2 "
            "-1/-1/100 0 SC 11/11/10/5/3 0/0",
            "Server kube-apiserver/cp1 is DOWN, reason: Layer4 timeout, check duration: 101ms. "
            "2 active and 0 backup servers left. 2 sessions active, 0 requeued.",
        ]
    )
    res = subprocess.run(
        ["grep", "-cE", KILLED_AT_DOWN_RE], input=log, capture_output=True, text=True, check=False
    )
    assert res.stdout.strip() == "2"
    assert f"grep -cE '{KILLED_AT_DOWN_RE}'" in KILLED_AT_DOWN


def test_a_vip_sample_with_an_unread_host_is_no_move() -> None:
    # The sampler's `ip` in one host did not answer within 1 s (a starved machine): that sample
    # says nothing about the VIP, and read as "nobody holds it" it counted as two holder
    # changes (the 1-hour soak's "false failover: 0 moves, 8 holder changes").
    lines = [
        json.dumps({"t": 1.0, "holders": ["cp1"], "reachable": ["cp1"]}),
        json.dumps({"t": 2.0, "holders": [], "reachable": [], "unread": ["cp1"]}),
        json.dumps({"t": 3.0, "holders": ["cp1"], "reachable": ["cp1"]}),
    ]
    samples = parse_vip(lines)
    assert [s.t for s in samples] == [1.0, 3.0]
    assert holder_changes(samples, 0.0, 4.0) == 0
    assert vip_moves(samples, 0.0, 4.0) == 0
