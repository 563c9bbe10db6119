"""The lab as one object: plan, state dir, and the operations the CLI and tests call."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakube_lab import host as hostmod
from hakube_lab import network
from hakube_lab.addressing import (
    DEFAULT_SUBNET,
    HOST_INTERFACE,
    MIRROR_PORT,
    HostPlan,
    LabError,
    LabPlan,
    find_overlaps,
    link_prefix,
    netns_name,
    netns_prefix,
    plan_lab,
    validate_name,
    veth_name,
)
from hakube_lab.clusterfile import render_cluster_file
from hakube_lab.image import CACHE_ROOT, ensure_image
from hakube_lab.mirror import ensure_mirror, start_server, stop_server
from hakube_lab.system import (
    ensure_host_limits,
    kill_pid,
    pids_with_cmdline,
    require_root,
    require_tools,
    run,
)

STATE_ROOT = Path("/var/lib/hakube/lab")

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


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
        self.state_root = state_root
        self.cache_root = cache_root

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str = "demo",
        control_planes: int = 3,
        workers: int = 2,
        subnet: str = DEFAULT_SUBNET,
        state_root: Path = STATE_ROOT,
    ) -> Lab:
        return cls(plan_lab(name, control_planes, workers, subnet), state_root)

    @classmethod
    def load(cls, name: str, state_root: Path = STATE_ROOT) -> Lab:
        validate_name(name)
        path = state_root / name / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"no lab named {name!r} (no {path}); run `hakube lab up`") from None
        return cls.create(name, data["control_planes"], data["workers"], data["subnet"], state_root)

    # ---- paths and views ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def key_file(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def cluster_file(self) -> Path:
        return self.state_dir / "cluster.yaml"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

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

    def _paths(self, host: str) -> hostmod.HostPaths:
        return hostmod.HostPaths(self.name, host, self.state_dir / "hosts" / host)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # Outside the state dir so `down` can delete that while holding the lock.
        self.state_root.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_root / f".{self.name}.lock"
        with lock_path.open("a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(
                    f"another hakube lab command is working on lab {self.name!r} right now"
                ) from None
            try:
                yield
            finally:
                # A failed first `up` must not leave its lock file behind.
                if not self.state_dir.exists():
                    lock_path.unlink(missing_ok=True)
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- up -----------------------------------------------------------------------------

    def up(self, *, timeout: float = 180.0, log: Log = _quiet) -> float:
        """Build/reuse image and mirror, start every host, wait for SSH on all of them.

        Returns the seconds from starting the hosts until all answered SSH. Harmless on a lab
        that is already up.
        """
        require_root()
        require_tools()
        with self._lock():
            self._check_same_lab()
            self._check_subnet()
            image = ensure_image(self.cache_root, log)
            mirror = ensure_mirror(image, self.cache_root, log)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.state_dir.chmod(0o700)
            # Written first: after a crash, `down` finds what to remove from here.
            self._write_state(image, mirror)
            if not self.key_file.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"hakube-lab-{self.name}",
                     "-f", str(self.key_file)])  # fmt: skip
            self.key_file.chmod(0o600)
            network.ensure_bridge(
                self.plan.bridge, str(self.plan.bridge_ip), self.plan.subnet.prefixlen
            )
            link = self.state_dir / "mirror"
            if not link.is_symlink() or link.resolve() != mirror:
                link.unlink(missing_ok=True)
                link.symlink_to(mirror)
            start_server(
                link, str(self.plan.bridge_ip), MIRROR_PORT,
                self.state_dir / "mirror.pid", self.state_dir / "mirror.log",
            )  # fmt: skip
            ensure_host_limits(log)
            t0 = time.monotonic()
            keys = {h.name: self._start_host(image, h.name) for h in self.hosts}
            self._write_known_hosts(keys)
            log(f"started {len(keys)} hosts, waiting for SSH")
            self.wait_ssh(timeout=timeout)
            elapsed = time.monotonic() - t0
            self.cluster_file.write_text(render_cluster_file(self.plan, self.state_dir))
            return elapsed

    def _state_data(self) -> dict[str, Any]:
        cps = sum(1 for h in self.plan.hosts if h.role == "control-plane")
        return {
            "name": self.name,
            "subnet": str(self.plan.subnet),
            "control_planes": cps,
            "workers": len(self.plan.hosts) - cps,
        }

    def _write_state(self, image: Path, mirror: Path) -> None:
        data = self._state_data() | {"image": str(image), "mirror": str(mirror)}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.rename(self.state_file)

    def _check_same_lab(self) -> None:
        if not self.state_file.exists():
            return
        old = json.loads(self.state_file.read_text())
        mine = self._state_data()
        if all(old.get(k) == v for k, v in mine.items()):
            return
        running = [
            p.name
            for p in (self.state_dir / "hosts").glob("*")
            if hostmod.is_running(hostmod.HostPaths(self.name, p.name, p))
        ]
        if running or network.link_exists(self.plan.bridge):
            raise LabError(
                f"lab {self.name!r} already runs with a different shape "
                f"({old.get('control_planes')} control planes, {old.get('workers')} workers, "
                f"{old.get('subnet')}); run `hakube lab down --name {self.name}` first, "
                "or pick another --name"
            )

    def _check_subnet(self) -> None:
        clashes = find_overlaps(self.plan.subnet, network.routes(), {self.plan.bridge})
        if clashes:
            raise LabError(
                f"subnet {self.plan.subnet} overlaps routes already on this machine: "
                + "; ".join(clashes)
                + ". Pick another one with --subnet (e.g. 10.124.0.0/24)"
            )

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost", f"{self.plan.bridge_ip}\tmirror.{self.name}.lab"]
        lines += [f"{h.address}\t{h.name}" for h in self.plan.hosts]
        return "\n".join(lines) + "\n"

    def _start_host(self, image: Path, name: str) -> str:
        h = self.host(name)
        paths = self._paths(name)
        prefix = self.plan.subnet.prefixlen
        network.ensure_netns(h.netns)
        network.ensure_veth(h.veth, h.netns, self.plan.bridge, h.address, prefix)
        network.set_link(h.veth, up=True)
        hostmod.mount_overlay(image, paths)
        key = hostmod.provision(
            paths,
            hostname=name,
            etc_hosts=self._etc_hosts(),
            authorized_key=self.key_file.with_suffix(".pub").read_text(),
            apt_source=f"deb [trusted=yes] {self.plan.mirror_url} ./\n",
        )
        if not hostmod.is_running(paths):
            hostmod.boot(paths, hostname=name, netns=h.netns)
        return key

    def _write_known_hosts(self, keys: dict[str, str]) -> None:
        lines = []
        for h in self.hosts:
            key_type, key_data = keys[h.name].split()[:2]
            lines.append(f"{h.address},{h.name} {key_type} {key_data}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    # ---- SSH ----------------------------------------------------------------------------

    def ssh_command(
        self, host: str, command: Sequence[str] = (), *, tty: bool = False
    ) -> list[str]:
        h = self.host(host)
        return [
            "ssh", "-i", str(self.key_file),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            *(["-t"] if tty else []),
            f"root@{h.address}", *command,
        ]  # fmt: skip

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
        remote = command if isinstance(command, str) else shlex.join(command)
        return run(self.ssh_command(host, [remote]), check=check, timeout=timeout,
                   input_text=input_text)  # fmt: skip

    def nsenter(
        self, host: str, command: Sequence[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container's namespaces without the network (no SSH)."""
        pid = hostmod.init_pid(self._paths(host))
        if pid is None:
            raise LabError(f"host {host} of lab {self.name} is not running")
        return run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *command],
                   check=check, timeout=timeout)  # fmt: skip

    def wait_ssh(self, hosts: Sequence[str] | None = None, timeout: float = 180.0) -> None:
        names = list(hosts) if hosts is not None else [h.name for h in self.hosts]
        failed = asyncio.run(self._wait_all(names, time.monotonic() + timeout))
        if failed:
            logs = {n: str(self._paths(n).log_file) for n in failed}
            raise LabError(
                f"no SSH after {timeout:.0f} s from: {', '.join(failed)} (console logs: {logs})"
            )

    async def _wait_all(self, names: list[str], deadline: float) -> list[str]:
        results = await asyncio.gather(*(self._wait_one(n, deadline) for n in names))
        return [n for n, ok in zip(names, results, strict=True) if not ok]

    async def _wait_one(self, name: str, deadline: float) -> bool:
        address = self.host(name).address
        # Cheap banner probe first: spawning ssh clients while 20 hosts boot costs CPU.
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, 22), timeout=1.0
                )
                banner = await asyncio.wait_for(reader.readline(), timeout=2.0)
                writer.close()
                if banner.startswith(b"SSH-"):
                    break
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        while time.monotonic() < deadline:
            proc = await asyncio.create_subprocess_exec(
                *self.ssh_command(name, ["true"]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await proc.wait() == 0:
                return True
            await asyncio.sleep(0.2)
        return False

    # ---- faults -------------------------------------------------------------------------

    def stop(self, host: str) -> None:
        """Power off: cable out first, then kill every process of the host at once."""
        h = self.host(host)
        if network.link_exists(h.veth):
            network.set_link(h.veth, up=False)
        paths = self._paths(host)
        hostmod.power_off(paths)
        hostmod.unmount(paths)

    def start(self, host: str, *, wait: bool = True, timeout: float = 120.0) -> None:
        require_root()
        if not self.state_file.exists():
            raise LabError(f"lab {self.name} is not up")
        image = Path(json.loads(self.state_file.read_text())["image"])
        self._start_host(image, host)
        if wait:
            self.wait_ssh([host], timeout=timeout)

    def isolate(self, host: str) -> None:
        network.set_link(self.host(host).veth, up=False)

    def heal(self, host: str) -> None:
        network.set_link(self.host(host).veth, up=True)

    # ---- status -------------------------------------------------------------------------

    def memory(self, host: str) -> int:
        """Bytes of PSS of every process of the host (shared pages split between sharers)."""
        return hostmod.memory_pss(self._paths(host))

    def memory_rss(self, host: str) -> int:
        """Bytes of RSS summed over the host's processes: a pessimistic upper bound."""
        return hostmod.memory_rss(self._paths(host))

    def status(self) -> dict[str, Any]:
        hosts = []
        for h in self.hosts:
            paths = self._paths(h.name)
            running = hostmod.is_running(paths)
            hosts.append(
                {
                    "name": h.name,
                    "role": h.role,
                    "address": h.address,
                    "running": running,
                    "link_up": network.link_is_up(h.veth),
                    "memory_mb": round(self.memory(h.name) / 2**20, 1) if running else 0.0,
                }
            )
        return {
            "name": self.name,
            "subnet": str(self.plan.subnet),
            "bridge": self.plan.bridge,
            "bridge_up": network.link_exists(self.plan.bridge),
            "vip": str(self.plan.vip),
            "mirror": self.plan.mirror_url,
            "state_dir": str(self.state_dir),
            "cluster_file": str(self.cluster_file),
            "hosts": hosts,
        }

    # ---- down ---------------------------------------------------------------------------

    def down(self) -> None:
        destroy(self.name, self.state_root)


def destroy(name: str, state_root: Path = STATE_ROOT) -> list[str]:
    """Remove everything a lab of this name created, from its state or by scanning for names.

    Works with no state at all (after a crash) and is a no-op the second time. Returns what it
    removed, for the user.
    """
    require_root()
    validate_name(name)
    state_dir = state_root / name
    removed: list[str] = []
    lab = Lab(plan_lab(name, 1, 0, DEFAULT_SUBNET), state_root)
    with lab._lock():
        hosts_dir = state_dir / "hosts"
        host_names = sorted(p.name for p in hosts_dir.iterdir()) if hosts_dir.is_dir() else []
        for link in network.links():
            if link.startswith(link_prefix(name)):
                network.set_link(link, up=False)
        for hname in host_names:
            paths = hostmod.HostPaths(name, hname, hosts_dir / hname)
            if hostmod.is_running(paths) or paths.pid_file.exists():
                removed.append(f"host {hname}")
            hostmod.power_off(paths)
        cg = hostmod.lab_cgroup(name)
        if cg is not None and cg.is_dir():
            for sub in [p for p in cg.iterdir() if p.is_dir()]:
                hostmod.kill_cgroup(sub)
            hostmod.remove_cgroup(cg)
            removed.append(f"cgroup {cg}")
        if cg is not None:
            # Shared by all labs: only goes once the last one is down.
            with contextlib.suppress(OSError):
                cg.parent.rmdir()
        stop_server(state_dir / "mirror.pid")
        # Anything else still running from the state dir (nspawn without a cgroup, a mirror
        # whose pid file was lost).
        for pid in pids_with_cmdline(f"{state_dir}/"):
            kill_pid(pid, timeout=2)
            removed.append(f"process {pid}")
        for mnt in _mounts_under(state_dir):
            run(["umount", mnt], check=False)
            if mnt in _mounts_under(state_dir):
                run(["umount", "-l", mnt], check=False)
            removed.append(f"mount {mnt}")
        for ns in network.netns_list():
            if ns.startswith(netns_prefix(name)):
                network.delete_netns(ns)
                removed.append(f"netns {ns}")
        for link in network.links():
            if link.startswith(link_prefix(name)):
                network.delete_link(link)
                removed.append(f"link {link}")
        if _mounts_under(state_dir):
            raise LabError(f"mounts under {state_dir} remain; not deleting it")
        if state_dir.exists():
            shutil.rmtree(state_dir)
            removed.append(f"dir {state_dir}")
        (state_root / f".{name}.lock").unlink(missing_ok=True)
    return removed


def _mounts_under(path: Path) -> list[str]:
    prefix = f"{path}/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4]
        if mnt.startswith(prefix) or mnt == str(path):
            out.append(mnt)
    # Deepest first, so nested mounts come off before their parents.
    return sorted(out, key=len, reverse=True)


@contextmanager
def running_lab(
    name: str = "demo",
    control_planes: int = 3,
    workers: int = 2,
    subnet: str = DEFAULT_SUBNET,
    *,
    log: Log = _quiet,
) -> Iterator[Lab]:
    """A lab that is up inside the block and always torn down after it, even on errors."""
    lab = Lab.create(name, control_planes, workers, subnet)
    try:
        lab.up(log=log)
        yield lab
    finally:
        destroy(name, lab.state_root)


__all__ = ["Lab", "LabError", "LabHost", "destroy", "running_lab"]
