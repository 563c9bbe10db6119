"""The lab's local apt repository: packages hakube installs that the base image lacks.

Hosts have no route off the bridge, so everything they install comes from here. The .deb files
are fetched once with `apt-get download` (resolved against the image's own dpkg status, so only
what the image lacks is fetched), indexed as a flat repository and served over HTTP on the
bridge address only.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

from hakube_lab.addressing import LabError
from hakube_lab.image import CACHE_ROOT, debian_sources, machine_sources, recipe_hash
from hakube_lab.system import kill_pid, pid_alive, read_pid, run

MIRROR_PACKAGES: tuple[str, ...] = (
    "keepalived",
    "haproxy",
    "etcd-server",
    "etcd-client",
    "containerd",
    "conntrack",
    "socat",
)


MIRROR_VERSION = "2"


def mirror_hash() -> str:
    h = hashlib.sha256("\0".join((MIRROR_VERSION, recipe_hash(), *MIRROR_PACKAGES)).encode())
    return h.hexdigest()[:16]


def mirror_dir(cache_root: Path = CACHE_ROOT) -> Path:
    return cache_root / f"mirror-{mirror_hash()}"


def _apt_options(work: Path, image: Path) -> list[str]:
    """apt pointed at private lists and at the image's dpkg status instead of the machine's."""
    return [
        "-o", f"Dir::Etc::SourceList={work / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={work / 'lists'}",
        "-o", f"Dir::State::status={image / 'var/lib/dpkg/status'}",
        "-o", f"Dir::Cache={work / 'cache'}",
        "-o", "Debug::NoLocking=true",
        "-o", "APT::Install-Recommends=false",
    ]  # fmt: skip


def parse_print_uris(text: str) -> list[tuple[str, str]]:
    """(package, version) pairs from `apt-get install --print-uris` lines."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.startswith("'"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[1].endswith(".deb"):
            continue
        fields = urllib.parse.unquote(parts[1])[: -len(".deb")].split("_")
        if len(fields) == 3:
            out.append((fields[0], fields[1]))
    return out


def release_file(repo: Path) -> str:
    """A minimal Release so apt accepts the flat repository (with [trusted=yes])."""
    lines = ["Origin: hakube-lab", "Label: hakube-lab", f"Date: {formatdate(usegmt=True)}"]
    for field, algo in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (repo / name).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def ensure_mirror(
    image: Path, cache_root: Path = CACHE_ROOT, log: Callable[[str], None] = lambda _m: None
) -> Path:
    final = mirror_dir(cache_root)
    if (final / "Release").is_file():
        return final
    sources = debian_sources(machine_sources())
    if not sources:
        raise LabError("no Debian bookworm source in /etc/apt/sources.list* to fetch packages from")
    tmp = cache_root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    work = tmp / ".apt"
    (work / "lists/partial").mkdir(parents=True)
    (work / "cache/archives/partial").mkdir(parents=True)
    (work / "sources.list").write_text(
        "".join(f"deb {s.uri} {s.suite} {' '.join(s.components)}\n" for s in sources)
    )
    log(f"fetching {', '.join(MIRROR_PACKAGES)} and dependencies for the lab mirror")
    opts = _apt_options(work, image)
    try:
        run(["apt-get", *opts, "update", "-q"], timeout=900)
        uris = run(
            ["apt-get", *opts, "install", "--print-uris", "-qq", "-y", *MIRROR_PACKAGES]
        ).stdout
        wanted = parse_print_uris(uris)
        if not wanted:
            raise LabError(f"apt resolved nothing to fetch for {MIRROR_PACKAGES}:\n{uris}")
        run(["apt-get", *opts, "download", *(f"{p}={v}" for p, v in wanted)], cwd=tmp, timeout=1800)
        shutil.rmtree(work)
        for deb in tmp.glob("*%*.deb"):
            # apt saves epochs as "%3a"; http.server would decode a request for that name to
            # ":" and miss the file, so index names without escapes.
            deb.rename(deb.with_name(urllib.parse.unquote(deb.name).replace(":", "_")))
        packages = run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=tmp).stdout
        (tmp / "Packages").write_text(packages)
        (tmp / "Packages.gz").write_bytes(gzip.compress(packages.encode(), mtime=0))
        (tmp / "Release").write_text(release_file(tmp))
        if final.exists():  # another lab finished the same build first
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def start_server(directory: Path, address: str, port: int, pid_file: Path, log_file: Path) -> int:
    """Serve `directory` on address:port in a detached process; returns its pid.

    The process outlives the CLI call (the lab keeps running between commands), so it gets its
    own session and a pid file; `directory` is a path inside the lab state dir so that a leftover
    scan by command line finds it after a crash.
    """
    pid = read_pid(pid_file)
    if pid is not None and pid_alive(pid):
        return pid
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "http.server", str(port),
                "--bind", address, "--directory", str(directory),
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    pid_file.write_text(f"{proc.pid}\n")
    _wait_mirror_up(address, port, proc)
    return proc.pid


def _wait_mirror_up(address: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"the lab mirror on {address}:{port} exited ({proc.returncode})")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.05)
    raise LabError(f"the lab mirror did not start listening on {address}:{port}")


def stop_server(pid_file: Path) -> None:
    pid = read_pid(pid_file)
    if pid is not None:
        kill_pid(pid)
    pid_file.unlink(missing_ok=True)
