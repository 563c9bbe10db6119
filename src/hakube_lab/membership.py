"""LAB: the membership proof. Hosts are added, removed and replaced with `hakube apply`
(`--prune`) while the drill's probe sends 50 requests a second through the VIP.

Each step rewrites the cluster file, runs apply on the real lab hosts (kubeadm and CNI skipped:
the lab cannot run them; LAB-ONLY apiserver stand-ins answer /readyz), and measures what a
client saw and what the cluster looks like afterwards: failed requests after one retry, the
longest gap without a successful answer, etcd members and quorum sampled during the whole step,
the servers every HAProxy lists, and what is left on removed hosts.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import yaml

from hakube.facts.haproxy import SHOW_STAT, parse_show_stat
from hakube.phases.base import Event, EventKind
from hakube.render.etcd import etcdctl
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import ApplyResult, apply, apply_phases
from hakube_lab.demo import SKIPPED as SKIP
from hakube_lab.drill.health import LB_LOG
from hakube_lab.drill.probes import Probes
from hakube_lab.drill.report import Request, VipSample, longest_gap
from hakube_lab.drill.scenarios import Settings
from hakube_lab.drill.workflow import write_ca
from hakube_lab.lab import Lab, LabError
from hakube_lab.standin import REMOVE as REMOVE_STANDIN
from hakube_lab.standin import endpoints_command, prepare_standins

Log = Callable[[str], None]
#: What no removed host may still run or have (hakube's units and files, etcd's data).
LEFTOVER_CHECK = (
    "for u in haproxy keepalived etcd kubelet; do systemctl is-active -q $u && echo unit:$u; "
    "done; for p in /etc/haproxy/haproxy.cfg /etc/keepalived/keepalived.conf /etc/default/etcd "
    "/var/lib/etcd /etc/etcd/pki /etc/hakube /etc/kubernetes /etc/cni/net.d; do "
    "[ -e $p ] && echo $p; done; grep -q '^# BEGIN hakube$' /etc/hosts && echo /etc/hosts; true"
)


@dataclass
class EtcdSample:
    t: float
    members: int
    healthy: int

    @property
    def quorum(self) -> bool:
        return self.healthy >= self.members // 2 + 1


@dataclass
class StepFigures:
    step: str
    apply_seconds: float
    ok: bool
    requests: int = 0
    failed: int = 0
    #: Of `failed`, those sent before apply started (the step's own lab action, e.g. power-off).
    failed_before_apply: int = 0
    longest_gap: float = 0.0
    etcd: list[EtcdSample] = field(default_factory=list)
    etcd_members: list[str] = field(default_factory=list)
    backends: dict[str, list[str]] = field(default_factory=dict)
    control_planes: list[str] = field(default_factory=list)
    leftovers: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    #: Each failed request: when (s after the step began), its errors, the VIP holders then
    #: and the last changes hakube made before it.
    failed_detail: list[str] = field(default_factory=list)
    #: What the LB hosts logged in the step that bears on failed requests: HAProxy sessions
    #: that did not end normally (termination state other than --), server state changes,
    #: keepalived state changes; journal time (the step began at `wall_start`).
    lb_log: list[str] = field(default_factory=list)
    wall_start: str = ""
    #: hakube's etcd changes in the step (member add/promote/remove, leadership moved), in order.
    etcd_changes: list[str] = field(default_factory=list)
    #: 99th percentile and maximum time of a successful request (retry included): the load.
    latency_p99_max: tuple[float, float] = (0.0, 0.0)

    @property
    def backends_exact(self) -> bool:
        want = sorted(self.control_planes)
        return bool(self.backends) and all(sorted(v) == want for v in self.backends.values())

    @property
    def quorum_always(self) -> bool:
        return bool(self.etcd) and all(s.quorum for s in self.etcd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "apply_seconds": round(self.apply_seconds, 2),
            "ok": self.ok,
            "requests": self.requests,
            "failed_after_retry": self.failed,
            "failed_before_apply": self.failed_before_apply,
            "longest_gap_s": round(self.longest_gap, 3),
            "etcd_samples": len(self.etcd),
            "etcd_members_min_max": [min((s.members for s in self.etcd), default=0),
                                     max((s.members for s in self.etcd), default=0)],
            "etcd_quorum_always": self.quorum_always,
            "etcd_members": self.etcd_members,
            "backends": self.backends,
            "backends_exact": self.backends_exact,
            "leftovers": self.leftovers,
            "failures": self.failures,
            "failed_detail": self.failed_detail,
            "latency_p99_max_s": [round(x, 3) for x in self.latency_p99_max],
            "wall_start": self.wall_start,
            "lb_log": self.lb_log,
            "etcd_changes": self.etcd_changes,
        }  # fmt: skip


def cluster_with(lab: Lab, control_planes: Sequence[str], workers: Sequence[str]) -> Cluster:
    """The lab's cluster file with these hosts (lab hosts, spares included)."""
    data = yaml.safe_load(lab.cluster_file.read_text())
    addresses = {h.name: h.address for h in lab.hosts}
    data["hosts"] = [{"name": n, "address": addresses[n], "roles": ["control-plane"]}
                     for n in control_planes]  # fmt: skip
    data["hosts"] += [{"name": n, "address": addresses[n], "roles": ["worker"]} for n in workers]
    return load_cluster_data(data).cluster


def write_cluster(cluster: Cluster, path: Path) -> None:
    data = cluster.model_dump(mode="json", exclude_none=True, by_alias=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def vip_owner(lab: Lab, cluster: Cluster) -> str | None:
    vip = str(cluster.endpoint.vip)
    for h in cluster.lb_hosts:
        res = lab.nsenter(h.name, ["ip", "-o", "-4", "addr", "show"], check=False)
        if f"inet {vip}/" in res.stdout:
            return h.name
    return None


def in_host(lab: Lab, host: str, cmd: str, timeout: float = 60) -> CompletedProcess[str] | None:
    """`cmd` inside a lab host; None when the host is powered off."""
    try:
        return lab.nsenter(host, ["bash", "-c", cmd], check=False, timeout=timeout)
    except LabError:
        return None


class EtcdWatch:
    """Samples member count and healthy members from a host that stays in the cluster."""

    def __init__(self, lab: Lab, cluster: Cluster, via: str, interval: float = 0.5) -> None:
        self.lab, self.via, self.interval = lab, via, interval
        self.members_cmd = etcdctl(cluster, "member", "list", "-w", "json")
        self.health_cmd = etcdctl(cluster, "endpoint", "health", "--cluster", "-w", "json")
        self.samples: list[EtcdSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _json(self, cmd: str) -> Any:
        res = in_host(self.lab, self.via, cmd, timeout=10)
        try:
            return json.loads(res.stdout if res is not None else "null")
        except ValueError:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            members = (self._json(self.members_cmd) or {}).get("members") or []
            health = self._json(self.health_cmd) or []
            healthy = sum(1 for e in health if isinstance(e, dict) and e.get("health") is True)
            self.samples.append(EtcdSample(t, len(members), healthy))
            self._stop.wait(self.interval)

    def stop(self) -> list[EtcdSample]:
        self._stop.set()
        self._thread.join(timeout=15)
        return self.samples


def install_standins(cluster: Cluster, state: StateDir, names: Sequence[str]) -> None:
    """LAB ONLY: the apiserver stand-in on new control planes, before apply adds them to
    HAProxy (where a real kubeadm join would start the apiserver)."""
    asyncio.run(prepare_standins(cluster, state, names))


class MembershipRun:
    """One lab, one state directory, the probe running across every step."""

    def __init__(self, lab: Lab, state: StateDir, out_dir: Path, log: Log) -> None:
        self.lab, self.state, self.out_dir, self.log = lab, state, out_dir, log
        self.file = out_dir / "cluster.yaml"
        out_dir.mkdir(parents=True, exist_ok=True)
        self.probes: Probes | None = None
        #: hakube's changes (CHANGE events) of every apply, on the probe's clock.
        self.changes: list[Event] = []
        #: Marks of the run's own lab actions (power-off, stand-in removal) on that clock.
        self.marks: list[tuple[float, str]] = []

    def _event(self, e: Event) -> None:
        if e.kind is EventKind.CHANGE:
            self.changes.append(e)

    def mark(self, what: str) -> None:
        self.marks.append((time.monotonic(), what))

    def apply(self, cluster: Cluster, *, prune: bool = False) -> ApplyResult:
        write_cluster(cluster, self.file)
        return asyncio.run(
            apply(cluster, state=self.state, skip=SKIP, prune=prune, emit=self._event)
        )

    def start_probe(self, every_lb: Cluster, seconds: float) -> None:
        cafile = write_ca(self.state, self.out_dir)
        self.probes = Probes(self.lab, every_lb, self.out_dir / "probe", Settings(), cafile,
                             seconds)  # fmt: skip
        time.sleep(1.0)  # the probe's first requests land before the first step

    def stop_probe(self) -> None:
        if self.probes is not None:
            self.probes.stop()

    def requests(self, start: float, end: float) -> list[Request]:
        assert self.probes is not None
        return [r for r in self.probes.requests() if start <= r.t <= end]

    def step(
        self,
        name: str,
        cluster: Cluster,
        *,
        prune: bool = False,
        removed: Sequence[str] = (),
        watch_via: str,
        before: Callable[[], None] | None = None,
    ) -> StepFigures:
        self.log(f"-- {name}")
        watch = EtcdWatch(self.lab, cluster, watch_via)
        wall = time.time()
        start = time.monotonic()
        try:
            if before is not None:
                before()
            # Before the members change, as kubeadm/etcd-endpoints (skipped here) does for
            # real apiservers: no stand-in asks a member that is being removed.
            self.standin_endpoints(cluster)
            t0 = time.monotonic()
            result = self.apply(cluster, prune=prune)
            seconds = time.monotonic() - t0
            for host in removed:  # LAB ONLY scaffolding: the stand-in is the lab's, not hakube's
                self.mark(f"{host}: stand-in removed")
                in_host(self.lab, host, REMOVE_STANDIN)
            time.sleep(1.0)  # requests sent during the last reloads have their answers
        finally:
            samples = watch.stop()
        end = time.monotonic()
        fig = StepFigures(name, seconds, result.ok, etcd=samples)
        fig.failures = [f"{f.host} {f.phase}: {f.message}" for f in result.failures]
        reqs = self.requests(start, end)
        fig.requests = len(reqs)
        fig.failed = sum(1 for r in reqs if not r.ok)
        fig.failed_before_apply = sum(1 for r in reqs if not r.ok and r.t < t0)
        fig.failed_detail = [self._explain(r, start) for r in reqs if not r.ok]
        fig.etcd_changes = [f"{e.host}: {e.message}" for e in self.changes
                            if e.at >= start and e.message.startswith("etcd ")]  # fmt: skip
        took = sorted(r.end - r.t for r in reqs if r.ok)
        if took:
            fig.latency_p99_max = (took[int(len(took) * 0.99)], took[-1])
        fig.wall_start = time.strftime("%H:%M:%S", time.localtime(wall))
        for lb_name in sorted({*(h.name for h in cluster.lb_hosts), *removed}):
            res = in_host(self.lab, lb_name, LB_LOG.format(since=int(wall)))
            fig.lb_log += [f"{lb_name}: {x}" for x in (res.stdout if res else "").splitlines()]
        fig.longest_gap = longest_gap(reqs, start, end) if reqs else 0.0
        fig.control_planes = [h.name for h in cluster.control_planes]
        fig.etcd_members = sorted(self.state.record().etcd_members)
        for lb in cluster.lb_hosts:
            res = in_host(self.lab, lb.name, SHOW_STAT)
            out = res.stdout if res is not None else ""
            fig.backends[lb.name] = [b.server for b in parse_show_stat(out, lb.name)]
        for host in removed:
            res = in_host(self.lab, host, LEFTOVER_CHECK)
            fig.leftovers[host] = (
                [x for x in res.stdout.splitlines() if x.strip()]
                if res is not None
                else ["(powered off: not checked)"]
            )
        self.log(json.dumps(fig.as_dict()))
        return fig

    def standin_endpoints(self, cluster: Cluster) -> None:
        """LAB ONLY: the stand-ins' etcd list follows the members, as the skipped
        kubeadm/etcd-endpoints phase makes real apiservers' --etcd-servers do."""
        self.mark("stand-ins: etcd endpoints updated")
        for h in cluster.control_planes:
            in_host(self.lab, h.name, endpoints_command(cluster))

    def _explain(self, r: Request, start: float) -> str:
        assert self.probes is not None
        held: VipSample | None = None
        for v in self.probes.samples():
            if v.t > r.t:
                break
            held = v
        marks = [(e.at, f"{e.host} {e.phase}: {e.message}") for e in self.changes]
        marks += self.marks
        before = sorted(m for m in marks if m[0] <= r.end)[-3:]
        recent = "; ".join(f"{what} (-{r.t - at:.2f} s)" for at, what in before)
        vip = ",".join(held.holders) if held is not None else "?"
        return (f"+{r.t - start:.2f} s, {r.end - r.t:.2f} s, {' | '.join(r.errors)}; VIP on "
                f"{vip}; last changes: {recent}")  # fmt: skip


def preinstall(lab: Lab, cluster: Cluster, names: Sequence[str]) -> None:
    """LAB ONLY: the role packages on spare hosts before the probe starts, as a provisioned
    image would have them. On this 2-core machine dpkg on a new host starves the serving hosts
    (run 2 of the lab test: p99 1.07 s, 20 requests timed out twice at 0.2 s while s1 and s2
    installed, with no load-balancer or etcd change in flight); a real new machine has its own
    CPUs. Services stay stopped (policy-rc.d), as hakube installs them; apply configures them."""
    phases = [p for p in apply_phases() if not any(p.matches(s) for s in SKIP)]
    for name in names:
        host = cluster.host(name)
        pkgs = sorted({pkg for p in phases for pkg in p.packages(cluster, host)})
        cmd = (
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && "
            "chmod 755 /usr/sbin/policy-rc.d && apt-get update -qq && "
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(pkgs)} "
            ">/dev/null; rc=$?; rm -f /usr/sbin/policy-rc.d; exit $rc"
        )
        res = in_host(lab, name, cmd, timeout=600)
        if res is None or res.returncode != 0:
            raise RuntimeError(f"preinstalling {pkgs} on {name} failed: {res and res.stderr}")


def every_lb(lab: Lab, cluster: Cluster) -> Cluster:
    """`cluster` with every lab host as a control plane (no file checks: the probe only needs
    its LB hosts), so that the VIP watcher sees every host that may hold the VIP in the run."""
    data = cluster.model_dump(mode="json", exclude_none=True, by_alias=True)
    data["hosts"] = [{"name": h.name, "address": h.address, "roles": ["control-plane"]}
                     for h in lab.hosts]  # fmt: skip
    return Cluster.model_validate(data)


def _start(run: MembershipRun, spares: Sequence[str]) -> Cluster:
    """The first cluster (3 control planes + w1) applied, the spares' packages in, the probe
    running."""
    lab = run.lab
    first = cluster_with(lab, ["cp1", "cp2", "cp3"], ["w1"])
    install_standins(first, run.state, ["cp1", "cp2", "cp3"])
    result = run.apply(first)
    if not result.ok:
        raise RuntimeError(f"first apply failed: {result.failures}")
    odd = ["cp1", "cp2", "cp3"][: 3 - len(spares) % 2]  # an odd count of control planes
    preinstall(lab, cluster_with(lab, [*odd, *spares], ["w1"]), spares)
    run.start_probe(every_lb(lab, first), seconds=900)
    return first


def _replace(run: MembershipRun, now: Cluster, spare: str, watch_via: str) -> StepFigures:
    """Power off a control plane that neither holds the VIP nor is `watch_via`, and put
    `spare` in its place in one `apply --prune`."""
    lab = run.lab
    keep = [h.name for h in now.control_planes]
    owner = vip_owner(lab, now)
    off = next(n for n in keep if n not in (owner, watch_via))
    replaced = cluster_with(lab, [n for n in keep if n != off] + [spare], ["w1"])

    def power_off_and_prepare() -> None:
        run.mark(f"{off}: power off")
        lab.stop(off)
        run.mark(f"{off}: powered off")
        install_standins(replaced, run.state, [spare])

    return run.step("replace", replaced, prune=True, removed=[off], watch_via=watch_via,
                    before=power_off_and_prepare)  # fmt: skip


def run_sequence(run: MembershipRun, *, replace: bool = True) -> list[StepFigures]:
    """3 control planes + 1 worker; add two control planes (5); remove the VIP owner and one
    other (3); power one off and replace it with a new host (`replace`). The lab has spares
    s1..s3."""
    lab = run.lab
    _start(run, ["s1", "s2", "s3"] if replace else ["s1", "s2"])
    figures = []
    try:
        five = cluster_with(lab, ["cp1", "cp2", "cp3", "s1", "s2"], ["w1"])

        def prepare_new() -> None:
            install_standins(five, run.state, ["s1", "s2"])

        figures.append(run.step("add", five, watch_via="cp3", before=prepare_new))
        owner = vip_owner(lab, five) or "cp1"
        other = next(n for n in ("cp1", "cp2", "cp3") if n != owner)
        keep = [n for n in ("cp1", "cp2", "cp3", "s1", "s2") if n not in (owner, other)]
        three = cluster_with(lab, keep, ["w1"])
        figures.append(run.step("remove", three, prune=True, removed=[owner, other],
                                watch_via="s2"))  # fmt: skip
        if replace:
            figures.append(_replace(run, three, "s3", watch_via="s2"))
    finally:
        run.stop_probe()
    return figures


def run_replace(run: MembershipRun) -> list[StepFigures]:
    """The replace step alone (power one of 3 control planes off, spare s1 in its place), for
    a run that fits the lab lock's 8 minutes."""
    first = _start(run, ["s1"])
    try:
        return [_replace(run, first, "s1", watch_via="cp3")]
    finally:
        run.stop_probe()
