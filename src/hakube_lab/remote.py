"""Running things on lab hosts: over SSH with the lab key (the path hakube itself uses), or by
entering the container's namespaces directly (works while a host is isolated)."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hakube_lab import host as hostmod
from hakube_lab.addressing import LabError
from hakube_lab.system import run

if TYPE_CHECKING:
    from hakube_lab.lab import Lab


def ssh_command(
    lab: Lab, host: str, command: Sequence[str] = (), *, tty: bool = False
) -> list[str]:
    h = lab.host(host)
    return [
        "ssh", "-i", str(lab.key_file),
        "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
        *(["-t"] if tty else []),
        f"root@{h.address}", *command,
    ]  # fmt: skip


def run_ssh(
    lab: Lab,
    host: str,
    command: str | Sequence[str],
    *,
    check: bool,
    timeout: float,
    input_text: str | None,
) -> subprocess.CompletedProcess[str]:
    remote = command if isinstance(command, str) else shlex.join(command)
    return run(ssh_command(lab, host, [remote]), check=check, timeout=timeout,
               input_text=input_text)  # fmt: skip


def nsenter(
    lab: Lab, host: str, command: Sequence[str], *, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    pid = hostmod.init_pid(lab.paths(host))
    if pid is None:
        raise LabError(f"host {host} of lab {lab.name} is not running")
    return run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *command],
               check=check, timeout=timeout)  # fmt: skip


def wait_ssh(lab: Lab, hosts: Sequence[str] | None, timeout: float) -> None:
    names = list(hosts) if hosts is not None else [h.name for h in lab.hosts]
    failed = asyncio.run(_wait_all(lab, names, time.monotonic() + timeout))
    if failed:
        logs = {n: str(lab.paths(n).log_file) for n in failed}
        raise LabError(
            f"no SSH after {timeout:.0f} s from: {', '.join(failed)} (console logs: {logs})"
        )


async def _wait_all(lab: Lab, names: list[str], deadline: float) -> list[str]:
    results = await asyncio.gather(*(_wait_one(lab, n, deadline) for n in names))
    return [n for n, ok in zip(names, results, strict=True) if not ok]


async def _wait_one(lab: Lab, name: str, deadline: float) -> bool:
    address = lab.host(name).address
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
            *ssh_command(lab, name, ["true"]),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await proc.wait() == 0:
            return True
        await asyncio.sleep(0.2)
    return False
