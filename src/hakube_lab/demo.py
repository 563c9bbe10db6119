"""`make demo`: the main job on the local lab, end to end, saying plainly what it could not run.

lab up → lab-only apiserver stand-ins → apply (Kubernetes phases skipped: kubeadm is not
installable here) → verify table → a second apply that must change nothing → failover drill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hakube.phases.base import EventSink
from hakube.spec.load import load_cluster_file
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import Redactor
from hakube.workflows.apply import ApplyResult, apply, ssh_transports
from hakube_lab.drill.workflow import run_demo_drill
from hakube_lab.lab import Lab
from hakube_lab.standin import install_all

#: What the lab cannot run, and therefore what the demo skips.
SKIPPED = ("kubeadm", "cni")

NOT_RUN = (
    "Not run in the lab: kubeadm/kubelet/kube-apiserver (no reachable registry carries them). "
    "The kubeadm phases are skipped (--skip-phases kubeadm,cni); a LAB-ONLY stand-in serves "
    "/readyz on :6443 with the cluster CA's certificate and is ready only while etcd has quorum."
)


async def prepare_standins(cluster: Cluster, state: StateDir) -> None:
    async with ssh_transports(cluster, trust_new_hosts=False, redactor=Redactor()) as (t, errs):
        if errs:
            raise RuntimeError("; ".join(f"{h}: {m}" for h, m in errs.items()))
        await install_all(cluster, state, t)


def run_demo(
    *,
    name: str,
    workers: int,
    drill: bool,
    emit: EventSink,
    show: Callable[[ApplyResult], None],
    say: Callable[[str], None],
) -> int:
    lab = Lab.create(name=name, control_planes=3, workers=workers)
    say(f"[bold]1/5 lab up[/] ({name}: 3 control-plane + {workers} worker hosts)")
    secs = lab.up(log=lambda m: say(f"    lab: {m}"))
    say(f"    all hosts answered SSH {secs:.1f} s after start; cluster file {lab.cluster_file}")
    cluster = load_cluster_file(lab.cluster_file).cluster
    state = StateDir(cluster.name)
    say("[bold]2/5 lab-only apiserver stand-ins[/] on the control-plane hosts")
    say(f"    {NOT_RUN}")
    asyncio.run(prepare_standins(cluster, state))
    say(f"[bold]3/5 hakube apply --skip-phases {','.join(SKIPPED)}[/]")
    first = asyncio.run(apply(cluster, state=state, skip=SKIPPED, emit=emit))
    show(first)
    if not first.ok:
        return 1
    say("[bold]4/5 apply again[/]: a converged cluster must report 0 changes")
    second = asyncio.run(apply(cluster, state=state, skip=SKIPPED, emit=emit))
    show(second)
    if not second.ok:
        return 1
    if second.changes:
        say(f"[red]second apply changed {len(second.changes)} things: not idempotent[/]")
        return 1
    if drill:
        say("[bold]5/5 failover drill[/]")
        return run_demo_drill(cluster, lab, state, say)
    return 0
