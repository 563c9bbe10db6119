"""One lab host: an overlay root over the shared image, booted by systemd-nspawn.

PID 1 of this machine need not be systemd, so nspawn runs with `--register=no --keep-unit` as a
detached process we track ourselves: it is started inside a cgroup v2 directory of its own,
which gives an atomic "power off" (`cgroup.kill` kills the whole tree at once) and a precise
memory figure, and lets `down` find everything after a crash.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path

from hakube_lab.addressing import LabError
from hakube_lab.system import kill_pid, pid_alive, read_pid, run

CGROUP_GROUP = "hakube-lab"


class HostPaths:
    """Where one lab host lives below its directory, and its machine name; set once."""

    def __init__(self, lab: str, host: str, dir: Path) -> None:
        self.lab = lab
        self.host = host
        self.dir = dir
        self.upper = dir / "upper"
        self.work = dir / "work"
        self.root = dir / "root"
        self.pid_file = dir / "nspawn.pid"
        self.log_file = dir / "console.log"
        self.machine = f"hk-{lab}-{host}"


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (unified or hybrid layout), if anywhere."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    found = [Path(line.split()[1]) for line in mounts if line.split()[2:3] == ["cgroup2"]]
    return min(found, key=lambda p: len(p.parts)) if found else None


def lab_cgroup(lab: str) -> Path | None:
    base = cgroup2_mount()
    return base / CGROUP_GROUP / lab if base else None


def host_cgroup(lab: str, host: str) -> Path | None:
    base = lab_cgroup(lab)
    return base / host if base else None


def is_mounted(path: Path) -> bool:
    target = str(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[4] == target for line in lines)


def mount_overlay(image: Path, paths: HostPaths) -> None:
    for d in (paths.upper, paths.work, paths.root):
        d.mkdir(parents=True, exist_ok=True)
    if is_mounted(paths.root):
        return
    opts = f"lowerdir={image},upperdir={paths.upper},workdir={paths.work}"
    run(["mount", "-t", "overlay", "overlay", "-o", opts, str(paths.root)])


def unmount(paths: HostPaths) -> None:
    for _ in range(50):
        if not is_mounted(paths.root):
            return
        if run(["umount", str(paths.root)], check=False).returncode == 0:
            continue
        time.sleep(0.1)
    # Still busy after 5 s: detach it so `down` can finish; the kernel frees it when unused.
    run(["umount", "-l", str(paths.root)], check=False)


def provision(
    paths: HostPaths, *, hostname: str, etc_hosts: str, authorized_key: str, apt_source: str
) -> str:
    """Write this host's identity into its overlay; returns its SSH host public key line.

    Only the host key and machine-id are kept once made (they are the host's identity across
    stop/start); the rest is rewritten on every start so a changed lab setting takes effect.
    """
    root = paths.root
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/hosts").write_text(etc_hosts)
    mid = root / "etc/machine-id"
    if not mid.read_text().strip():
        mid.write_text(uuid.uuid4().hex + "\n")
    key = root / "etc/ssh/ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", hostname, "-f", str(key)])
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(authorized_key.strip() + "\n")
    auth.chmod(0o600)
    (root / "etc/apt/sources.list").write_text(apt_source)
    return (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().strip()


def _our_pid(paths: HostPaths) -> int | None:
    """The nspawn pid from the pid file, if that process is still ours.

    A pid file can outlive its process (crash, reboot) and the number be reused: the command
    line must name this host's root before we trust or kill it.
    """
    pid = read_pid(paths.pid_file)
    if pid is None or not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if f"--directory={paths.root}".encode() in cmdline else None


def is_running(paths: HostPaths) -> bool:
    cg = host_cgroup(paths.lab, paths.host)
    if cg is not None and cg.is_dir() and _cgroup_pids(cg):
        return True
    return _our_pid(paths) is not None


def boot(paths: HostPaths, *, hostname: str, netns: str) -> int:
    """Start the container detached; returns nspawn's pid. Does not wait for the boot."""
    cg = host_cgroup(paths.lab, paths.host)
    cmd = [
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
        f"--directory={paths.root}", f"--machine={paths.machine}", f"--hostname={hostname}",
        f"--network-namespace-path=/run/netns/{netns}",
        # keepalived must add the VIP inside the host's own namespace.
        "--capability=CAP_NET_ADMIN",
        "--link-journal=no", "--resolv-conf=off", "--timezone=off", "--console=read-only",
    ]  # fmt: skip
    if cg is not None:
        cg.mkdir(parents=True, exist_ok=True)
        # Join the cgroup before exec, so nspawn and everything it starts is inside it.
        cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cg), *cmd]
    with paths.log_file.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
            # /proc/sys/net is per network namespace: writable like on a real host (keepalived,
            # ip_forward), while every global sysctl stays read-only.
            env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
        )  # fmt: skip
    paths.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def _cgroup_pids(cg: Path) -> list[int]:
    pids: list[int] = []
    for procs in cg.rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            continue
    return pids


def container_pids(paths: HostPaths) -> list[int]:
    cg = host_cgroup(paths.lab, paths.host)
    if cg is not None and cg.is_dir():
        return _cgroup_pids(cg)
    pid = _our_pid(paths)
    return [pid] if pid is not None else []


def init_pid(paths: HostPaths) -> int | None:
    """PID (in our namespace) of the container's systemd, for nsenter."""
    cg = host_cgroup(paths.lab, paths.host)
    if cg is None:
        return None
    try:
        pids = (cg / "payload/init.scope/cgroup.procs").read_text().split()
    except OSError:
        return None
    return int(pids[0]) if pids else None


def remove_cgroup(cg: Path) -> None:
    if not cg.is_dir():
        return
    for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        cg.rmdir()


def kill_cgroup(cg: Path, timeout: float = 10.0) -> None:
    if not cg.is_dir():
        return
    (cg / "cgroup.kill").write_text("1\n")
    deadline = time.monotonic() + timeout
    while _cgroup_pids(cg) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _cgroup_pids(cg):
        raise LabError(f"processes in {cg} survived cgroup.kill for {timeout:.0f} s")
    remove_cgroup(cg)


def power_off(paths: HostPaths) -> None:
    """Kill the whole container at once (no shutdown: this simulates pulling the plug)."""
    cg = host_cgroup(paths.lab, paths.host)
    if cg is not None and cg.is_dir():
        kill_cgroup(cg)
    pid = _our_pid(paths)
    if pid is not None:
        # Without a cgroup: nspawn's payload dies with it (it is the pid namespace's parent).
        kill_pid(pid, timeout=0)
        _reap(pid)
    paths.pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    # Only our own child can be reaped; otherwise init does it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def memory_pss(paths: HostPaths) -> int:
    """Proportional set size of the container's processes in bytes (shared pages split fairly)."""
    return _smaps_total(paths, "Pss:")


def memory_rss(paths: HostPaths) -> int:
    """Sum of resident sizes: an upper bound, shared pages count once per process."""
    return _smaps_total(paths, "Rss:")


def _smaps_total(paths: HostPaths, field: str) -> int:
    total = 0
    for pid in container_pids(paths):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(field):
                total += int(line.split()[1]) * 1024
    return total
