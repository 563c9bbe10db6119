"""The soak: minutes of nothing broken with every core busy; any VIP move is a false failover."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from hakube_lab.drill.plot import plot_timeline
from hakube_lab.drill.probes import Probes
from hakube_lab.drill.report import Marks, RunMetrics, compute_metrics, holder_changes
from hakube_lab.drill.scenarios import SOAK, DrillError, slug

if TYPE_CHECKING:
    from hakube_lab.drill.runner import Drill


@contextlib.contextmanager
def cpu_load(seconds: float, procs: int = 2) -> Iterator[None]:
    """`procs` busy loops (one per core), each ending by itself after `seconds` at the latest."""
    code = f"import time\ne = time.monotonic() + {seconds}\nwhile time.monotonic() < e:\n    pass\n"
    ps = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(procs)]
    try:
        yield
    finally:
        for p in ps:
            if p.poll() is None:
                p.terminate()
            p.wait()


@contextlib.contextmanager
def lossy(d: Drill, loss: float) -> Iterator[None]:
    """Every lab host drops `loss` of its packets each way inside the block (none if 0)."""
    hosts = [h.name for h in d.lab.hosts] if loss else []
    try:
        for h in hosts:
            d.lab.degrade(h, loss)
        yield
    finally:
        for h in hosts:
            d.lab.restore(h)


def soak(d: Drill, seconds: float, index: int = 1, load: bool = True) -> RunMetrics:
    st = d.settings
    before = d.checks.wait_whole()
    if not before.ok:
        raise DrillError(f"cluster not healthy before the soak: {'; '.join(before.problems)}")
    out = d.out_dir / slug(d.config)
    # Under loss, the same probe against one LB host's own address measures the network's
    # share of failures: what the VIP adds is the difference.
    direct = d.cluster.lb_hosts[0].address if st.soak_loss else None
    probes = Probes(d.lab, d.cluster, out / f"soak-{index}", st, d.cafile, seconds + 60,
                    direct=None if direct is None else str(direct))  # fmt: skip
    what = ", ".join(
        (["2 busy loops"] if load else []) + ([f"{st.soak_loss:.1%} loss"] if st.soak_loss else [])
    )
    try:
        with lossy(d, st.soak_loss):
            start = time.monotonic()
            time.sleep(st.baseline_s)
            d.log(f"soak #{index}: {seconds:.0f} s" + (f" with {what}" if what else ""))
            t0 = time.monotonic()
            wall_t0 = time.time()
            with cpu_load(seconds) if load else contextlib.nullcontext():
                time.sleep(seconds)
            t1 = time.monotonic()
            time.sleep(0.5)
            t_end = time.monotonic()
    finally:
        probes.stop()
    requests, samples = probes.requests(), probes.samples()
    marks = Marks(start, t0, t0, t1, t1, t_end)
    # Under loss HAProxy may have marked a healthy server DOWN now and then (a check whose SYN
    # was lost); once the loss is gone it needs `rise` checks to be UP again. The soak asks
    # whether the setup becomes whole again, not whether it is at this very instant.
    end = d.checks.wait_whole(timeout=30.0) if st.soak_loss else d.checks.check()
    m = compute_metrics(SOAK, d.config, index, requests, samples, marks, end_healthy=end.ok)
    m.killed_at_down = d.checks.killed_at_down(wall_t0, time.time())
    if direct is not None:
        beside = [r for r in probes.direct_requests() if t0 <= r.t <= t1]
        m.direct_failed = sum(not r.ok for r in beside)
        m.direct_total = len(beside)
    changes = holder_changes(samples, t0, t1)
    if m.vip_moves or changes:
        m.problems.append(f"false failover: {m.vip_moves} moves, {changes} holder changes")
    m.problems += [f"at the end: {x}" for x in end.problems]
    if m.problems:
        m.lb_log = d.checks.lb_log(wall_t0)
    m.png = str(plot_timeline(out / f"soak-{index}.png",
                              f"soak #{index} ({d.config}), {seconds:.0f} s, {what or 'idle'}",
                              requests, samples, marks, d.checks.lb_names))  # fmt: skip
    return m
