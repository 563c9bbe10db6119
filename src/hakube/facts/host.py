"""Everything hakube needs to know about a host, read in ONE round trip.

A no-op re-apply is dominated by round trips, so the facts script prints every section at once
and the phases decide from the parsed result what (if anything) to change.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MARK = "@@hakube:"
#: Kept here (not in phases) so that facts never import phases.
HOST_ID_PATH = "/etc/hakube/cluster-id"
POLICY_RC = "/usr/sbin/policy-rc.d"
POLICY_MARK = "# hakube: no daemon autostart during install"

#: Units whose state phases and `verify` look at.
UNITS = ("haproxy", "keepalived", "etcd", "containerd", "docker", "kubelet", "firewalld")

#: Packages whose installed version phases compare with the wanted one.
PACKAGES = (
    "haproxy",
    "keepalived",
    "etcd-server",
    "etcd-client",
    "containerd",
    "kubelet",
    "kubeadm",
    "kubectl",
    "curl",
    "ca-certificates",
    "socat",
    "conntrack",
    "docker.io",
)

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.ip_nonlocal_bind",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "vm.swappiness",
)


#: Last line of every facts script: the files it reports on, as JSON (a shell comment).
FILES_HEADER = "# hakube facts, files: "


def facts_script(
    paths: Iterable[str] = (), only: Iterable[str] | None = None, units: Iterable[str] = UNITS
) -> str:
    """The shell script whose output `parse_facts` reads; `paths` get checksum and mode.

    `only` keeps just those sections (the others then parse as empty), for callers such as
    `status` that need units and files but not packages or hardware; `units` narrows the
    units asked about (each one costs systemd a lookup, a unit that is not there the most).
    """
    script = _facts_script(paths, units)
    if only is None:
        return script
    keep = {*only, "end"}
    chunks = re.split(r"(?m)^(?=s [a-z]+(?:;|$))", script)
    return "".join(
        c
        for c in chunks
        if not c.startswith("s ") or c[2:].split("\n")[0].split(";")[0].strip() in keep
    )


def _facts_script(paths: Iterable[str], units_asked: Iterable[str]) -> str:
    asked = sorted(set(paths))
    files = " ".join(shlex.quote(p) for p in asked)
    units = " ".join(f"{u}.service" for u in units_asked)
    # Without units, systemctl show would print the manager's own properties.
    show_units = (
        f"systemctl show -p Id -p LoadState -p ActiveState -p UnitFileState {units}"
        if units
        else ":"
    )
    pkgs = " ".join(PACKAGES)
    sysctls = " ".join(SYSCTLS)
    return f"""
s() {{ printf '\\n{MARK}%s\\n' "$1"; }}
s os; cat /etc/os-release 2>/dev/null
s hostname; hostname
s cpus; nproc
s meminfo; grep -E '^(MemTotal|SwapTotal):' /proc/meminfo
s swaps; tail -n +2 /proc/swaps
s uuid; cat /sys/class/dmi/id/product_uuid 2>/dev/null || cat /etc/machine-id 2>/dev/null
s links; ip -o link show 2>/dev/null
s addrs; ip -o -4 addr show 2>/dev/null
s virt; systemd-detect-virt --container 2>/dev/null || true
s units; {show_units} 2>/dev/null
s pkgs; (dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {pkgs} \
  2>/dev/null || rpm -q --qf '%{{NAME}} %{{VERSION}}-%{{RELEASE}} ii\\n' {pkgs} 2>/dev/null) \
  | grep -v 'not installed'
s holds; apt-mark showhold 2>/dev/null
s files; for f in {files}; do
  [ -f "$f" ] && fs+=("$f")
done; [ -n "${{fs[*]}}" ] && awk 'NR==FNR {{k=length($1) + length($2) + 3;
  m[substr($0, k)]=$1 " " $2; next}} {{p=substr($0, 67); print $1, m[p], p}}' \
  <(stat -c '%a %U:%G %n' -- "${{fs[@]}}") <(sha256sum -- "${{fs[@]}}")
s clusterid; cat {HOST_ID_PATH} 2>/dev/null
s policyrc; grep -qF {shlex.quote(POLICY_MARK)} {POLICY_RC} 2>/dev/null && echo left-behind; \
  ls -t {POLICY_RC}.hakube-saved.* 2>/dev/null
s listen; ss -ltnH 2>/dev/null | awk '{{print $4}}'
s timesync; timedatectl show -p NTPSynchronized --value 2>/dev/null
s modules; cut -d' ' -f1 /proc/modules 2>/dev/null
s sysctl; for k in {sysctls}; do printf '%s=%s\\n' "$k" "$(sysctl -n "$k" 2>/dev/null)"; done
s selinux; getenforce 2>/dev/null
s etchosts; cat /etc/hosts
s fstab; cat /etc/fstab 2>/dev/null
s end
{FILES_HEADER}{json.dumps(asked)}
"""


@dataclass(frozen=True)
class Unit:
    name: str
    loaded: bool
    active: str  # active, inactive, failed, activating...
    enabled: str  # enabled, disabled, masked, static, ""

    @property
    def running(self) -> bool:
        return self.active == "active"


@dataclass(frozen=True)
class FileState:
    sha256: str
    mode: int
    owner: str = ""  # user:group


@dataclass(frozen=True)
class OSRelease:
    """What the host's /etc/os-release says it is (ID, ID_LIKE, VERSION_ID, VERSION_CODENAME,
    PRETTY_NAME)."""

    id: str = ""
    like: tuple[str, ...] = ()
    version: str = ""
    codename: str = ""
    pretty: str = ""

    @property
    def name(self) -> str:
        """The name to show a person."""
        return self.pretty or self.id

    @property
    def ids(self) -> set[str]:
        """The OS and the ones it is like (ubuntu is like debian)."""
        return {self.id, *self.like}


@dataclass
class HostFacts:
    os: OSRelease = field(default_factory=OSRelease)
    hostname: str = ""
    cpus: int = 0
    mem_mb: int = 0
    swap_mb: int = 0
    active_swaps: list[str] = field(default_factory=list)
    product_uuid: str = ""
    macs: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)  # iface -> ["a.b.c.d/nn"]
    container: str = ""
    units: dict[str, Unit] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    files: dict[str, FileState] = field(default_factory=dict)
    listening: set[int] = field(default_factory=set)
    time_synced: bool | None = None
    modules: set[str] = field(default_factory=set)
    sysctl: dict[str, str] = field(default_factory=dict)
    selinux: str = ""
    etc_hosts: str = ""
    fstab: str = ""
    #: /etc/hakube/cluster-id: the cluster this host belongs to ("" if none yet).
    cluster_id: str = ""
    #: A policy-rc.d hakube wrote was left behind (a killed install), and the copies it saved of
    #: the one that was there before, newest first.
    policy_rc_left: bool = False
    policy_rc_saved: list[str] = field(default_factory=list)

    @property
    def package_family(self) -> str:
        ids = self.os.ids
        if ids & {"debian", "ubuntu"}:
            return "apt"
        if ids & {"rhel", "centos", "fedora", "rocky", "almalinux"}:
            return "yum"
        return ""

    def unit(self, name: str) -> Unit:
        return self.units.get(name, Unit(name, False, "inactive", ""))

    def has_address(self, address: str) -> str | None:
        """The interface holding `address`, if any."""
        for iface, addrs in self.addresses.items():
            if any(a.split("/")[0] == address for a in addrs):
                return iface
        return None


def asked_files(script: str) -> list[str]:
    """The paths a facts script reports on (what a fake host answering it must know)."""
    last = script.rstrip("\n").rsplit("\n", 1)[-1]
    if not last.startswith(FILES_HEADER):
        raise FactsError("not a hakube facts script")
    files: list[str] = json.loads(last.removeprefix(FILES_HEADER))
    return files


class FactsError(ValueError):
    pass


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = out.setdefault(line[len(MARK) :].strip(), [])
        elif current is not None:
            current.append(line.rstrip())
    for lines in out.values():
        while lines and not lines[-1]:
            lines.pop()
    return out


def _kv(lines: Sequence[str], sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if sep in line:
            k, _, v = line.partition(sep)
            out[k.strip()] = v.strip().strip('"')
    return out


def parse_facts(text: str) -> HostFacts:
    sec = _sections(text)
    if "end" not in sec:
        raise FactsError("facts output is incomplete (no end marker): the script was cut short")
    f = HostFacts()
    osr = _kv(sec.get("os", []))
    f.os = OSRelease(
        id=osr.get("ID", ""),
        like=tuple(osr.get("ID_LIKE", "").split()),
        version=osr.get("VERSION_ID", ""),
        codename=osr.get("VERSION_CODENAME", ""),
        pretty=osr.get("PRETTY_NAME", ""),
    )
    f.hostname = (sec.get("hostname") or [""])[0].strip()
    f.cpus = int((sec.get("cpus") or ["0"])[0] or 0)
    mem = _kv(sec.get("meminfo", []), ":")
    f.mem_mb = int(mem.get("MemTotal", "0 kB").split()[0]) // 1024
    f.swap_mb = int(mem.get("SwapTotal", "0 kB").split()[0]) // 1024
    f.active_swaps = [line.split()[0] for line in sec.get("swaps", []) if line.strip()]
    f.product_uuid = (sec.get("uuid") or [""])[0].strip()
    for line in sec.get("links", []):
        # "2: eth0@if5: <...> ... link/ether aa:bb:... brd ..."
        parts = line.split()
        if len(parts) < 2:
            continue
        iface = parts[1].rstrip(":").split("@")[0]
        if "link/ether" in parts:
            f.macs[iface] = parts[parts.index("link/ether") + 1]
    for line in sec.get("addrs", []):
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            f.addresses.setdefault(parts[1], []).append(parts[3])
    f.container = (sec.get("virt") or [""])[0].strip()
    if f.container == "none":
        f.container = ""
    block: dict[str, str] = {}
    for line in [*sec.get("units", []), ""]:
        if line.strip():
            k, _, v = line.partition("=")
            block[k] = v
            continue
        name = block.get("Id", "").removesuffix(".service")
        if name:
            f.units[name] = Unit(
                name,
                block.get("LoadState") == "loaded",
                block.get("ActiveState", "inactive"),
                block.get("UnitFileState", ""),
            )
        block = {}
    for line in sec.get("pkgs", []):
        parts = line.split()
        # db:Status-Abbrev is desired+current state: "ii" installed, "hi" installed and held.
        if len(parts) >= 3 and parts[2][1:2] == "i":
            f.packages[parts[0]] = parts[1]
    f.held = {line.strip() for line in sec.get("holds", []) if line.strip()}
    for line in filter(None, sec.get("files", [])):
        digest, mode, owner, path = line.split(" ", 3)
        f.files[path] = FileState(digest, int(mode, 8), owner)
    for line in sec.get("listen", []):
        port = line.rsplit(":", 1)[-1]
        if port.isdigit():
            f.listening.add(int(port))
    ts = (sec.get("timesync") or [""])[0].strip()
    f.time_synced = {"yes": True, "no": False}.get(ts)
    f.modules = {line.strip() for line in sec.get("modules", []) if line.strip()}
    f.sysctl = {k: v for k, v in _kv(sec.get("sysctl", [])).items() if v}
    f.selinux = (sec.get("selinux") or [""])[0].strip()
    f.etc_hosts = "\n".join(sec.get("etchosts", [])) + "\n"
    f.fstab = "\n".join(sec.get("fstab", [])) + "\n"
    f.cluster_id = (sec.get("clusterid") or [""])[0].strip()
    policy = [line.strip() for line in sec.get("policyrc", []) if line.strip()]
    f.policy_rc_left = "left-behind" in policy
    f.policy_rc_saved = [line for line in policy if line != "left-behind"]
    return f
