"""The lab as one object: its plan, where its files are, and the operations the CLI and tests call.

Each operation lives in the module that owns it: `lifecycle` (up, down), `remote` (SSH and
nsenter), `faults` (stop/start/isolate/heal, degrade/restore), `metrics` (memory, status),
`statefile`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakube_lab import faults, lifecycle, metrics, remote, slb
from hakube_lab import host as hostmod
from hakube_lab.addressing import (
    DEFAULT_SUBNET,
    HOST_INTERFACE,
    HostPlan,
    LabError,
    LabPlan,
    netns_name,
    plan_lab,
    veth_name,
)
from hakube_lab.image import CACHE_ROOT
from hakube_lab.lifecycle import Log, destroy, quiet
from hakube_lab.statefile import STATE_ROOT, read_plan


@dataclass(frozen=True)
class LabHost:
    name: str
    role: str
    address: str
    netns: str
    veth: str
    interface: str = HOST_INTERFACE


class Lab:
    """A lab described by its plan; `Lab.load(name)` rebuilds it from the state dir.

    `run()` goes over SSH with the lab key (the same path hakube itself uses); `nsenter()` enters
    the container directly and works even while the host is isolated.
    """

    def __init__(
        self, plan: LabPlan, state_root: Path = STATE_ROOT, cache_root: Path = CACHE_ROOT
    ) -> None:
        self.plan = plan
        self.name = plan.name
        self.state_root = state_root
        self.cache_root = cache_root
        self.state_dir = state_root / plan.name
        self.key_file = self.state_dir / "id_ed25519"
        self.known_hosts = self.state_dir / "known_hosts"
        self.cluster_file = self.state_dir / "cluster.yaml"
        self.state_file = self.state_dir / "state.json"

    @classmethod
    def create(
        cls,
        name: str = "demo",
        control_planes: int = 3,
        workers: int = 2,
        subnet: str = DEFAULT_SUBNET,
        state_root: Path = STATE_ROOT,
        spares: int = 0,
        endpoint_mode: str = "vip",
    ) -> Lab:
        plan = plan_lab(name, control_planes, workers, subnet, spares, endpoint_mode)
        return cls(plan, state_root)

    @classmethod
    def load(cls, name: str, state_root: Path = STATE_ROOT) -> Lab:
        return cls(read_plan(name, state_root), state_root)

    # ---- paths and views ----------------------------------------------------------------

    @property
    def hosts(self) -> list[LabHost]:
        return [self._host(h) for h in self.plan.hosts]

    def host(self, name: str) -> LabHost:
        return self._host(self.plan.host(name))

    def _host(self, h: HostPlan) -> LabHost:
        return LabHost(
            h.name,
            h.role,
            str(h.address),
            netns_name(self.name, h.name),
            veth_name(self.name, h.name),
        )

    def paths(self, host: str) -> hostmod.HostPaths:
        return hostmod.HostPaths(self.name, host, self.state_dir / "hosts" / host)

    # ---- lifecycle ----------------------------------------------------------------------

    def up(self, *, timeout: float = 180.0, log: Log = quiet) -> float:
        """Start (or reuse) every host (and a cloud-lb lab's balancer); the seconds until all
        answered SSH."""
        seconds = lifecycle.up(self, timeout=timeout, log=log)
        if self.plan.slb is not None:
            slb.setup(self, log)
        return seconds

    def down(self) -> None:
        destroy(self.name, self.state_root)

    # ---- running things on hosts --------------------------------------------------------

    def ssh_command(
        self, host: str, command: Sequence[str] = (), *, tty: bool = False
    ) -> list[str]:
        return remote.ssh_command(self, host, command, tty=tty)

    def run(
        self,
        host: str,
        command: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120.0,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a host over SSH (a list is quoted, a string is used as is)."""
        return remote.run_ssh(self, host, command, check=check, timeout=timeout,
                              input_text=input_text)  # fmt: skip

    def nsenter(
        self, host: str, command: Sequence[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container's namespaces without the network (no SSH)."""
        return remote.nsenter(self, host, command, check=check, timeout=timeout)

    def wait_ssh(self, hosts: Sequence[str] | None = None, timeout: float = 180.0) -> None:
        remote.wait_ssh(self, hosts, timeout)

    # ---- faults -------------------------------------------------------------------------

    def stop(self, host: str) -> None:
        faults.stop(self, host)

    def start(self, host: str, *, wait: bool = True, timeout: float = 120.0) -> None:
        faults.start(self, host, wait=wait, timeout=timeout)

    def isolate(self, host: str) -> None:
        faults.set_cable(self, host, plugged=False)

    def heal(self, host: str) -> None:
        faults.set_cable(self, host, plugged=True)

    def degrade(self, host: str, loss: float) -> None:
        faults.degrade(self, host, loss)

    def restore(self, host: str) -> None:
        faults.restore(self, host)

    def loss(self, host: str) -> float | None:
        return faults.loss_of(self, host)

    # ---- metrics ------------------------------------------------------------------------

    def memory(self, host: str) -> int:
        return metrics.memory_pss(self, host)

    def memory_rss(self, host: str) -> int:
        return metrics.memory_rss(self, host)

    def status(self) -> dict[str, Any]:
        return metrics.status(self)


@contextmanager
def running_lab(
    name: str = "demo",
    control_planes: int = 3,
    workers: int = 2,
    subnet: str = DEFAULT_SUBNET,
    *,
    spares: int = 0,
    endpoint_mode: str = "vip",
    log: Log = quiet,
) -> Iterator[Lab]:
    """A lab that is up inside the block and always torn down after it, even on errors."""
    lab = Lab.create(
        name, control_planes, workers, subnet, spares=spares, endpoint_mode=endpoint_mode
    )
    try:
        lab.up(log=log)
        yield lab
    finally:
        destroy(name, lab.state_root)


__all__ = ["Lab", "LabError", "LabHost", "destroy", "running_lab"]
