"""Failure scenarios on a lab: break → observe → restore → observe, with the probes running.

The probes run as their own processes in the machine's root network namespace and reach the VIP
over the lab bridge like any client on that L2 segment would. That is outside every lab host, so
no scenario can kill, isolate or starve the observer by breaking the host it sits on, and it
shares CLOCK_MONOTONIC with the VIP watcher and with the marks taken here. The VIP watcher reads
each host's network namespace directly (`ip -n`), which works while a host is isolated, and it
tells "holds the VIP" from "holds it with the cable out" (a powered-off host's namespace keeps
the address).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hakube.facts.haproxy import SHOW_STAT, parse_show_stat
from hakube.spec.model import Cluster
from hakube_lab.drill import probe as probe_module
from hakube_lab.drill.plot import plot_timeline
from hakube_lab.drill.report import (
    Marks,
    Request,
    RunMetrics,
    VipSample,
    compute_metrics,
    holder_changes,
    moved_at,
    owner_at,
    parse_requests,
    parse_vip,
)
from hakube_lab.lab import Lab
from hakube_lab.standin import UNIT as STANDIN_UNIT

Log = Callable[[str], None]


class DrillError(Exception):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    #: The VIP must move to a healthy LB host.
    expect_move: bool = False
    #: Requests must fail during the break (readiness lost), then recover.
    expect_failures: bool = False
    #: Lab only (isolate); host-down also needs --allow-poweroff off the lab.
    lab_only: bool = False
    poweroff: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("haproxy-down", "systemctl stop haproxy on the VIP owner", expect_move=True),
        Scenario("keepalived-down", "systemctl stop keepalived on the VIP owner", expect_move=True),
        Scenario(
            "host-down",
            "power the VIP owner off (cable out, every process killed)",
            expect_move=True,
            poweroff=True,
        ),
        Scenario("isolate", "cut the VIP owner off the network", expect_move=True, lab_only=True),
        Scenario("apiserver-down", "stop one apiserver backend (the owner's stand-in unit)"),
        Scenario("etcd-member-down", "stop one etcd member (the owner's): quorum kept"),
        Scenario(
            "etcd-two-down",
            "stop two etcd members: no quorum, readiness fails",
            expect_failures=True,
        ),
    )
}
SOAK = "soak"
ALL = [*SCENARIOS, SOAK]


@dataclass
class Health:
    ok: bool
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    backends_down: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Settings:
    rate: float = 50.0
    timeout: float = 0.2
    retries: int = 1
    vip_interval: float = 0.05
    baseline_s: float = 1.5
    #: Break phase without an expected move: long enough for HAProxy to mark a backend down.
    observe_s: float = 6.0
    break_max_s: float = 25.0
    restore_max_s: float = 120.0
    stable_s: float = 2.0


class Probes:
    """The two probe processes of one scenario run, and their logs."""

    def __init__(self, lab: Lab, cluster: Cluster, raw: Path, settings: Settings,
                 cafile: Path | None, duration: float) -> None:  # fmt: skip
        self.requests_file = raw.with_name(raw.name + "-requests.jsonl")
        self.vip_file = raw.with_name(raw.name + "-vip.jsonl")
        for f in (self.requests_file, self.vip_file):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.unlink(missing_ok=True)
        script = probe_module.__file__
        vip = str(cluster.endpoint.vip)
        py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        readyz = [py, script, "readyz", "--host", vip, "--port", str(cluster.endpoint.port),
                  "--rate", str(settings.rate), "--timeout", str(settings.timeout),
                  "--retries", str(settings.retries), "--duration", str(duration),
                  "--out", str(self.requests_file)]  # fmt: skip
        if cafile is not None:
            readyz += ["--cafile", str(cafile)]
        watch = [py, script, "vip", "--vip", vip, "--interval", str(settings.vip_interval),
                 "--duration", str(duration), "--out", str(self.vip_file)]  # fmt: skip
        for h in lab.hosts:
            if h.name in {x.name for x in cluster.lb_hosts}:
                watch += ["--lab-host", f"{h.name}:{h.netns}:{h.veth}"]
        self.procs = [
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            for cmd in (watch, readyz)
        ]

    def requests(self) -> list[Request]:
        return parse_requests(_lines(self.requests_file))

    def samples(self) -> list[VipSample]:
        return parse_vip(_lines(self.vip_file))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


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
    ) -> None:
        self.cluster = cluster
        self.lab = lab
        self.out_dir = out_dir
        self.config = config
        self.settings = settings or Settings()
        self.cafile = cafile
        self.log = log
        self.lb_names = [h.name for h in cluster.lb_hosts]

    # ---- facts --------------------------------------------------------------------------

    def vip_holders(self) -> list[str]:
        vip = str(self.cluster.endpoint.vip)
        out = []
        for name in self.lb_names:
            h = self.lab.host(name)
            cmd = ["ip", "-n", h.netns, "-o", "-4", "addr", "show"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=5)
            up = Path(f"/sys/class/net/{h.veth}/operstate")
            if f"inet {vip}/" in res.stdout and up.exists() and up.read_text().strip() == "up":
                out.append(name)
        return out

    def _units_of(self, host: str) -> list[str]:
        c = self.cluster
        units = []
        if host in self.lb_names:
            units += ["haproxy", "keepalived"]
        if host in {h.name for h in c.etcd_hosts}:
            units.append("etcd")
        if host in {h.name for h in c.control_planes}:
            units.append(STANDIN_UNIT)
        return units

    def health(self, skip: Sequence[str] = (), backends: bool = True) -> Health:
        """Units active on every host (but `skip`), backends UP, exactly one VIP owner."""
        h = Health(ok=True)
        for host in [x.name for x in self.cluster.hosts if x.name not in skip]:
            units = self._units_of(host)
            cmd = f"systemctl is-active {' '.join(units)}; echo ---; " + (
                SHOW_STAT if backends and host in self.lb_names else "true"
            )
            try:
                res = self.lab.nsenter(host, ["sh", "-c", cmd], check=False, timeout=10)
                states, _, stats = res.stdout.partition("---")
            except Exception as e:
                h.problems.append(f"{host}: unreachable ({e})")
                continue
            h.units[host] = dict(zip(units, states.split(), strict=False))
            for u in units:
                if h.units[host].get(u) != "active":
                    h.problems.append(f"{host}: {u} {h.units[host].get(u, 'unknown')}")
            if backends and host in self.lb_names:
                found = parse_show_stat(stats.strip(), host)
                down = [f"{host}→{b.server}" for b in found if not b.status.startswith("UP")]
                h.backends_down += down
                if not found:
                    h.problems.append(f"{host}: no HAProxy stats")
                elif down:
                    h.problems.append(f"{host}: backends not UP: {', '.join(down)}")
        if not skip:
            owners = self.vip_holders()
            if len(owners) != 1:
                h.problems.append(f"VIP held by {len(owners)} reachable hosts: {owners}")
        h.ok = not h.problems
        return h

    def wait_healthy(self, timeout: float = 60.0) -> Health:
        deadline = time.monotonic() + timeout
        h = self.health()
        while not h.ok and time.monotonic() < deadline:
            time.sleep(0.5)
            h = self.health()
        return h

    # ---- actions ------------------------------------------------------------------------

    def _etcd_targets(self, owner: str, count: int) -> list[str]:
        names = [h.name for h in self.cluster.etcd_hosts]
        ordered = ([owner] if owner in names else []) + [n for n in names if n != owner]
        return ordered[:count]

    def _systemctl(self, hosts: Sequence[str], verb: str, unit: str) -> None:
        for host in hosts:
            self.lab.nsenter(host, ["systemctl", verb, unit], timeout=60)

    def _actions(
        self, sc: Scenario, owner: str
    ) -> tuple[list[str], Callable[[], None], Callable[[], None]]:
        lab = self.lab
        if sc.name == "haproxy-down":
            return ([owner], lambda: self._systemctl([owner], "stop", "haproxy"),
                    lambda: self._systemctl([owner], "start", "haproxy"))  # fmt: skip
        if sc.name == "keepalived-down":
            return ([owner], lambda: self._systemctl([owner], "stop", "keepalived"),
                    lambda: self._systemctl([owner], "start", "keepalived"))  # fmt: skip
        if sc.name == "host-down":
            return [owner], lambda: lab.stop(owner), lambda: lab.start(owner, wait=True)
        if sc.name == "isolate":
            return [owner], lambda: lab.isolate(owner), lambda: lab.heal(owner)
        if sc.name == "apiserver-down":
            return ([owner], lambda: self._systemctl([owner], "stop", STANDIN_UNIT),
                    lambda: self._systemctl([owner], "start", STANDIN_UNIT))  # fmt: skip
        if sc.name in ("etcd-member-down", "etcd-two-down"):
            ts = self._etcd_targets(owner, 1 if sc.name == "etcd-member-down" else 2)
            return (ts, lambda: self._systemctl(ts, "stop", "etcd"),
                    lambda: self._systemctl(ts, "start", "etcd"))  # fmt: skip
        raise DrillError(f"unknown scenario {sc.name!r}")

    # ---- one run ------------------------------------------------------------------------

    def run(self, name: str, index: int = 1, *, soak_seconds: float = 600.0) -> RunMetrics:
        if name == SOAK:
            return self.soak(soak_seconds, index)
        sc = SCENARIOS[name]
        st = self.settings
        before = self.wait_healthy()
        if not before.ok:
            raise DrillError(f"cluster not healthy before {name}: {'; '.join(before.problems)}")
        owner = self.vip_holders()[0]
        targets, do_break, do_restore = self._actions(sc, owner)
        slug = _slug(self.config)
        raw = self.out_dir / slug / f"{name}-{index}"
        bound = st.baseline_s + st.break_max_s + st.restore_max_s + 60
        probes = Probes(self.lab, self.cluster, raw, st, self.cafile, bound)
        problems: list[str] = []
        try:
            start = time.monotonic()
            time.sleep(st.baseline_s)
            self.log(f"{name} #{index}: break ({sc.summary}; target {', '.join(targets)})")
            t_break = time.monotonic()
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
        problems += [f"at the end: {p}" for p in end_health.problems]
        problems += self._invariants(sc, m, requests, marks)
        m.problems = problems
        m.png = str(plot_timeline(
            self.out_dir / slug / f"{name}-{index}.png",
            f"{name} #{index} ({self.config}): {sc.summary}",
            requests, samples, marks, self.lb_names,
        ))  # fmt: skip
        return m

    def _observe_break(self, sc: Scenario, probes: Probes, owner: str, t_break: float) -> None:
        st = self.settings
        deadline = t_break + st.break_max_s
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = time.monotonic()
            if not sc.expect_move and not sc.expect_failures:
                if now - t_break >= st.observe_s:
                    return
                continue
            reqs = probes.requests()
            recent = [r for r in reqs if r.end >= now - 1.0]
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
        preempt = self.cluster.endpoint.vrrp.preempt
        deadline = t_restore + st.restore_max_s
        healthy_at: float | None = None
        h = Health(ok=False, problems=["not checked"])
        while time.monotonic() < deadline:
            h = self.health()
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

    def _invariants(
        self, sc: Scenario, m: RunMetrics, requests: Sequence[Request], marks: Marks
    ) -> list[str]:
        p: list[str] = []
        broken = set((m.target or "").split(","))
        if sc.expect_move:
            if not m.moved or m.owner_during in broken or m.owner_during not in self.lb_names:
                p.append(f"the VIP did not move to a healthy LB host (held by {m.owner_during})")
            if self.cluster.endpoint.vrrp.preempt and not m.moved_back:
                p.append("preempt is on, but the VIP did not move back after the restore")
        elif m.vip_moves:
            p.append(f"the VIP moved {m.vip_moves} times; it should have stayed")
        if sc.expect_failures:
            if not any(not r.ok for r in requests if marks.break_at <= r.t <= marks.restore_at):
                p.append("readiness never failed although etcd lost quorum")
        elif not sc.expect_move and m.failed:
            p.append(f"{m.failed} requests failed after their retry; expected none")
        tail = [r for r in requests if r.t >= marks.end - 1.0]
        if not tail or not all(r.ok for r in tail):
            p.append("the service had not recovered at the end")
        return p

    # ---- soak ---------------------------------------------------------------------------

    def soak(self, seconds: float, index: int = 1, load: bool = True) -> RunMetrics:
        st = self.settings
        before = self.wait_healthy()
        if not before.ok:
            raise DrillError(f"cluster not healthy before the soak: {'; '.join(before.problems)}")
        raw = self.out_dir / _slug(self.config) / f"soak-{index}"
        probes = Probes(self.lab, self.cluster, raw, st, self.cafile, seconds + 60)
        try:
            start = time.monotonic()
            time.sleep(st.baseline_s)
            self.log(f"soak #{index}: {seconds:.0f} s" + (" with 2 busy loops" if load else ""))
            t0 = time.monotonic()
            with cpu_load(seconds) if load else contextlib.nullcontext():
                time.sleep(seconds)
            t1 = time.monotonic()
            time.sleep(0.5)
            t_end = time.monotonic()
        finally:
            probes.stop()
        requests, samples = probes.requests(), probes.samples()
        marks = Marks(start, t0, t0, t1, t1, t_end)
        end = self.health()
        m = compute_metrics(SOAK, self.config, index, requests, samples, marks,
                            end_healthy=end.ok)  # fmt: skip
        changes = holder_changes(samples, t0, t1)
        if m.vip_moves or changes:
            m.problems.append(f"false failover: {m.vip_moves} moves, {changes} holder changes")
        m.problems += [f"at the end: {x}" for x in end.problems]
        m.png = str(plot_timeline(self.out_dir / _slug(self.config) / f"soak-{index}.png",
                                  f"soak #{index} ({self.config}), {seconds:.0f} s, cores loaded",
                                  requests, samples, marks, self.lb_names))  # fmt: skip
        return m


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


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
