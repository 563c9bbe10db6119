"""The apply workflow end to end against scripted hosts: no SSH, no real machine.

Every host is a `ScriptedTransport` (a clearly marked fake) whose facts reply is rendered from a
small description of the host (`FakeHost`). Mutating commands have explicit rules, so a command
nobody expected fails the host loudly instead of passing silently, and each rule changes the
`FakeHost` the way the command changes a Debian host (a package install leaves its unit enabled
but stopped, `modprobe br_netfilter` turns the bridge sysctls on, a started unit listens on its
ports, a put or validated `mv` replaces the file). The idempotency tests therefore run apply a
second time over exactly what the first run did.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import json
import re
import shlex
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hakube.facts.host import HOST_ID_PATH, MARK, PACKAGES, UNITS, asked_files
from hakube.fileio import exclusive_lock
from hakube.phases.base import Change, Event, EventKind, select_phases
from hakube.phases.context import AUTOSTART_BACK, HELD, NO_AUTOSTART, owner_of
from hakube.pki.etcd import etcd_members
from hakube.render import render_host
from hakube.render.etcd import render_etcd
from hakube.render.host import apply_block, hosts_block
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.transport.scripted import Call, FakeFile, Reply, ScriptedTransport
from hakube.workflows.apply import (
    ApplyLocked,
    ApplyResult,
    HostFailure,
    apply,
    apply_phases,
    cluster_lock,
)

SKIP = ("kubeadm", "cni", "verify", "lb/vip")
NAME = "lab"
CLUSTER_DATA: dict[str, Any] = {
    "apiVersion": "hakube/v1alpha1",
    "kind": "Cluster",
    "name": NAME,
    "hosts": [
        {"name": "cp1", "address": "10.88.0.11", "roles": ["control-plane"]},
        {"name": "cp2", "address": "10.88.0.12", "roles": ["control-plane"]},
        {"name": "cp3", "address": "10.88.0.13", "roles": ["control-plane"]},
        {"name": "w1", "address": "10.88.0.21", "roles": ["worker"]},
    ],
    "endpoint": {"mode": "vip", "vip": "10.88.0.10", "port": 8443, "interface": "eth0"},
    "etcd": {"topology": "external"},
    "packages": {"manager": "apt"},
}
LB = ("cp1", "cp2", "cp3")
VIP = "10.88.0.10"
ALL = ("cp1", "cp2", "cp3", "w1")
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
CANDIDATE = f"{HAPROXY_CFG}.hakube-new"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"

# --- the fake hosts ------------------------------------------------------------------------------


@dataclass
class FakeHost:
    """What a host looks like, rendered into the facts script's output by `render_facts`."""

    name: str
    address: str
    mac: str
    uuid: str
    hostname: str
    packages: dict[str, str] = field(default_factory=dict)
    #: path -> (sha256, mode[, user:group]), reported only for paths the facts script asks about.
    files: dict[str, tuple[str, int] | tuple[str, int, str]] = field(default_factory=dict)
    #: unit -> (ActiveState, UnitFileState); other units are reported not-found.
    units: dict[str, tuple[str, str]] = field(default_factory=dict)
    listening: set[int] = field(default_factory=lambda: {22})
    modules: set[str] = field(default_factory=set)
    sysctl: dict[str, str] = field(default_factory=dict)
    etc_hosts: str = "127.0.0.1\tlocalhost\n"
    fstab: str = "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"
    #: Content of /run/hakube/haproxy-down ("" when the file does not exist).
    tracked: str = ""
    held: set[str] = field(default_factory=set)
    cluster_id: str = ""
    #: Holds the VIP (in its addresses and for `ip addr` probes).
    vip: bool = False
    #: Contents `cat` shows for files a test cares about.
    contents: dict[str, str] = field(default_factory=dict)


def render_facts(h: FakeHost, script: str) -> str:
    """The facts script's output on `h`, as bash would print it (only what it asks for)."""
    out: list[str] = []

    def section(name: str, *lines: str) -> None:
        out.append("")
        out.append(f"{MARK}{name}")
        out.extend(lines)

    section(
        "os",
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
        'VERSION_ID="12"',
        "VERSION_CODENAME=bookworm",
        "ID=debian",
    )
    section("hostname", h.hostname)
    section("cpus", "2")
    section("meminfo", "MemTotal:        4028116 kB", "SwapTotal:             0 kB")
    section("swaps")
    section("uuid", h.uuid)
    section(
        "links",
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT "
        "group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP mode "
        f"DEFAULT group default qlen 1000\\    link/ether {h.mac} brd ff:ff:ff:ff:ff:ff",
    )
    section(
        "addrs",
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
        f"2: eth0    inet {h.address}/24 brd 10.88.0.255 scope global eth0\\       "
        "valid_lft forever preferred_lft forever",
        *([f"2: eth0    inet {VIP}/32 scope global eth0"] if h.vip else []),
    )
    section("virt", "none")
    blocks: list[str] = []
    for unit in UNITS:
        active, enabled = h.units.get(unit, ("inactive", ""))
        load = "loaded" if unit in h.units else "not-found"
        blocks += [
            f"Id={unit}.service",
            f"LoadState={load}",
            f"ActiveState={active}",
            f"UnitFileState={enabled}",
            "",
        ]
    section("units", *blocks[:-1])
    section("pkgs", *(f"{p} {h.packages[p]} ii " for p in PACKAGES if p in h.packages))
    section("holds", *sorted(h.held))

    def file_line(p: str) -> str:
        digest, mode, *owner = h.files[p]
        return f"{digest} {mode:o} {owner[0] if owner else 'root:root'} {p}"

    section("files", *(file_line(p) for p in asked_files(script) if p in h.files))
    section("clusterid", h.cluster_id)
    section("policyrc")
    section("listen", *(f"0.0.0.0:{port}" for port in sorted(h.listening)))
    section("timesync", "yes")
    section("modules", *sorted(h.modules))
    section("sysctl", *(f"{k}={v}" for k, v in h.sysctl.items()))
    section("selinux")
    section("etchosts", *h.etc_hosts.splitlines())
    section("fstab", *h.fstab.splitlines())
    section("end")
    return "\n".join(out) + "\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def desired_files(
    cluster: Cluster, host: Host, state: StateDir
) -> dict[str, tuple[str, int] | tuple[str, int, str]]:
    """Every file hakube would write on `host`, as the renderers and the state dir produce it."""
    secrets = state.secrets()
    files = [*render_host(cluster, host, secrets), *render_etcd(cluster, host)]
    if host in cluster.etcd_hosts:
        pki = state.etcd_pki(etcd_members(cluster))
        files += pki.etcd_host_files(host.name)
    return {f.path: (sha(f.content), f.mode, owner_of(f)) for f in files}


def fresh_host(cluster: Cluster, host: Host) -> FakeHost:
    n = int(host.address.packed[-1])
    return FakeHost(
        name=host.name,
        address=str(host.address),
        mac=f"52:54:00:12:34:{n:02x}",
        uuid=f"0d9e8f7a-1b2c-4d3e-8f4a-0000000000{n:02x}",
        hostname="debian",
        packages={"ca-certificates": "20230311"},
    )


def converged_host(cluster: Cluster, host: Host, state: StateDir) -> FakeHost:
    """A host on which a previous apply finished: everything current, installed and running."""
    h = fresh_host(cluster, host)
    h.hostname = host.name
    h.packages = {
        "ca-certificates": "20230311",
        "curl": "7.88.1-10+deb12u5",
        "containerd": "1.6.20~ds1-1+b1",
    }
    h.units = {"containerd": ("active", "enabled")}
    h.modules = {"overlay", "br_netfilter", "nf_conntrack"}
    h.sysctl = {
        "net.ipv4.ip_forward": "1",
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1",
    }
    if host in cluster.lb_hosts:
        h.packages |= {
            "haproxy": "2.6.12-1+deb12u1",
            "socat": "1.7.4.4-2",
            "keepalived": "1:2.2.7-1+b2",
            "etcd-server": "3.4.23-4+b6",
            "etcd-client": "3.4.23-4+b6",
        }
        h.units |= {
            "haproxy": ("active", "enabled"),
            "keepalived": ("active", "enabled"),
            "etcd": ("active", "enabled"),
        }
        h.listening |= {8443, 2379, 2380}
        h.sysctl["net.ipv4.ip_nonlocal_bind"] = "1"
    h.files = desired_files(cluster, host, state)
    h.vip = host.name == "cp1"
    h.held = {p for p in HELD if p in h.packages}
    h.cluster_id = state.record().cluster_id
    h.etc_hosts = apply_block(h.etc_hosts, hosts_block(cluster, host))
    h.tracked = "0" if host in cluster.lb_hosts else ""
    return h


ETCD_HEALTH = json.dumps(
    [{"endpoint": f"https://10.88.0.1{i}:2379", "health": True, "took": "2.1ms"} for i in (1, 2, 3)]
)
ETCD_MEMBERS = json.dumps(
    {
        "members": [
            {"name": f"cp{i}", "clientURLs": [f"https://10.88.0.1{i}:2379"]} for i in (1, 2, 3)
        ]
    }
)
VALIDATE = re.compile(
    r'out=\$\(mktemp\) .*?; if (?P<check>.+?) >"\$out" 2>&1; then mv -f (?P<rest>.*)', re.S
)


def _haproxy_state(h: FakeHost) -> str:
    want = "0" if h.units.get("haproxy", ("", ""))[0] == "active" else "1"
    return f"{want} {h.tracked}\n"


#: What each package's maintainer scripts leave behind, and which unit listens where once it
#: runs (the cluster below: HAProxy's frontend on 8443, etcd's client and peer ports).
PACKAGE_UNITS = {"containerd": "containerd", "haproxy": "haproxy", "keepalived": "keepalived",
                 "etcd-server": "etcd"}  # fmt: skip
UNIT_PORTS = {"haproxy": {8443}, "etcd": {2379, 2380}}
FAKE_VERSION = "1.0-1+hakube-test"
#: Loading br_netfilter creates these sysctls, on by default.
BR_NETFILTER_SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")


def _read_only_rules(t: FakeHostTransport) -> list[tuple[re.Pattern[str], Any]]:
    """What only looks at the host; each rule reads `t.fake` when it runs."""
    return [
        (re.compile(r"\ns\(\) \{.*", re.S), t._facts),
        (re.compile(r"systemctl is-active -q haproxy && want=0 .*"),
         lambda _call: _haproxy_state(t.fake)),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* endpoint health --cluster -w json"), ETCD_HEALTH),
        (re.compile(r"ETCDCTL_API=3 etcdctl .* member list -w json"), ETCD_MEMBERS),
        (re.compile(r"for i in \$\(seq \d+\); do ss -ltnH .*"), Reply()),
        (re.compile(rf"ip -o -4 addr show \| grep -qF 'inet {re.escape(VIP)}/'"),
         lambda _call: Reply(exit_status=0 if t.fake.vip else 1)),
        (re.compile(r"cat (/\S+)"),
         lambda call: t.fake.contents.get(call.target.split(" ", 1)[1], "")),
    ]  # fmt: skip


class FakeHostTransport(ScriptedTransport):
    """ScriptedTransport over a `FakeHost` that mutating commands change as they would change
    the host; its validation rule behaves like the shell: mv on success only."""

    def __init__(self, h: FakeHost, *, read_only: bool = False) -> None:
        self.fake = h
        super().__init__(h.name, [])
        self.rules[:0] = _read_only_rules(self)
        self.failing_checks: dict[str, Reply] = {}
        if read_only:
            return
        self.on(VALIDATE, self._validate)
        self.on(re.compile(r"o=\$\(mktemp\) .*; setsid -w bash -c .*", re.S), self._install)
        self.on(re.compile(r"systemctl (enable|daemon-reload|reload|restart|stop|start).*"),
                self._systemctl)  # fmt: skip
        self.on(re.compile(r"\{ echo 'show servers state' \| .*; systemctl reload-or-restart \w+"),
                self._save_states_and_reload)  # fmt: skip
        self.on(re.compile(r"sysctl -qw .*"), self._sysctl)
        self.on(re.compile(r"hostnamectl set-hostname (\S+) .*"), self._hostname)
        self.on(re.compile(r"modprobe -a [a-z_ ]+"), self._modprobe)
        self.on(re.compile(r"apt-mark hold [a-z. -]+"), self._hold)
        self.on(re.compile(r"chown [a-z]+:[a-z]+ /etc/\S+"), self._chown)
        self.on(re.compile(r"mkdir -p /run/hakube && echo 0 > /run/hakube/haproxy-down"),
                self._track)  # fmt: skip

    def fail_check(self, command_prefix: str, reply: Reply) -> None:
        self.failing_checks[command_prefix] = reply

    def _facts(self, call: Call) -> str:
        h = self.fake
        for path, f in self.files.items():  # what puts and validated moves left
            owner = f.owner or "root"
            owner = owner if ":" in owner else f"{owner}:{owner}"
            h.files[path] = (hashlib.sha256(f.content).hexdigest(), f.mode, owner)
            if path == "/etc/hosts":
                h.etc_hosts = f.content.decode()
            if path == HOST_ID_PATH:
                h.cluster_id = f.content.decode().strip()
        return render_facts(h, call.target)

    def _validate(self, call: Call) -> Reply:
        m = VALIDATE.fullmatch(call.target)
        assert m is not None
        candidate, live = shlex.split(m.group("rest").split(";", 1)[0])
        for prefix, reply in self.failing_checks.items():
            if m.group("check").startswith(prefix):
                self.files.pop(candidate, None)
                return reply
        self.files[live] = self.files.pop(candidate)
        return Reply()

    def _install(self, call: Call) -> Reply:
        (names,) = set(
            re.findall(r"--no-install-recommends ([a-z0-9. -]+?)(?: \|\||\))", call.target)
        )
        for held in re.findall(r"apt-mark hold ([a-z0-9. -]+?) >>", call.target):
            self.fake.held |= set(held.split())
        for name in names.split():
            self.fake.packages[name] = FAKE_VERSION
            unit = PACKAGE_UNITS.get(name)
            if unit:  # enabled by the postinst, not started: policy-rc.d said no
                self.fake.units[unit] = ("inactive", "enabled")
        return Reply()

    def _systemctl(self, call: Call) -> Reply:
        for part in call.target.split("&&"):
            words = [w for w in shlex.split(part) if not w.startswith("-")]
            verb, units = words[1], words[2:]
            for unit in units:
                active, enabled = self.fake.units[unit]  # a unit no package brought: KeyError
                if verb == "enable":
                    enabled = "enabled"
                if verb == "stop":
                    active = "inactive"
                if verb in ("start", "restart", "reload-or-restart") or "--now" in part:
                    active = "active"
                    self.fake.listening |= UNIT_PORTS.get(unit, set())
                self.fake.units[unit] = (active, enabled)
        return Reply()

    def _save_states_and_reload(self, call: Call) -> Reply:
        # The saved states are HAProxy's business; the reload is what the fake host follows.
        return self._systemctl(dataclasses.replace(call, target=call.target.rsplit("; ", 1)[1]))

    def _hold(self, call: Call) -> Reply:
        self.fake.held |= set(call.target.split()[2:])
        return Reply()

    def _chown(self, call: Call) -> Reply:
        _, owner, path = call.target.split()
        digest, mode, *_ = self.fake.files[path]
        self.fake.files[path] = (digest, mode, owner)
        if path in self.files:
            self.files[path].owner = owner
        return Reply()

    def _sysctl(self, call: Call) -> Reply:
        for key, value in re.findall(r"sysctl -qw ([\w.-]+)=(\S+)", call.target):
            self.fake.sysctl[key] = value
        return Reply()

    def _hostname(self, call: Call) -> Reply:
        self.fake.hostname = shlex.split(call.target)[2]
        return Reply()

    def _modprobe(self, call: Call) -> Reply:
        modules = call.target.split()[2:]
        self.fake.modules |= set(modules)
        if "br_netfilter" in modules:
            for key in BR_NETFILTER_SYSCTLS:
                self.fake.sysctl.setdefault(key, "1")
        return Reply()

    def _track(self, _call: Call) -> Reply:
        self.fake.tracked = "0"
        return Reply()


@dataclass
class Run:
    result: ApplyResult
    events: list[Event]
    transports: dict[str, FakeHostTransport]
    state: StateDir


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster_data(CLUSTER_DATA).cluster


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(NAME, root=tmp_path / "state")


def make_transports(
    cluster: Cluster,
    state: StateDir,
    *,
    converged: bool = False,
    read_only: bool = False,
) -> dict[str, FakeHostTransport]:
    out: dict[str, FakeHostTransport] = {}
    for host in cluster.hosts:
        h = converged_host(cluster, host, state) if converged else fresh_host(cluster, host)
        out[host.name] = FakeHostTransport(h, read_only=read_only)
    return out


def run_apply(
    cluster: Cluster,
    state: StateDir,
    transports: dict[str, FakeHostTransport],
    *,
    dry_run: bool = False,
    skip: Iterable[str] = SKIP,
) -> Run:
    events: list[Event] = []
    given: dict[str, Transport] = dict(transports)
    result = asyncio.run(
        apply(
            cluster,
            state=state,
            transports=given,
            skip=list(skip),
            dry_run=dry_run,
            emit=events.append,
        )
    )
    return Run(result, events, transports, state)


def triples(changes: Iterable[Change]) -> list[tuple[str, str, str]]:
    return [(c.phase, c.host, c.description) for c in changes]


def index_of(calls: list[Call], pred: Callable[[Call], bool]) -> int:
    for i, c in enumerate(calls):
        if pred(c):
            return i
    raise AssertionError("no such call")


# --- (a) a fresh host set ------------------------------------------------------------------------


@pytest.fixture
def fresh_run(cluster: Cluster, state: StateDir) -> Run:
    return run_apply(cluster, state, make_transports(cluster, state))


def test_fresh_hosts_apply_succeeds_and_runs_the_expected_phases(fresh_run: Run) -> None:
    r = fresh_run.result
    assert r.ok, r.failures
    assert r.phases_run == [
        "preflight",
        "prepare",
        "packages",
        "runtime",
        "lb/haproxy",
        "lb/keepalived",
        "etcd",
    ]
    assert r.phases_skipped == [
        "lb/vip",
        "kubeadm/etcd-endpoints",
        "kubeadm/packages",
        "kubeadm/init",
        "kubeadm/join-control-planes",
        "cni",
        "kubeadm/join-workers",
        "verify",
    ]
    assert all(c.applied for c in r.changes)
    # etcd members are recorded once the member list and their endpoints' health say so.
    assert fresh_run.state.record().etcd_members == ["cp1", "cp2", "cp3"]


def test_fresh_hosts_get_lb_and_etcd_files(fresh_run: Run) -> None:
    got = set(triples(fresh_run.result.changes))
    for name in LB:
        assert ("lb/haproxy", name, f"write {HAPROXY_CFG}") in got
        assert ("lb/keepalived", name, f"write {KEEPALIVED_CONF}") in got
        assert ("etcd", name, "write /etc/default/etcd") in got
        for stem in ("ca.crt", "server.crt", "server.key", "peer.key", "healthcheck-client.key"):
            assert ("etcd", name, f"write /etc/etcd/pki/{stem}") in got
        assert ("lb/haproxy", name, "start haproxy") in got
        assert ("etcd", name, "start etcd") in got
    # The worker is no LB and no etcd member.
    assert not [c for c in got if c[1] == "w1" and c[0] in ("lb/haproxy", "etcd")]
    assert ("prepare", "w1", "set hostname w1 (was debian)") in got


def test_fresh_hosts_etcd_keys_are_0600_and_owned_by_etcd(fresh_run: Run) -> None:
    for name in LB:
        puts = {c.target: c for c in fresh_run.transports[name].calls if c.kind == "put"}
        for stem in ("server", "peer", "healthcheck-client"):
            key = puts[f"/etc/etcd/pki/{stem}.key"]
            assert (key.mode, key.owner) == (0o600, "etcd:etcd")
            crt = puts[f"/etc/etcd/pki/{stem}.crt"]
            assert (crt.mode, crt.owner) == (0o644, "etcd:etcd")
            assert key.content is not None
            assert key.content.startswith(b"-----BEGIN ")
        assert "/etc/etcd/pki/ca.key" not in puts  # the CA key never leaves the state dir


def test_fresh_hosts_packages_are_installed_behind_the_policy_rc_guard(fresh_run: Run) -> None:
    # Each install runs detached from the SSH session (setsid): the script inside is the guard.
    detached = [c for c in fresh_run.transports["cp1"].commands if " setsid -w bash -c " in c]
    installs = [shlex.split(c.split(" setsid -w bash -c ", 1)[1])[0] for c in detached]
    names = [re.findall(r"--no-install-recommends ([^|]*?) \|\| \(", c) for c in installs]
    # One apt transaction for everything the host needs, not one per phase.
    assert names == [["curl containerd haproxy socat keepalived etcd-server etcd-client"]]
    for cmd in installs:
        assert cmd.startswith(NO_AUTOSTART + ";")
        assert cmd.endswith(f"{AUTOSTART_BACK}; exit $rc")
        # A running unattended-upgrades makes apt wait for its lock instead of failing.
        assert "apt-get -o DPkg::Lock::Timeout=300 install" in cmd
    # Services whose upgrade restarts them are held in the same command that installs them.
    holds = [re.findall(r"apt-mark hold ([a-z. -]+) >>", c) for c in installs]
    assert holds == [["containerd haproxy keepalived etcd-server etcd-client"]]
    # ca-certificates was already there: never reinstalled.
    assert not [c for c in installs if "ca-certificates" in c]


def test_fresh_haproxy_candidate_is_validated_before_it_replaces_the_live_file(
    fresh_run: Run,
) -> None:
    for name in LB:
        t = fresh_run.transports[name]
        calls = t.calls
        candidate = CANDIDATE
        put_at = index_of(calls, lambda c: c.kind == "put" and c.target == CANDIDATE)
        check_at = index_of(
            calls, lambda c: c.kind == "run" and f"haproxy -c -f {CANDIDATE}" in c.target
        )
        reload_at = index_of(calls, lambda c: c.target == "systemctl enable -q --now haproxy")
        assert put_at < check_at < reload_at
        cmd = calls[check_at].target
        assert cmd.index(f"haproxy -c -f {candidate}") < cmd.index(
            f"mv -f {candidate} {HAPROXY_CFG}"
        )
        # The live path is never written directly, only through the validated mv.
        assert not [c for c in calls if c.kind == "put" and c.target == HAPROXY_CFG]
        assert candidate not in t.files
        assert HAPROXY_CFG in t.files


# --- (b) dry run ---------------------------------------------------------------------------------


def test_dry_run_records_the_same_changes_and_mutates_nothing(
    cluster: Cluster, state: StateDir, tmp_path: Path
) -> None:
    wet = run_apply(cluster, StateDir(NAME, root=tmp_path / "wet"), make_transports(cluster, state))
    dry = run_apply(cluster, state, make_transports(cluster, state, read_only=True), dry_run=True)
    assert dry.result.ok, dry.result.failures
    assert dry.result.dry_run
    # A dry run starts nothing, so HAProxy is still down when it predicts seeding its state file.
    seed = "seed /run/hakube/haproxy-down with "
    predicted = [
        (p, h, seed + "1" if d.startswith(seed) else d) for p, h, d in triples(wet.result.changes)
    ]
    assert triples(dry.result.changes) == predicted
    assert len(dry.result.changes) > 50
    assert not [c for c in dry.result.changes if c.applied]
    # Nothing local either: no state directory, so no CA, secrets, record or logs were made.
    assert not state.path.exists()
    for name, t in dry.transports.items():
        assert not [c for c in t.calls if c.kind != "run"], name
        for cmd in t.commands:
            assert cmd.startswith("\ns() {") or cmd.startswith(
                "systemctl is-active -q haproxy && want=0"
            ), cmd
    # Only the facts script on the worker; the LB hosts also read HAProxy's tracked state.
    assert len(dry.transports["w1"].commands) == 1
    change_events = [e for e in dry.events if e.kind is EventKind.CHANGE]
    assert [(e.phase, e.host, e.message) for e in change_events] == triples(dry.result.changes)


# --- (c) idempotency -----------------------------------------------------------------------------


@pytest.fixture
def second_run(cluster: Cluster, state: StateDir) -> tuple[Run, Run, dict[str, int]]:
    """Apply twice over the same fake hosts: run 2 reads what run 1 really did to them."""
    ts = make_transports(cluster, state)
    first = run_apply(cluster, state, ts)
    assert first.result.ok, first.result.failures
    assert len(first.result.changes) > 50
    calls_before = {name: len(t.calls) for name, t in ts.items()}
    return first, run_apply(cluster, state, ts), calls_before


def test_a_second_apply_over_what_the_first_did_changes_nothing(
    second_run: tuple[Run, Run, dict[str, int]],
) -> None:
    """The idempotency proof: no change, no change event, every phase done with 0 changes."""
    first, run, _ = second_run
    assert run.result.ok, run.result.failures
    assert run.result.phases_run == first.result.phases_run
    assert triples(run.result.changes) == []
    assert [e for e in run.events if e.kind is EventKind.CHANGE] == []
    done = [e for e in run.events if e.kind is EventKind.PHASE_DONE and e.phase != "facts"]
    assert [(e.phase, e.data) for e in done] == [
        (name, {"changes": 0}) for name in run.result.phases_run
    ]


def test_a_second_apply_runs_no_mutating_command(
    second_run: tuple[Run, Run, dict[str, int]],
) -> None:
    _, run, calls_before = second_run
    for name, t in run.transports.items():
        calls = t.calls[calls_before[name] :]
        assert not [c for c in calls if c.kind == "put"], name
        commands = [c.target for c in calls if c.kind == "run"]
        mutating = ("systemctl enable", "systemctl start", "systemctl re", "systemctl daemon",
                    "if ", "sysctl", "modprobe", "hostnamectl", "mkdir", NO_AUTOSTART)  # fmt: skip
        assert not [c for c in commands if c.startswith(mutating)], name


def test_the_converged_fixture_is_what_a_first_apply_leaves(
    cluster: Cluster, state: StateDir, second_run: tuple[Run, Run, dict[str, int]]
) -> None:
    """`converged_host` (used by the tests below) describes the hosts as run 1 left them."""
    first, _, _ = second_run
    for host in cluster.hosts:
        left = first.transports[host.name].fake
        want = converged_host(cluster, host, state)
        assert (left.hostname, left.etc_hosts, left.tracked) == (
            want.hostname, want.etc_hosts, want.tracked
        )  # fmt: skip
        # The fixture also holds the files of the phases these runs skip (kubeadm's).
        written = {p: v for p, v in left.files.items() if p not in ("/etc/hosts", HOST_ID_PATH)}
        assert left.cluster_id == want.cluster_id
        assert left.held == want.held
        assert written == {p: want.files[p] for p in written}
        assert set(left.packages) == set(want.packages)
        assert left.units == want.units
        assert left.listening == want.listening
        assert left.modules <= want.modules
        assert left.sysctl == want.sysctl


def test_one_stale_file_is_the_only_change(cluster: Cluster, state: StateDir) -> None:
    ts = stale_keepalived(cluster, state, lambda conf: conf + "# an older comment\n", ["cp2"])
    run = run_apply(cluster, state, ts)
    assert run.result.ok, run.result.failures
    assert triples(run.result.changes) == [
        ("lb/keepalived", "cp2", f"write {KEEPALIVED_CONF}"),
        ("lb/keepalived", "cp2", "reload keepalived"),
    ]


def rendered(cluster: Cluster, name: str, state: StateDir, path: str) -> str:
    files = render_host(cluster, cluster.host(name), state.secrets())
    return next(f.content for f in files if f.path == path)


def converged_but(
    cluster: Cluster, state: StateDir, changes: dict[str, Callable[[FakeHost], None]]
) -> dict[str, FakeHostTransport]:
    """Converged hosts, except what `changes` does to some of them."""
    ts = make_transports(cluster, state, converged=True)
    for name, change in changes.items():
        h = converged_host(cluster, cluster.host(name), state)
        change(h)
        with_facts(ts, name, h)
    return ts


def stale_keepalived(
    cluster: Cluster, state: StateDir, edit: Callable[[str], str], hosts: Iterable[str] = LB
) -> dict[str, FakeHostTransport]:
    """A live, converged front whose keepalived.conf differs (by `edit`) on `hosts`."""

    def older(h: FakeHost) -> None:
        old = edit(rendered(cluster, h.name, state, KEEPALIVED_CONF))
        h.files[KEEPALIVED_CONF] = (sha(old), 0o600)
        h.contents[KEEPALIVED_CONF] = old

    return converged_but(cluster, state, dict.fromkeys(hosts, older))


def lb_changes(run: Run) -> list[tuple[str, str]]:
    return [(c.host, c.description) for c in run.result.changes if c.phase == "lb/keepalived"]


def test_a_live_front_rolls_one_lb_host_at_a_time_with_the_vip_owner_last(
    cluster: Cluster, state: StateDir
) -> None:
    """HAProxy and keepalived of one LB host change together, then the front must serve
    again before the next host; the VIP owner (cp1) comes last."""

    def older(h: FakeHost) -> None:
        for path in (KEEPALIVED_CONF, HAPROXY_CFG):
            old = rendered(cluster, h.name, state, path) + "# older\n"
            h.files[path] = (sha(old), 0o600 if path == KEEPALIVED_CONF else 0o644)
            h.contents[path] = old

    ts = converged_but(cluster, state, dict.fromkeys(LB, older))
    run = run_apply(cluster, state, ts)
    assert run.result.ok, run.result.failures
    lb = [(c.host, c.phase, c.description) for c in run.result.changes if c.phase.startswith("lb/")]
    assert lb == [
        (name, phase, what)
        for name in ("cp2", "cp3", "cp1")
        for phase, what in (
            ("lb/haproxy", f"write {HAPROXY_CFG}"),
            ("lb/haproxy", "reload haproxy"),
            ("lb/keepalived", f"write {KEEPALIVED_CONF}"),
            ("lb/keepalived", "reload keepalived"),
        )
    ]
    # Between two hosts the front was checked (one VIP holder) before the next host changed.
    cp3_first = next(i for i, c in enumerate(ts["cp3"].calls) if c.kind == "put")
    probes = [c for c in ts["cp3"].calls[:cp3_first] if "ip -o -4 addr show" in c.target]
    assert probes


def test_a_vrrp_incompatible_change_stops_every_lb_host_first_then_starts_them(
    cluster: Cluster, state: StateDir
) -> None:
    ts = stale_keepalived(
        cluster, state, lambda conf: conf.replace("vrrp_version 3", "vrrp_version 2")
    )
    run = run_apply(cluster, state, ts)
    assert run.result.ok, run.result.failures
    changes = lb_changes(run)
    stops = [i for i, (_h, what) in enumerate(changes) if what.startswith("stop keepalived")]
    writes = [i for i, (_h, what) in enumerate(changes) if what.startswith("write")]
    assert len(stops) == 3
    assert max(stops) < min(writes)  # nobody runs old and new side by side
    assert "VRRP version 2 → 3" in changes[stops[0]][1]
    assert [(h, w) for h, w in changes if w == "start keepalived"] == [
        ("cp2", "start keepalived"),
        ("cp3", "start keepalived"),
        ("cp1", "start keepalived"),
    ]


def test_a_roll_stops_when_the_front_does_not_settle(
    cluster: Cluster, state: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hakube.phases.lb.SETTLE_SECONDS", 0.2)
    ts = stale_keepalived(cluster, state, lambda conf: conf + "# older\n")
    ts["cp2"].rules.insert(0, (re.compile(r"ip -o -4 addr show .*"), Reply(exit_status=0)))
    run = run_apply(cluster, state, ts)  # cp1 and cp2 both claim the VIP after cp2's reload
    assert [(f.host, f.phase) for f in run.result.failures] == [("cp2", "lb/keepalived")]
    assert "held by 2 hosts" in run.result.failures[0].message
    assert not [c for c in ts["cp3"].calls if c.kind == "put"]
    assert not [c for c in ts["cp1"].calls if c.kind == "put"]


def with_facts(ts: dict[str, FakeHostTransport], name: str, h: FakeHost) -> None:
    """Make host `name` look like `h` (the read-only rules come first in every fake)."""
    ts[name].fake = h


def test_an_etcd_key_owned_by_root_is_chowned_and_only_that_member_restarts(
    cluster: Cluster, state: StateDir
) -> None:
    key = "/etc/etcd/pki/server.key"

    def root_owned(h: FakeHost) -> None:
        digest, mode, *_ = h.files[key]
        h.files[key] = (digest, mode, "root:root")  # etcd could not read its own key

    ts = converged_but(cluster, state, {"cp2": root_owned})
    run = run_apply(cluster, state, ts)
    assert run.result.ok, run.result.failures
    assert triples(run.result.changes) == [
        ("etcd", "cp2", f"chown etcd:etcd {key} (was root:root)"),
        ("etcd", "cp2", "restart etcd (certificates or config changed)"),
    ]
    # The content was right: no rewrite, just the owner.
    assert not [c for c in ts["cp2"].calls if c.kind == "put"]


def test_etcd_members_restart_one_at_a_time_each_healthy_before_the_next(
    cluster: Cluster, state: StateDir
) -> None:
    def old_config(h: FakeHost) -> None:
        h.files["/etc/default/etcd"] = (sha("ETCD_NAME=old\n"), 0o644)

    ts = converged_but(cluster, state, dict.fromkeys(LB, old_config))
    log: list[tuple[str, str]] = []
    for name, t in ts.items():
        original = t.run

        async def logged(command: str, _run: Any = original, _n: str = name, **kw: Any) -> Any:
            if "restart etcd" in command or "endpoint health" in command:
                log.append((_n, "restart" if "restart" in command else "health"))
            return await _run(command, **kw)

        t.run = logged  # type: ignore[method-assign]
    run = run_apply(cluster, state, ts)
    assert run.result.ok, run.result.failures
    rolled = log[: 2 * len(LB)]
    # restart, its health wait, then the next member: never two restarts in a row.
    assert [kind for _h, kind in rolled] == ["restart", "health"] * len(LB)
    assert {h for h, _k in rolled[::2]} == set(LB)
    assert all(rolled[i][0] == rolled[i + 1][0] for i in range(0, len(rolled), 2))


# --- (d) failed validation -----------------------------------------------------------------------

HAPROXY_ALERT = (
    "[NOTICE]   (4711) : haproxy version is 2.6.12-1+deb12u1\n"
    "[ALERT]    (4711) : config : parsing [/etc/haproxy/haproxy.cfg.hakube-new:31] : "
    "'server cp1' unknown keyword 'chek'.\n"
    "[ALERT]    (4711) : config : Fatal errors found in configuration.\n"
)


def test_failed_haproxy_validation_keeps_the_live_file_and_fails_that_host(
    cluster: Cluster, state: StateDir
) -> None:
    ts = make_transports(cluster, state)
    old = b"# the running config\n"
    ts["cp3"].files[HAPROXY_CFG] = FakeFile(old, 0o644, "root")
    ts["cp3"].fail_check("haproxy -c", Reply(stderr=HAPROXY_ALERT, exit_status=1))
    run = run_apply(cluster, state, ts)
    r = run.result
    assert not r.ok
    assert [(f.host, f.phase) for f in r.failures] == [("cp3", "lb/haproxy")]
    msg = r.failures[0].message
    assert msg.startswith(f"{HAPROXY_CFG}: the new file failed validation on the host")
    assert "exit 1" in msg
    assert "unknown keyword 'chek'" in msg
    assert "running config was left in place" in msg
    # Live file untouched, candidate removed, nothing moved or reloaded on cp3.
    cp3 = ts["cp3"]
    assert cp3.files[HAPROXY_CFG].content == old
    assert f"{HAPROXY_CFG}.hakube-new" not in cp3.files
    assert not [c for c in cp3.commands if "haproxy" in c and c.startswith("systemctl")]
    # The LB hosts before it in the rolling order finished the phase.
    done = {(e.phase, e.host) for e in run.events if e.kind is EventKind.HOST_DONE}
    assert {("lb/haproxy", "cp1"), ("lb/haproxy", "cp2")} <= done
    assert ("lb/haproxy", "cp3") not in done
    assert "lb/haproxy" not in r.phases_run
    assert r.phases_run[-1] == "runtime"
    failed = [e for e in run.events if e.kind is EventKind.HOST_FAILED]
    assert [(e.phase, e.host, e.message) for e in failed] == [("lb/haproxy", "cp3", msg)]


def test_failed_validation_on_the_first_lb_host_stops_the_rolling_phase(
    cluster: Cluster, state: StateDir
) -> None:
    # A live front (HAProxy running everywhere) whose config changes on every LB host.
    ts = make_transports(cluster, state, converged=True)
    for name in LB:
        h = converged_host(cluster, cluster.host(name), state)
        h.files[HAPROXY_CFG] = (sha("global\n"), 0o644)
        with_facts(ts, name, h)
    # cp1 holds the VIP, so the roll is cp2, cp3, cp1: the first one fails.
    ts["cp2"].fail_check("haproxy -c", Reply(stderr=HAPROXY_ALERT, exit_status=1))
    run = run_apply(cluster, state, ts)
    assert run.result.failures == [HostFailure("cp2", "lb/haproxy", run.result.failures[0].message)]
    for name in ("cp3", "cp1"):
        touched = [c for c in ts[name].calls[1:] if "haproxy" in c.target]
        assert touched == [], name


def test_a_first_install_sets_up_every_lb_host_at_once(cluster: Cluster, state: StateDir) -> None:
    """Nothing serves yet: a failure on one LB host does not keep the others from installing."""
    ts = make_transports(cluster, state)
    ts["cp1"].fail_check("haproxy -c", Reply(stderr=HAPROXY_ALERT, exit_status=1))
    run = run_apply(cluster, state, ts)
    assert [(f.host, f.phase) for f in run.result.failures] == [("cp1", "lb/haproxy")]
    for name in ("cp2", "cp3"):
        assert HAPROXY_CFG in ts[name].files, name


def test_failed_validation_in_a_parallel_phase_lets_the_other_hosts_finish(
    cluster: Cluster, state: StateDir
) -> None:
    ts = make_transports(cluster, state)
    ts["cp2"].fail_check(
        "containerd --config",
        Reply(
            stderr='containerd: failed to load TOML: (3, 1): unexpected token "]"\n', exit_status=1
        ),
    )
    run = run_apply(cluster, state, ts)
    r = run.result
    assert [(f.host, f.phase) for f in r.failures] == [("cp2", "runtime")]
    assert r.failures[0].message.startswith("/etc/containerd/config.toml: the new file failed")
    done = {e.host for e in run.events if e.kind is EventKind.HOST_DONE and e.phase == "runtime"}
    assert done == {"cp1", "cp3", "w1"}
    assert "runtime" not in r.phases_run


# --- (e) secrets ---------------------------------------------------------------------------------


def test_secrets_never_reach_events_or_the_state_logs(cluster: Cluster, state: StateDir) -> None:
    secrets = state.secrets()
    ts = make_transports(cluster, state)
    # keepalived -t quoting the offending line: the VRRP password would leak through stderr.
    ts["cp3"].fail_check(
        "keepalived -t",
        Reply(
            stderr=f"(Line 19) auth_pass {secrets.vrrp_password} unexpected\n",
            exit_status=1,
        ),
    )
    run = run_apply(cluster, state, ts)
    assert [(f.host, f.phase) for f in run.result.failures] == [("cp3", "lb/keepalived")]
    # Not vacuous: the password did come back from the host, and was masked on the way out.
    assert "auth_pass *** unexpected" in run.result.failures[0].message
    texts = [json.dumps(e.as_dict()) for e in run.events]
    texts += [f.message for f in run.result.failures]
    logs = sorted(state.path.glob("logs/*"))
    assert logs
    texts += [p.read_text() for p in logs]
    texts.append((state.path / "journal.json").read_text())
    for secret in secrets.values():
        for text in texts:
            assert secret not in text


def test_a_failed_dry_run_records_no_phase_as_done(cluster: Cluster, state: StateDir) -> None:
    """The journal is the record of what really ran: a dry run must never add to it."""
    ts = make_transports(cluster, state, read_only=True)
    ts["cp1"].rules.insert(
        0, (re.compile(r"systemctl is-active -q haproxy && want=0 .*"), Reply(exit_status=3))
    )
    run = run_apply(cluster, state, ts, dry_run=True)
    assert [(f.host, f.phase) for f in run.result.failures] == [("cp1", "lb/haproxy")]
    assert run.result.phases_run == ["preflight", "prepare", "packages", "runtime"]
    assert not (state.path / "journal.json").exists()


# --- (f) the state dir ---------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_dir_files_are_private(fresh_run: Run) -> None:
    root = fresh_run.state.path
    assert _mode(root) == 0o700
    assert _mode(root / "secrets.json") == 0o600
    assert _mode(root / "journal.json") == 0o600
    assert _mode(root / "logs") == 0o700
    logs = list((root / "logs").iterdir())
    assert len(logs) == 1
    assert _mode(logs[0]) == 0o600
    keys = sorted(root.glob("pki/**/*.key"))
    assert len(keys) >= 4  # etcd CA, healthcheck client, apiserver client, per-member keys
    for key in keys:
        assert _mode(key) == 0o600, key
    # Sub-directories rely on the 0700 state dir above them; none may be writable by others.
    for d in [p for p in root.rglob("*") if p.is_dir()]:
        assert _mode(d) & 0o022 == 0, d
    journal = json.loads((root / "journal.json").read_text())
    assert journal["done"] == fresh_run.result.phases_run
    assert journal["finished"] is True


# --- (g) phase selection -------------------------------------------------------------------------


def test_skip_kubeadm_skips_every_kubeadm_phase() -> None:
    run, skipped = select_phases(apply_phases(), skip=["kubeadm"])
    assert [p.name for p in skipped] == [
        "kubeadm/etcd-endpoints",
        "kubeadm/packages",
        "kubeadm/init",
        "kubeadm/join-control-planes",
        "kubeadm/join-workers",
    ]
    assert not [p for p in run if p.name.startswith("kubeadm")]
    assert [p.name for p in run][-2:] == ["cni", "verify"]


def test_only_lb_selects_the_lb_family_in_order() -> None:
    run, _ = select_phases(apply_phases(), only=["lb"])
    assert [p.name for p in run] == ["lb/haproxy", "lb/keepalived", "lb/vip"]
    run, _ = select_phases(apply_phases(), only=["lb"], skip=["lb/vip"])
    assert [p.name for p in run] == ["lb/haproxy", "lb/keepalived"]


def test_a_selector_is_not_a_name_prefix() -> None:
    # "lb/hap" must not select lb/haproxy: selectors are whole path segments.
    with pytest.raises(ValueError, match="unknown phase 'lb/hap'"):
        select_phases(apply_phases(), only=["lb/hap"])


def test_unknown_selector_raises_listing_the_phases(cluster: Cluster, state: StateDir) -> None:
    with pytest.raises(ValueError, match="unknown phase 'kubeadm/int'") as caught:
        select_phases(apply_phases(), skip=["kubeadm/int"])
    names = ", ".join(p.name for p in apply_phases())
    assert str(caught.value).endswith(f"phases are: {names}")
    # Through apply too, before any host is touched.
    ts = make_transports(cluster, state)
    with pytest.raises(ValueError, match="unknown phase 'etdc'"):
        run_apply(cluster, state, ts, skip=["etdc"])
    assert all(t.calls == [] for t in ts.values())


# --- (h) the lock --------------------------------------------------------------------------------


def test_a_second_apply_while_the_lock_is_held_raises(cluster: Cluster, state: StateDir) -> None:
    ts = make_transports(cluster, state)
    state.ensure()
    other_run = exclusive_lock(state.path / "lock", lambda: AssertionError("lock taken"))
    with other_run, pytest.raises(ApplyLocked, match="another hakube run holds"):
        run_apply(cluster, state, ts)
    assert all(t.calls == [] for t in ts.values())
    # Released: the next run goes ahead.
    assert run_apply(cluster, state, ts).result.ok


def lock_from_another_run(state: StateDir) -> BaseException | None:
    """Take and release the cluster lock as another run would (a thread has its own context):
    what it raised, or None."""

    def take() -> None:
        with cluster_lock(state):
            pass

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(take).exception()


def test_the_cluster_lock_is_reentrant_within_a_run_and_exclusive_across_runs(
    state: StateDir,
) -> None:
    with cluster_lock(state):
        with cluster_lock(state):  # a command holding it calls apply under it (reset --host)
            pass
        # Still held after the inner block: another run is refused.
        assert isinstance(lock_from_another_run(state), ApplyLocked)
    assert lock_from_another_run(state) is None


def test_a_run_after_a_failed_one_says_it_resumes_and_a_finished_one_does_not(
    cluster: Cluster, state: StateDir
) -> None:
    ts = make_transports(cluster, state)
    ts["cp3"].fail_check("haproxy -c", Reply(stderr=HAPROXY_ALERT, exit_status=1))
    assert not run_apply(cluster, state, ts).result.ok
    again = run_apply(cluster, state, make_transports(cluster, state, converged=True))
    resumes = [e.message for e in again.events if e.kind is EventKind.RESUME]
    assert resumes == ["the last run stopped early (last phase done: runtime); resuming"]
    assert again.result.ok
    third = run_apply(cluster, state, make_transports(cluster, state, converged=True))
    assert not [e for e in third.events if e.kind is EventKind.RESUME]
