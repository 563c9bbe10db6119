"""One scenario run: baseline → break → observe → restore → observe, with the probes running."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hakube.render.haproxy import STATS_SOCKET
from hakube.spec.model import Cluster
from hakube_lab.drill import soak as soak_module
from hakube_lab.drill.actions import actions
from hakube_lab.drill.front import ROUTE_AROUND, front_of, summary, target_host
from hakube_lab.drill.health import Health, HealthCheck
from hakube_lab.drill.invariants import invariants
from hakube_lab.drill.plot import plot_timeline
from hakube_lab.drill.probes import Probes
from hakube_lab.drill.report import (
    Marks,
    RunMetrics,
    compute_metrics,
    holder_changes,
    moved_at,
    owner_at,
)
from hakube_lab.drill.scenarios import SCENARIOS, SOAK, DrillError, Scenario, Settings, slug
from hakube_lab.lab import Lab

Log = Callable[[str], None]


class Drill:
    def __init__(
        self,
        cluster: Cluster,
        lab: Lab,
        out_dir: Path,
        *,
        config: str = "hakube defaults",
        settings: Settings | None = None,
        cafile: Path | None = None,
        log: Log = lambda _m: None,
        stats_socket: str = STATS_SOCKET,
    ) -> None:
        self.cluster = cluster
        self.lab = lab
        self.out_dir = out_dir
        self.config = config
        self.settings = settings or Settings()
        self.cafile = cafile
        self.log = log
        self.checks = HealthCheck(cluster, lab, stats_socket)
        self.front = front_of(cluster, lab)

    def health(
        self, skip: Sequence[str] = (), backends: bool = True, *, settled: bool = False
    ) -> Health:
        return self.checks.check(skip, backends, settled=settled)

    def soak(self, seconds: float, index: int = 1, load: bool = True) -> RunMetrics:
        return soak_module.soak(self, seconds, index, load)

    def run(self, name: str, index: int = 1, *, soak_seconds: float = 600.0) -> RunMetrics:
        if name == SOAK:
            return self.soak(soak_seconds, index)
        sc = SCENARIOS[name]
        st = self.settings
        before = self.checks.wait_whole()
        if not before.ok:
            raise DrillError(f"cluster not healthy before {name}: {'; '.join(before.problems)}")
        vip_holders = self.checks.vip_holders() if self.front.has_vip else []
        owner = target_host(self.cluster, self.front, vip_holders)
        targets, do_break, do_restore = actions(sc, owner, self.cluster, self.lab)
        out = self.out_dir / slug(self.config)
        raw = out / f"{name}-{index}"
        bound = st.baseline_s + st.break_max_s + st.restore_max_s + 60
        probes = Probes(self.lab, self.cluster, raw, st, self.cafile, bound, front=self.front)
        problems: list[str] = []
        try:
            start = time.monotonic()
            time.sleep(st.baseline_s)
            what = summary(sc.summary, self.front)
            self.log(f"{name} #{index}: break ({what}; target {', '.join(targets)})")
            t_break = time.monotonic()
            wall_break = time.time()
            do_break()
            t_break_done = time.monotonic()
            self._observe_break(sc, probes, owner, t_break)
            others = self.health(skip=targets, backends=False)
            problems += [f"during the break: {p}" for p in others.problems]
            self.log(f"{name} #{index}: restore")
            t_restore = time.monotonic()
            do_restore()
            t_restore_done = time.monotonic()
            healthy_at, end_health = self._observe_restore(probes, owner, t_restore)
            t_end = time.monotonic()
        finally:
            probes.stop()
        requests, samples = probes.requests(), probes.samples()
        marks = Marks(start, t_break, t_break_done, t_restore, t_restore_done, t_end)
        m = compute_metrics(
            name, self.config, index, requests, samples, marks,
            target=",".join(targets),
            healthy_after_s=None if healthy_at is None else healthy_at - t_restore,
            others_ok=others.ok, end_healthy=end_health.ok,
        )  # fmt: skip
        m.killed_at_down = self.checks.killed_at_down(wall_break, time.time())
        problems += [f"at the end: {p}" for p in end_health.problems]
        problems += invariants(sc, m, requests, marks, self.cluster, vip=self.front.has_vip)
        m.problems = problems
        if problems:
            m.lb_log = self.checks.lb_log(wall_break)
        m.png = str(plot_timeline(
            out / f"{name}-{index}.png",
            f"{name} #{index} ({self.config}): {summary(sc.summary, self.front)}",
            requests, samples, marks, self.checks.lb_names if self.front.has_vip else [],
        ))  # fmt: skip
        return m

    def _observe_break(self, sc: Scenario, probes: Probes, owner: str, t_break: float) -> None:
        st = self.settings
        deadline = t_break + st.break_max_s
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = time.monotonic()
            reqs = probes.requests()
            recent = [r for r in reqs if r.end >= now - 1.0]
            if not self.front.has_vip and sc.name in ROUTE_AROUND:
                # Without a VIP the balancer routes around the lost backend once its checks
                # mark it down: observe at least as long as with a VIP, and until it has.
                if now - t_break >= st.observe_s and recent and all(r.ok for r in recent):
                    return
                continue
            if not sc.expect_move and not sc.expect_failures:
                if now - t_break >= st.observe_s:
                    return
                continue
            if sc.expect_move:
                moved = moved_at(probes.samples(), t_break, owner)
                if moved and now - moved >= 1.0 and recent and all(r.ok for r in recent):
                    return
            elif (
                any(not r.ok and r.t > t_break for r in reqs)
                and recent
                and not any(r.ok for r in recent)
            ):
                return

    def _observe_restore(
        self, probes: Probes, owner: str, t_restore: float
    ) -> tuple[float | None, Health]:
        """Wait until healthy, the VIP stable (and back home with preempt), requests all ok."""
        st = self.settings
        preempt = self.front.has_vip and self.cluster.endpoint.vrrp.preempt
        deadline = t_restore + st.restore_max_s
        healthy_at: float | None = None
        h = Health(ok=False, problems=["not checked"])
        while time.monotonic() < deadline:
            # Settled: a check that failed during the fault and may still take a server out
            # once the run is over is not "healthy" yet.
            h = self.health(settled=True)
            now = time.monotonic()
            if h.ok and healthy_at is None:
                healthy_at = now
            samples = probes.samples()
            current = owner_at(samples, now)
            stable = holder_changes(samples, now - st.stable_s, now) == 0
            home = not preempt or current == (owner,)
            recent = [r for r in probes.requests() if r.end >= now - st.stable_s]
            if h.ok and stable and home and recent and all(r.ok for r in recent):
                return healthy_at, h
            time.sleep(0.5)
        return healthy_at, h
