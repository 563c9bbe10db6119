"""Kubernetes phases driven through kubeadm: packages, init, joins, CNI.

hakube pre-generates the cluster CA (so the discovery CA hash is known before init), the
bootstrap token and the certificate key; kubeadm's output is still parsed and checked against
them, so a kubeadm that did something else is caught rather than trusted.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hakube.facts.kubeadm import KubeadmOutputError, parse_init_output
from hakube.phases.base import Change, Phase, PhaseError
from hakube.phases.context import APT_GET, Context, Timeout
from hakube.phases.etcd import as_rendered, members
from hakube.phases.files import RenderedPhase, files_for
from hakube.pki.layout import KUBERNETES_PKI_DIR
from hakube.record import KUBE_PACKAGES, upstream_version, version_problems
from hakube.render.base import RenderedFile
from hakube.render.cni import patch_manifest
from hakube.render.host import APT_KEYRING, kubernetes_key_url, package_manager
from hakube.render.kubeadm import INIT_CONFIG, JOIN_CONFIG, first_control_plane
from hakube.spec.model import Cluster, CNIPlugin, EtcdTopology, Host, Role
from hakube.state import write_private

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"


def _nodes(cluster: Cluster) -> list[Host]:
    return [h for h in cluster.hosts if h.has(Role.CONTROL_PLANE) or h.has(Role.WORKER)]


class KubePackages(RenderedPhase):
    name = "kubeadm/packages"
    summary = "Kubernetes repository; kubelet, kubeadm, kubectl at the pinned version, held"

    def targets(self, cluster: Cluster) -> list[Host]:
        return _nodes(cluster)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [(APT_KEYRING, 0o644)]

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.cluster
        f = ctx.facts[host.name]
        version = c.kubernetes.version
        installed = {p: upstream_version(f.packages[p]) for p in KUBE_PACKAGES if p in f.packages}
        other = {p: v for p, v in installed.items() if v != version}
        if other:
            # Never install a newer (or older) kubelet under a running node.
            raise PhaseError(
                "; ".join(version_problems(version, {p: f.packages[p] for p in other}))
            )
        if len(installed) == len(KUBE_PACKAGES):
            if not set(KUBE_PACKAGES) <= f.held:
                held = " ".join(KUBE_PACKAGES)
                await ctx.sh(host, "hold kubelet/kubeadm/kubectl", f"apt-mark hold {held}")
                f.held.update(KUBE_PACKAGES)
            return
        repo_files = files_for(
            self.name, c, host, ctx.secrets, os_family=f.os_id, os_codename=f.os_codename
        )
        await ctx.ensure_files(host, repo_files)
        if ctx.dry_run:
            await ctx.sh(host, f"install kubelet/kubeadm/kubectl {version} and hold them", ":")
            return
        manager = package_manager(c, f.os_id)
        key_url = kubernetes_key_url(c, manager)
        if key_url and APT_KEYRING not in f.files:
            # The repository file says signed-by=APT_KEYRING: without the key apt ignores it.
            # The key is data (dearmored into a keyring), never something that is executed.
            await ctx.sh(
                host,
                "fetch the Kubernetes repository signing key",
                f"mkdir -p {shlex.quote(str(Path(APT_KEYRING).parent))} && curl -fsSL --retry 3 "
                f"--max-time 60 {shlex.quote(key_url)} | gpg --dearmor --yes -o "
                f"{shlex.quote(APT_KEYRING)}",
            )
        probe = f"{APT_GET} update -q >/dev/null 2>&1; apt-cache madison kubeadm"
        res = await ctx.read(host, probe, check=False, timeout=Timeout.INSTALL)
        # madison prints "kubeadm | 1.30.1-1.1 | <repo>": match the upstream version exactly.
        offered = {upstream_version(line.split("|")[1].strip()) for line in
                   res.stdout.splitlines() if line.count("|") >= 2}  # fmt: skip
        if version not in offered:
            repo = repo_files[0].content.strip().splitlines()[-1] if repo_files else "?"
            raise PhaseError(
                f"kubeadm {version} is not available on {host.name} from the Kubernetes "
                f"repository ({repo}). This host cannot install kubelet/kubeadm/kubectl: point "
                "packages.kubernetes_repository at a mirror it reaches; to build the rest of the "
                "cluster without Kubernetes, run with --skip-phases kubeadm,cni"
            )
        pins = " ".join(f"{p}={version}-*" for p in KUBE_PACKAGES)
        names = " ".join(KUBE_PACKAGES)
        cmd = (
            f"export DEBIAN_FRONTEND=noninteractive; {APT_GET} install -y -q {pins} && "
            f"apt-mark hold {names} >/dev/null && "
            f"dpkg-query -W -f='${{Package}} ${{Version}}\\n' {names}"
        )

        async def install() -> None:
            out = await ctx.t(host).run(cmd, timeout=Timeout.INSTALL)
            versions = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
            ctx.remember(lambda r: r.installed(host.name, versions))

        await ctx.change(host, f"install kubelet/kubeadm/kubectl {version} and hold them", install)
        await ctx.sh(host, "enable kubelet", "systemctl enable -q kubelet")


def shared_pki_paths(cluster: Cluster) -> list[tuple[str, int]]:
    """Where `_shared_pki` puts the CA material on a control-plane node (for facts and plan)."""
    root = KUBERNETES_PKI_DIR
    out = [(str(root / "ca.crt"), 0o644), (str(root / "ca.key"), 0o600)]
    out += [(str(root / "front-proxy-ca.crt"), 0o644), (str(root / "front-proxy-ca.key"), 0o600)]
    out += [(str(root / "sa.key"), 0o600), (str(root / "sa.pub"), 0o644)]
    if cluster.etcd.topology is EtcdTopology.EXTERNAL:
        out += [(str(root / "etcd" / "ca.crt"), 0o644)]
        out += [(str(root / "apiserver-etcd-client.crt"), 0o644)]
        out += [(str(root / "apiserver-etcd-client.key"), 0o600)]
    return out


def _shared_pki(ctx: Context) -> list[RenderedFile]:
    files = as_rendered(ctx.state.cluster_pki().control_plane_files())
    if ctx.cluster.etcd.topology is EtcdTopology.EXTERNAL:
        files += as_rendered(ctx.state.etcd_pki(members(ctx.cluster)).control_plane_files())
    return files


class KubeadmInit(RenderedPhase):
    name = "kubeadm/init"
    summary = "kubeadm init on the first control-plane node with the shared CA; fetch admin.conf"
    made_on_host = (ADMIN_CONF,)

    def targets(self, cluster: Cluster) -> list[Host]:
        return [first_control_plane(cluster)]

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [*shared_pki_paths(cluster), (ADMIN_CONF, 0o600)]

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.cluster
        if ADMIN_CONF in ctx.facts[host.name].files:
            await _fetch_admin_conf(ctx, host)
            return
        await ctx.ensure_files(host, _shared_pki(ctx))
        await ctx.ensure_files(host, files_for(self.name, c, host, ctx.secrets))
        if ctx.dry_run:
            await ctx.sh(host, "kubeadm init --upload-certs", ":")
            return
        res = await ctx.t(host).run(
            f"kubeadm init --config {INIT_CONFIG} --upload-certs", check=False, timeout=900
        )
        text = res.stdout + "\n" + res.stderr
        try:
            result = parse_init_output(text)
        except KubeadmOutputError as e:
            raise PhaseError(f"kubeadm init failed (exit {res.exit_status}): {e}") from None
        expected = ctx.state.cluster_pki().ca_cert_hash
        if result.ca_cert_hash != expected or result.token != ctx.secrets.bootstrap_token:
            raise PhaseError(
                "kubeadm init printed a CA hash or token other than the ones hakube provided: "
                "the host had an older /etc/kubernetes; run `kubeadm reset` there and re-apply"
            )
        ctx.changes.append(Change(self.name, host.name, "kubeadm init --upload-certs", True))
        await _fetch_admin_conf(ctx, host)


async def _fetch_admin_conf(ctx: Context, host: Host) -> None:
    if ctx.dry_run:
        return
    data = await ctx.t(host).get(ADMIN_CONF)
    target = ctx.state.path / "admin.conf"
    if not target.exists() or target.read_bytes() != data:
        write_private(target, data)


class _Join(RenderedPhase):
    control_plane: bool
    made_on_host = (KUBELET_CONF,)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        pki = shared_pki_paths(cluster) if self.control_plane else []
        return [*pki, (KUBELET_CONF, 0o600)]

    async def run(self, ctx: Context, host: Host) -> None:
        if KUBELET_CONF in ctx.facts[host.name].files:
            return
        pki = ctx.state.cluster_pki()
        if self.control_plane:
            await ctx.ensure_files(host, _shared_pki(ctx))
        files = files_for(self.name, ctx.cluster, host, ctx.secrets, ca_cert_hash=pki.ca_cert_hash)
        await ctx.ensure_files(host, files)
        first = first_control_plane(ctx.cluster)
        token = shlex.quote(ctx.secrets.bootstrap_token)
        # The token hakube chose lives 24 h; re-create it (same value) when it has expired.
        await ctx.sh(
            first,
            "make sure the bootstrap token exists",
            f"kubeadm token list | grep -q ^{token.split('.')[0]} "
            f"|| kubeadm token create {token} --ttl 2h",
        )
        await ctx.sh(
            host,
            "kubeadm join" + (" --control-plane" if self.control_plane else ""),
            f"kubeadm join --config {JOIN_CONFIG}",
        )


class JoinControlPlanes(_Join):
    name = "kubeadm/join-control-planes"
    summary = "join the other control-plane nodes, one at a time (etcd/quorum safe)"
    serial = True
    control_plane = True

    def targets(self, cluster: Cluster) -> list[Host]:
        first = first_control_plane(cluster)
        return [h for h in cluster.control_planes if h.name != first.name]


class JoinWorkers(_Join):
    name = "kubeadm/join-workers"
    summary = "join the workers in parallel"
    control_plane = False

    def targets(self, cluster: Cluster) -> list[Host]:
        return [h for h in cluster.workers if not h.has(Role.CONTROL_PLANE)]


class CNIPhase(Phase):
    name = "cni"
    summary = "pod network (flannel or calico) with the cluster's real pod subnet"

    def targets(self, cluster: Cluster) -> list[Host]:
        if cluster.kubernetes.cni.plugin is CNIPlugin.NONE:
            return []
        return [first_control_plane(cluster)]

    async def run(self, ctx: Context, host: Host) -> None:
        cni = ctx.cluster.kubernetes.cni
        manifest = cni.resolved_manifest
        assert manifest is not None
        plugin = cni.plugin.value
        ds = "kube-flannel/kube-flannel-ds" if plugin == "flannel" else "kube-system/calico-node"
        ns, name = ds.split("/")
        res = await ctx.read(host, f"{KUBECTL} -n {ns} get ds {name} -o name", check=False)
        if res.ok:
            return
        path = f"/etc/hakube/cni/{plugin}-{cni.resolved_version}.yaml"
        if ctx.dry_run:
            await ctx.sh(host, f"apply {plugin} {cni.resolved_version}", ":")
            return
        if manifest.startswith(("http://", "https://")):
            # Downloaded as data and patched here; nothing fetched is ever executed.
            await ctx.t(host).run(
                f"mkdir -p /etc/hakube/cni && curl -fsSL --retry 3 -o {path}.orig "
                f"{shlex.quote(manifest)}",
                timeout=120,
            )
            text = (await ctx.t(host).get(f"{path}.orig")).decode()
        else:
            text = Path(manifest).read_text()
        patched = patch_manifest(cni.plugin, text, str(ctx.cluster.network.pod_subnet))
        await ctx.t(host).put(path, patched.encode(), mode=0o644)
        await ctx.sh(host, f"apply {plugin} {cni.resolved_version}", f"{KUBECTL} apply -f {path}")
