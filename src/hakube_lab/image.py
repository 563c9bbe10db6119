"""The shared read-only base image: Debian 12 built once with debootstrap, cached by recipe hash.

Every host boots an overlay over this one directory, so it must never change after it is
published; a changed recipe gets a new directory (the hash is in its name).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hakube_lab.addressing import LabError
from hakube_lab.system import run

CACHE_ROOT = Path("/var/cache/hakube/lab")
SUITE = "bookworm"

BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "iptables",
    "kmod",
    "procps",
    "curl",
    "ca-certificates",
    "python3",
)

# Units that wait for hardware, consoles or networks a lab host does not have, or wake up to
# talk to the internet: masked so boots are quick and quiet.
MASKED_UNITS: tuple[str, ...] = (
    "getty@tty1.service",
    "console-getty.service",
    "serial-getty@.service",
    "getty.target",
    "systemd-networkd-wait-online.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
)

# Runs inside the fresh root with chroot. Per-host identity (hostname, machine-id, SSH host key,
# authorized_keys, apt source) is written into each host's overlay instead, so it is removed here.
SETUP_SCRIPT = r"""set -eu
rm -f /etc/ssh/ssh_host_*
rm -f /etc/hostname
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
: > /etc/apt/sources.list
rm -rf /etc/apt/sources.list.d/*
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
mkdir -p /etc/ssh/sshd_config.d /etc/systemd/journald.conf.d /root/.ssh
chmod 700 /root/.ssh
cat > /etc/ssh/sshd_config.d/10-hakube-lab.conf <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
MaxStartups 100:30:200
CONF
cat > /etc/systemd/journald.conf.d/10-hakube-lab.conf <<'CONF'
[Journal]
Storage=volatile
RuntimeMaxUse=16M
CONF
cat > /etc/apt/apt.conf.d/90hakube-lab <<'CONF'
APT::Install-Recommends "false";
Acquire::Languages "none";
CONF
"""

RECIPE_VERSION = "1"


def recipe_hash() -> str:
    h = hashlib.sha256()
    for part in (RECIPE_VERSION, SUITE, *BASE_PACKAGES, "--", *MASKED_UNITS, "--", SETUP_SCRIPT):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def image_dir(cache_root: Path = CACHE_ROOT) -> Path:
    return cache_root / f"image-{recipe_hash()}"


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: tuple[str, ...]


def parse_sources(texts: dict[str, str]) -> list[AptSource]:
    """Binary Debian sources from one-line (.list) and deb822 (.sources) files."""
    out: list[AptSource] = []
    for name, text in texts.items():
        if name.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                comps = tuple(fields.get("components", "main").split())
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        out.append(AptSource(uri.rstrip("/"), suite, comps))
        else:
            for raw in text.splitlines():
                words = raw.split("#", 1)[0].split()
                if not words or words[0] != "deb":
                    continue
                words = words[1:]
                if words and words[0].startswith("["):
                    while words and not words[0].endswith("]"):
                        words = words[1:]
                    words = words[1:]
                if len(words) >= 2:
                    out.append(AptSource(words[0].rstrip("/"), words[1], tuple(words[2:])))
    return out


def machine_sources() -> list[AptSource]:
    texts: dict[str, str] = {}
    main = Path("/etc/apt/sources.list")
    if main.is_file():
        texts[str(main)] = main.read_text()
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        for p in sorted(parts.iterdir()):
            if p.suffix in (".list", ".sources"):
                texts[str(p)] = p.read_text()
    return parse_sources(texts)


def debian_sources(sources: list[AptSource]) -> list[AptSource]:
    """The machine's Debian 12 sources (bookworm, -updates, -security), in file order."""
    return [s for s in sources if s.suite == SUITE or s.suite.startswith(SUITE + "-")]


def find_apt_mirror(sources: list[AptSource] | None = None) -> str:
    for s in debian_sources(machine_sources() if sources is None else sources):
        if s.suite == SUITE:
            return s.uri
    raise LabError(
        f"no Debian {SUITE} source in /etc/apt/sources.list*: the lab image is built with "
        "debootstrap from the machine's own Debian mirror"
    )


def ensure_image(
    cache_root: Path = CACHE_ROOT, log: Callable[[str], None] = lambda _m: None
) -> Path:
    """The image directory, built now if this recipe has never been built here."""
    final = image_dir(cache_root)
    if (final / "etc/os-release").is_file():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    mirror = find_apt_mirror()
    tmp = cache_root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"building base image {final.name} with debootstrap from {mirror} (about a minute)")
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(tmp),
                mirror,
            ],
            timeout=1800,
        )
        for unit in MASKED_UNITS:
            link = tmp / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        run(["chroot", str(tmp), "/bin/sh", "-c", SETUP_SCRIPT])
        # rename() is atomic: a half-built tree is never found under the final name.
        if (final / "etc/os-release").is_file():  # another lab finished the same build first
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
