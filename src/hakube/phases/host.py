"""Host phases: preflight checks, OS preparation, package repositories, container runtime."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from hakube.facts.host import HOST_ID_PATH, POLICY_RC
from hakube.phases.base import Phase, PhaseError, RenderInput
from hakube.phases.context import APT_GET, Context
from hakube.record import version_problems
from hakube.render.base import RenderedFile
from hakube.render.host import (
    apply_block,
    hosts_block,
    remove_swap,
    render_kernel,
    render_mirror_repo,
    render_runtime,
)
from hakube.spec.model import APISERVER_PORT, Cluster, EndpointMode, Host, Role, Runtime

#: What hakube converges: apt-based Debian and Ubuntu. Red Hat family hosts are refused rather
#: than half-supported (their package names, paths and keepalived versions differ).
SUPPORTED_OS = {"debian", "ubuntu"}

#: Kernel modules Kubernetes networking needs (also written to modules-load.d).
KERNEL_MODULES = ("overlay", "br_netfilter")


class Preflight(Phase):
    """check cluster identity, OS (Debian/Ubuntu), CPUs, memory, unique MAC/product_uuid, VIP
    interface, ports, time sync, installed Kubernetes version"""

    name = "preflight"

    async def run(self, ctx: Context, host: Host) -> None:
        problems = check_host(ctx, host)
        if problems:
            raise PhaseError("preflight failed:\n" + "\n".join(f"  - {p}" for p in problems))


def check_host(ctx: Context, host: Host) -> list[str]:
    """Every preflight problem of one host, all at once."""
    c = ctx.run.cluster
    f = ctx.facts[host]
    problems: list[str] = []
    if f.package_family == "yum":
        problems.append(
            f"{f.os.name!r} is a Red Hat family system: this hakube converges "
            "Debian and Ubuntu hosts only (apt); use one of those for this host"
        )
    elif not f.os.ids & SUPPORTED_OS:
        problems.append(f"unsupported OS {f.os.name!r}: use Debian or Ubuntu")
    kube = any(s.startswith("kubeadm") for s in ctx.run.selected)
    if kube and (host.has(Role.CONTROL_PLANE) or host.has(Role.WORKER)):
        problems.extend(version_problems(c.kubernetes.version, f.packages))
    if kube and c.is_control_plane(host):
        if f.cpus < 2:
            problems.append(f"{f.cpus} CPU: kubeadm needs at least 2 on a control-plane node")
        if f.mem_mb < 1700:
            problems.append(f"{f.mem_mb} MB of memory: kubeadm needs at least 1700 MB")
    others = [h for h in c.hosts if h.name != host.name and h.name in ctx.facts]
    # In containers the DMI uuid and often the MACs come from the machine under them.
    if not f.container:
        for other in others:
            o = ctx.facts[other.name]
            if f.product_uuid and f.product_uuid == o.product_uuid:
                problems.append(
                    f"product_uuid {f.product_uuid} is also {other.name}'s: cloned VMs confuse "
                    "kubelet; regenerate the machine's UUID"
                )
            dup = set(f.macs.values()) & set(o.macs.values()) - {"00:00:00:00:00:00"}
            if dup:
                problems.append(f"MAC {', '.join(sorted(dup))} is also on {other.name}")
    if c.endpoint.mode is EndpointMode.VIP and c.is_lb(host):
        iface = c.interface_of(host)
        if iface not in f.macs and iface not in f.addresses:
            problems.append(
                f"interface {iface!r} (for the VIP) does not exist; it has "
                f"{', '.join(sorted(f.macs)) or 'none'}: set hosts[].interface or "
                "endpoint.interface"
            )
        if f.has_address(str(host.address)) is None:
            problems.append(f"address {host.address} is not configured on any interface")
    problems.extend(_port_problems(ctx, host))
    if f.time_synced is False and not f.container:
        problems.append("the clock is not NTP-synchronised: TLS and etcd need agreeing clocks")
    return problems


def _port_problems(ctx: Context, host: Host) -> list[str]:
    c = ctx.run.cluster
    f = ctx.facts[host]
    wanted: dict[int, str] = {}
    if c.is_lb(host) and "lb/haproxy" in ctx.run.selected:
        wanted[c.endpoint.port] = "haproxy"
    if c.is_etcd(host) and "etcd" in ctx.run.selected:
        wanted[c.etcd.client_port] = "etcd"
        wanted[c.etcd.peer_port] = "etcd"
    kube_first_time = "kubeadm/init" in ctx.run.selected and "kubelet" not in f.packages
    if kube_first_time and c.is_control_plane(host):
        for port in (APISERVER_PORT, 10250, 10257, 10259):
            wanted[port] = "kubelet"
    out = []
    for port, owner in sorted(wanted.items()):
        if port in f.listening and not f.unit(owner).running:
            out.append(
                f"port {port} is in use by something other than {owner}: free it, or choose "
                "another port in the cluster file"
            )
    return out


class Prepare(Phase):
    """cluster id, hostname, /etc/hosts block, swap off (and in fstab), SELinux, firewalld, sysctl;
    a policy-rc.d left by a killed install is put back"""

    name = "prepare"

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return render_kernel(on.cluster, on.host)

    async def run(self, ctx: Context, host: Host) -> None:
        f = ctx.facts[host]
        q = shlex.quote
        await repair_policy_rc(ctx, host)
        rec = ctx.run.record
        if rec is not None and f.cluster_id != rec.cluster_id:
            content = (rec.cluster_id + "\n").encode()
            await ctx.do.put(host, f"write {HOST_ID_PATH}", HOST_ID_PATH, content, 0o644)
            f.cluster_id = rec.cluster_id
        if f.hostname != host.name:
            await ctx.do.sh(
                host,
                f"set hostname {host.name} (was {f.hostname})",
                f"hostnamectl set-hostname {q(host.name)} 2>/dev/null || "
                f"(echo {q(host.name)} > /etc/hostname && hostname {q(host.name)})",
            )
        new_hosts = apply_block(f.etc_hosts, hosts_block(ctx.run.cluster, host))
        if new_hosts.rstrip() != f.etc_hosts.rstrip():
            await ctx.do.put(
                host,
                "update the hakube block in /etc/hosts",
                "/etc/hosts",
                new_hosts.encode(),
                0o644,
            )
            f.etc_hosts = new_hosts
        if f.active_swaps:
            await ctx.do.sh(host, f"swapoff ({', '.join(f.active_swaps)})", "swapoff -a")
        new_fstab = remove_swap(f.fstab)
        if new_fstab.rstrip() != f.fstab.rstrip():
            await ctx.do.put(
                host, "comment out swap in /etc/fstab", "/etc/fstab", new_fstab.encode(), 0o644
            )
        if f.selinux == "Enforcing":
            await ctx.do.sh(
                host,
                "SELinux permissive (now and in /etc/selinux/config)",
                "setenforce 0; sed -i 's/^SELINUX=enforcing/SELINUX=permissive/' "
                "/etc/selinux/config",
            )
        if f.unit("firewalld").running:
            await ctx.do.sh(host, "stop and disable firewalld", "systemctl disable --now firewalld")
        changed = await ctx.do.ensure_files(host, self.files_for(ctx, host))
        if not f.container:
            missing = [m for m in KERNEL_MODULES if m not in f.modules]
            if missing:
                await ctx.do.sh(
                    host, f"load {' '.join(missing)}", f"modprobe -a {' '.join(missing)}"
                )
        wanted = _wanted_sysctls(ctx, host)
        stale = {k: v for k, v in wanted.items() if f.sysctl.get(k) != v}
        if changed or stale:
            # Only network keys are per-namespace (writable in a container); others would fail.
            keys = [k for k in stale if not f.container or k.startswith("net.")]
            if keys:
                cmd = " && ".join(f"sysctl -qw {q(k)}={q(wanted[k])}" for k in keys)
                await ctx.do.sh(host, f"set {', '.join(keys)}", cmd)


def remember(ctx: Context, host: Host) -> Callable[[dict[str, str]], None]:
    """Record the versions the package manager reports for what it installed on `host`."""
    return lambda versions: ctx.run.remember(lambda r: r.installed(host.name, versions))


async def repair_policy_rc(ctx: Context, host: Host) -> None:
    """A killed install (SIGKILL, power loss) cannot run its trap: put the old file back here."""
    f = ctx.facts[host]
    if not f.policy_rc_left and not f.policy_rc_saved:
        return
    q = shlex.quote
    newest = f.policy_rc_saved[0] if f.policy_rc_saved else ""
    steps = []
    if f.policy_rc_left:
        # An empty copy means there was no policy-rc.d before the install.
        steps.append(
            f"if [ -s {q(newest)} ]; then cp -p {q(newest)} {POLICY_RC}; else rm -f {POLICY_RC}; fi"
            if newest
            else f"rm -f {POLICY_RC}"
        )
    steps += [f"rm -f {q(p)}" for p in f.policy_rc_saved]
    what = "put back the policy-rc.d" if f.policy_rc_left else "remove stale policy-rc.d copies"
    await ctx.do.sh(host, f"{what} a killed install left behind", " && ".join(steps))
    f.policy_rc_left = False
    f.policy_rc_saved = []


def _wanted_sysctls(ctx: Context, host: Host) -> dict[str, str]:
    f = ctx.facts[host]
    out = {"net.ipv4.ip_forward": "1"}
    if "br_netfilter" in f.modules:
        out["net.bridge.bridge-nf-call-iptables"] = "1"
        out["net.bridge.bridge-nf-call-ip6tables"] = "1"
    if ctx.run.cluster.is_lb(host) and ctx.run.cluster.endpoint.mode is EndpointMode.VIP:
        out["net.ipv4.ip_nonlocal_bind"] = "1"
    return out


class PackagesPhase(Phase):
    """the OS package mirror (packages.repository) on every host; base tools and every package the
    selected phases need, in one apt transaction, service packages held"""

    name = "packages"

    def files(self, on: RenderInput) -> list[RenderedFile]:
        if on.facts is None:
            return render_mirror_repo(on.cluster, on.host)
        return render_mirror_repo(on.cluster, on.host, on.facts.os.id, on.facts.os.codename)

    async def run(self, ctx: Context, host: Host) -> None:
        f = ctx.facts[host]
        if not f.package_family:
            raise PhaseError(f"no known package manager on {f.os.name!r}")
        written = await ctx.do.ensure_files(host, self.files_for(ctx, host))
        if written.package_sources:
            await ctx.do.sh(host, "refresh package lists", f"{APT_GET} update -q")
        # Everything the selected phases need on this host, in one apt transaction.
        wanted = ["curl", "ca-certificates", *ctx.run.wanted_packages.get(host.name, [])]
        await ctx.do.ensure_packages(host, list(dict.fromkeys(wanted)), remember(ctx, host))


class RuntimePhase(Phase):
    """containerd (SystemdCgroup, sandbox image) installed, configured and running"""

    name = "runtime"
    needs = ("packages",)

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.nodes

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return render_runtime(on.cluster, on.host)

    def packages(self, cluster: Cluster, host: Host) -> list[str]:
        return ["docker.io"] if cluster.kubernetes.runtime is Runtime.DOCKER else ["containerd"]

    async def run(self, ctx: Context, host: Host) -> None:
        unit = "docker" if ctx.run.cluster.kubernetes.runtime is Runtime.DOCKER else "containerd"
        await ctx.do.ensure_packages(host, self.packages(ctx.run.cluster, host))
        written = await ctx.do.ensure_files(host, self.files_for(ctx, host))
        if unit in written.units:
            await ctx.do.reload_units(host, {unit})
        await ctx.do.ensure_running(host, unit)
