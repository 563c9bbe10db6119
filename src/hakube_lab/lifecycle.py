"""Bringing a lab up (image, mirror, bridge, hosts, SSH) and taking everything of it down."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hakube_lab import host as hostmod
from hakube_lab import network
from hakube_lab.addressing import (
    MIRROR_PORT,
    LabError,
    find_overlaps,
    link_prefix,
    netns_prefix,
    pick_subnet,
    validate_name,
)
from hakube_lab.clusterfile import render_cluster_file
from hakube_lab.image import ensure_image
from hakube_lab.mirror import ensure_mirror, start_server, stop_server
from hakube_lab.statefile import STATE_ROOT, lab_lock, read_state, shape_data, write_state
from hakube_lab.system import (
    ensure_host_limits,
    kill_pid,
    pids_with_cmdline,
    require_root,
    require_tools,
    run,
)

if TYPE_CHECKING:
    from hakube_lab.lab import Lab

Log = Callable[[str], None]


def quiet(_msg: str) -> None:
    pass


def up(lab: Lab, *, timeout: float, log: Log) -> float:
    """Build/reuse image and mirror, start every host, wait for SSH on all of them.

    Returns the seconds from starting the hosts until all answered SSH. Harmless on a lab that
    is already up.
    """
    require_root()
    require_tools()
    plan = lab.plan
    with lab_lock(lab.state_root, lab.name):
        _check_same_lab(lab)
        _check_subnet(lab)
        image = ensure_image(lab.cache_root, log)
        mirror = ensure_mirror(image, lab.cache_root, log)
        lab.state_dir.mkdir(parents=True, exist_ok=True)
        lab.state_dir.chmod(0o700)
        # Written first: after a crash, `down` finds what to remove from here.
        write_state(lab.state_file, plan, image, mirror)
        if not lab.key_file.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"hakube-lab-{lab.name}",
                 "-f", str(lab.key_file)])  # fmt: skip
        lab.key_file.chmod(0o600)
        network.ensure_bridge(plan.bridge, str(plan.bridge_ip), plan.subnet.prefixlen)
        link = lab.state_dir / "mirror"
        if not link.is_symlink() or link.resolve() != mirror:
            link.unlink(missing_ok=True)
            link.symlink_to(mirror)
        start_server(
            link, str(plan.bridge_ip), MIRROR_PORT,
            lab.state_dir / "mirror.pid", lab.state_dir / "mirror.log",
        )  # fmt: skip
        ensure_host_limits(log)
        t0 = time.monotonic()
        keys = {h.name: start_host(lab, image, h.name) for h in lab.hosts}
        _write_known_hosts(lab, keys)
        log(f"started {len(keys)} hosts, waiting for SSH")
        lab.wait_ssh(timeout=timeout)
        elapsed = time.monotonic() - t0
        lab.cluster_file.write_text(render_cluster_file(plan, lab.state_dir))
        return elapsed


def choose_subnet(name: str, state_root: Path = STATE_ROOT) -> str:
    """The subnet for `lab up --name NAME` without --subnet.

    A lab that exists keeps its own; a new one gets the first free /24 (see `pick_subnet`):
    not used by any other lab recorded here, nor by an address or route of this machine.
    """
    validate_name(name)
    labs: list[ipaddress.IPv4Network] = []
    for f in sorted(state_root.glob("*/state.json")):
        try:
            subnet = ipaddress.IPv4Network(read_state(f)["subnet"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a half-written or foreign file: `down` of that lab will clean it
        if f.parent.name == name:
            return str(subnet)
        labs.append(subnet)
    return pick_subnet(labs, network.routes(), network.addresses())


def image_of(lab: Lab) -> Path:
    """The image a lab that is up was started from."""
    if not lab.state_file.exists():
        raise LabError(f"lab {lab.name} is not up")
    return Path(read_state(lab.state_file)["image"])


def _check_same_lab(lab: Lab) -> None:
    if not lab.state_file.exists():
        return
    # Labs from before spares and endpoint modes existed.
    old = {"spares": 0, "endpoint_mode": "vip"} | read_state(lab.state_file)
    mine = shape_data(lab.plan)
    if all(old.get(k) == v for k, v in mine.items()):
        return
    running = [
        p.name
        for p in (lab.state_dir / "hosts").glob("*")
        if hostmod.is_running(hostmod.HostPaths(lab.name, p.name, p))
    ]
    if running or network.link_exists(lab.plan.bridge):
        raise LabError(
            f"lab {lab.name!r} already runs with a different shape "
            f"({old.get('control_planes')} control planes, {old.get('workers')} workers, "
            f"{old.get('spares', 0)} spares, endpoint mode {old.get('endpoint_mode')}, "
            f"{old.get('subnet')}); run `hakube lab down --name {lab.name}` first, "
            "or pick another --name"
        )


def _check_subnet(lab: Lab) -> None:
    clashes = find_overlaps(lab.plan.subnet, network.routes(), {lab.plan.bridge})
    if clashes:
        raise LabError(
            f"subnet {lab.plan.subnet} overlaps routes already on this machine: "
            + "; ".join(clashes)
            + ". Pick another one with --subnet (e.g. 10.124.0.0/24)"
        )


def _etc_hosts(lab: Lab) -> str:
    lines = ["127.0.0.1\tlocalhost", f"{lab.plan.bridge_ip}\tmirror.{lab.name}.lab"]
    lines += [f"{h.address}\t{h.name}" for h in lab.plan.hosts]
    return "\n".join(lines) + "\n"


def start_host(lab: Lab, image: Path, name: str) -> str:
    """Network, overlay and boot for one host (each step skipped when done); its SSH host key."""
    h = lab.host(name)
    paths = lab.paths(name)
    network.ensure_netns(h.netns)
    network.ensure_veth(h.veth, h.netns, lab.plan.bridge, h.address, lab.plan.subnet.prefixlen)
    network.set_link(h.veth, up=True)
    hostmod.mount_overlay(image, paths)
    key = hostmod.provision(
        paths,
        hostname=name,
        etc_hosts=_etc_hosts(lab),
        authorized_key=lab.key_file.with_suffix(".pub").read_text(),
        apt_source=f"deb [trusted=yes] {lab.plan.mirror_url} ./\n",
    )
    if not hostmod.is_running(paths):
        hostmod.boot(paths, hostname=name, netns=h.netns)
    return key


def _write_known_hosts(lab: Lab, keys: dict[str, str]) -> None:
    lines = []
    for h in lab.hosts:
        key_type, key_data = keys[h.name].split()[:2]
        lines.append(f"{h.address},{h.name} {key_type} {key_data}")
    lab.known_hosts.write_text("\n".join(lines) + "\n")


def destroy(name: str, state_root: Path = STATE_ROOT) -> list[str]:
    """Remove everything a lab of this name created, from its state or by scanning for names.

    Works with no state at all (after a crash) and is a no-op the second time. Returns what it
    removed, for the user.
    """
    require_root()
    validate_name(name)
    state_dir = state_root / name
    removed: list[str] = []
    with lab_lock(state_root, name):
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
