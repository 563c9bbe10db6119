"""What every run of a scenario must show, checked on its metrics and raw requests."""

from __future__ import annotations

from collections.abc import Sequence

from hakube.spec.model import Cluster
from hakube_lab.drill.front import ROUTE_AROUND
from hakube_lab.drill.report import Marks, Request, RunMetrics
from hakube_lab.drill.scenarios import Scenario


def invariants(
    sc: Scenario,
    m: RunMetrics,
    requests: Sequence[Request],
    marks: Marks,
    cluster: Cluster,
    *,
    vip: bool = True,
) -> list[str]:
    """`vip`: the endpoint has a VIP (else the run broke a control plane behind a balancer)."""
    lb_names = [h.name for h in cluster.lb_hosts]
    p: list[str] = []
    broken = set((m.target or "").split(","))
    if not vip:
        if m.vip_moves:
            p.append(f"the VIP watcher saw {m.vip_moves} moves in a mode without a VIP")
    elif sc.expect_move:
        if not m.moved or m.owner_during in broken or m.owner_during not in lb_names:
            p.append(f"the VIP did not move to a healthy LB host (held by {m.owner_during})")
        if cluster.endpoint.vrrp.preempt and not m.moved_back:
            p.append("preempt is on, but the VIP did not move back after the restore")
    elif m.vip_moves:
        p.append(f"the VIP moved {m.vip_moves} times; it should have stayed")
    if sc.expect_failures:
        if not any(not r.ok for r in requests if marks.break_at <= r.t <= marks.restore_at):
            p.append("readiness never failed although etcd lost quorum")
    elif not vip and sc.name in ROUTE_AROUND:
        # The failures while the balancer's checks find the lost backend are the figure; what
        # must hold is that it routes around it before the restore.
        last = [r for r in requests if marks.restore_at - 1.0 <= r.t <= marks.restore_at]
        if not last or not all(r.ok for r in last):
            p.append(f"requests still failed in the last second before the restore: the "
                     f"balancer had not routed around {m.target}")  # fmt: skip
    elif (not sc.expect_move or not vip) and m.failed:
        p.append(f"{m.failed} requests failed (retries included); expected none")
    tail = [r for r in requests if r.t >= marks.end - 1.0]
    if not tail or not all(r.ok for r in tail):
        p.append("the service had not recovered at the end")
    return p
