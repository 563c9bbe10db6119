"""Thin wrappers over the programs the lab drives, with errors that say what to install."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hakube_lab.addressing import LabError

#: Program → Debian package that provides it, for the "missing tool" message.
TOOLS: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dpkg-scanpackages": "dpkg-dev",
    "apt-get": "apt",
    "nsenter": "util-linux",
    "mount": "mount",
}


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("hakube lab needs root (namespaces, bridges, mounts): run it with sudo")


def missing_tools(tools: Sequence[str] = tuple(TOOLS)) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def require_tools(tools: Sequence[str] = tuple(TOOLS)) -> None:
    missing = missing_tools(tools)
    if missing:
        pkgs = sorted({TOOLS.get(t, t) for t in missing})
        raise LabError(
            f"missing programs: {', '.join(missing)}; install the Debian packages: "
            f"apt-get install {' '.join(pkgs)}"
        )


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = 600,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()[-2000:]
        raise LabError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited already; only its parent's wait() is missing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """TERM, then KILL after `timeout`; returns once the process is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def pids_with_cmdline(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment` (leftover scan after a crash)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline:
            found.append(int(entry.name))
    return found


#: Every booted container's systemd, journald, udev and logind hold inotify instances (about
#: eight a host); the kernel's default of 128 per user stops a 20-host lab halfway through boot.
HOST_LIMITS = {
    "fs.inotify.max_user_instances": 8192,
    "fs.inotify.max_user_watches": 524288,
}


def ensure_host_limits(log: Callable[[str], None]) -> None:
    """Raise (never lower) the machine's inotify limits so that many hosts can boot."""
    for key, want in HOST_LIMITS.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        try:
            have = int(path.read_text())
            if have < want:
                path.write_text(f"{want}\n")
                log(f"raised {key} from {have} to {want} (many booted hosts need it)")
        except OSError as e:
            log(f"could not raise {key}: {e.strerror}; large labs may not boot")
