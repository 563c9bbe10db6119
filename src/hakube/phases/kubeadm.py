"""Kubernetes phases driven through kubeadm: packages, init, joins.

hakube pre-generates the cluster CA (so the discovery CA hash is known before init), the
bootstrap token and the certificate key; kubeadm's output is still parsed and checked against
them, so a kubeadm that did something else is caught rather than trusted.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hakube.facts.host import HostFacts
from hakube.facts.kubeadm import KubeadmOutputError, parse_init_output
from hakube.fileio import write_private
from hakube.phases.base import Phase, PhaseError
from hakube.phases.context import Context
from hakube.pki.etcd import etcd_members
from hakube.pki.layout import as_rendered
from hakube.render.base import RenderedFile
from hakube.render.host import (
    APT_KEYRING,
    kubernetes_key_url,
    package_manager,
    render_kubernetes_repo,
)
from hakube.render.kubeadm import INIT_CONFIG, JOIN_CONFIG, first_control_plane, render_kubeadm
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, EtcdTopology, Host, PackageManager, Role
from hakube.transport.base import Transport

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"
KUBE_PACKAGES = ("kubelet", "kubeadm", "kubectl")
INIT_COMMAND = f"kubeadm init --config {INIT_CONFIG} --upload-certs"


class KubePackages(Phase):
    name = "kubeadm/packages"
    summary = "Kubernetes repository; kubelet, kubeadm, kubectl at the pinned version, held"

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.nodes

    def files(
        self, cluster: Cluster, host: Host, secrets: Secrets, facts: HostFacts | None = None
    ) -> list[RenderedFile]:
        return render_kubernetes_repo(cluster, host, facts.os_id if facts else None)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [(APT_KEYRING, 0o644)]

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.run.cluster
        f = ctx.facts[host]
        version = c.kubernetes.version
        if all(f.packages.get(p, "").startswith(version) for p in KUBE_PACKAGES):
            return
        repo_files = self.files_for(ctx, host)
        await ctx.do.ensure_files(host, repo_files)
        manager = package_manager(c, f.os_id)
        apt = manager is PackageManager.APT
        key_url = kubernetes_key_url(c, manager)
        if apt and key_url and APT_KEYRING not in f.files:
            # The repository file says signed-by=APT_KEYRING: without the key apt ignores it.
            # The key is data (dearmored into a keyring), never something that is executed.
            await ctx.do.sh(
                host,
                "fetch the Kubernetes repository signing key",
                f"mkdir -p {shlex.quote(str(Path(APT_KEYRING).parent))} && curl -fsSL --retry 3 "
                f"{shlex.quote(key_url)} | gpg --dearmor --yes -o {shlex.quote(APT_KEYRING)}",
            )
        repo = repo_files[0].content.strip().splitlines()[-1] if repo_files else "?"

        async def install(t: Transport) -> None:
            # Probing the repository needs the key and the list in place: part of the action.
            if apt:
                probe = "apt-get update -q >/dev/null 2>&1; apt-cache madison kubeadm"
            else:
                probe = "yum list --showduplicates kubeadm 2>/dev/null"
            res = await t.run(probe, check=False)
            if version not in res.stdout:
                raise PhaseError(
                    f"kubeadm {version} is not available on {host.name} from the Kubernetes "
                    f"repository ({repo}). This host cannot install kubelet/kubeadm/kubectl: "
                    "point packages.kubernetes_repository at a mirror it reaches, or copy "
                    "packages with packages.offline_dir; to build the rest of the cluster without "
                    "Kubernetes, run with --skip-phases kubeadm,cni"
                )
            await t.run(_install_command(apt, version))

        await ctx.do.change(
            host, f"install kubelet/kubeadm/kubectl {version} and hold them", install
        )
        await ctx.do.sh(host, "enable kubelet", "systemctl enable -q kubelet")


def _install_command(apt: bool, version: str) -> str:
    if apt:
        pins = " ".join(f"{p}={version}-*" for p in KUBE_PACKAGES)
        return (
            "export DEBIAN_FRONTEND=noninteractive; apt-mark unhold kubelet kubeadm kubectl "
            f">/dev/null; apt-get install -y -q --allow-change-held-packages {pins} && "
            "apt-mark hold kubelet kubeadm kubectl"
        )
    pins = " ".join(f"{p}-{version}" for p in KUBE_PACKAGES)
    return f"yum install -y --disableexcludes=kubernetes {pins}"


def _shared_pki(ctx: Context) -> list[RenderedFile]:
    files = as_rendered(ctx.run.cluster_pki().control_plane_files())
    if ctx.run.cluster.etcd.topology is EtcdTopology.EXTERNAL:
        files += as_rendered(
            ctx.run.state.etcd_pki(etcd_members(ctx.run.cluster)).control_plane_files()
        )
    return files


class KubeadmInit(Phase):
    name = "kubeadm/init"
    summary = "kubeadm init on the first control-plane node with the shared CA; fetch admin.conf"

    def targets(self, cluster: Cluster) -> list[Host]:
        return [first_control_plane(cluster)]

    def files(
        self, cluster: Cluster, host: Host, secrets: Secrets, facts: HostFacts | None = None
    ) -> list[RenderedFile]:
        return render_kubeadm(cluster, host, secrets)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [(ADMIN_CONF, 0o600)]

    async def run(self, ctx: Context, host: Host) -> None:
        if ADMIN_CONF in ctx.facts[host].files:
            await _fetch_admin_conf(ctx, host)
            return
        await ctx.do.ensure_files(host, _shared_pki(ctx))
        await ctx.do.ensure_files(host, self.files_for(ctx, host))
        expected_hash = ctx.run.cluster_pki().ca_cert_hash
        token = ctx.run.secrets.bootstrap_token

        async def init(t: Transport) -> None:
            res = await t.run(INIT_COMMAND, check=False, timeout=900)
            text = res.stdout + "\n" + res.stderr
            try:
                result = parse_init_output(text)
            except KubeadmOutputError as e:
                raise PhaseError(f"kubeadm init failed (exit {res.exit_status}): {e}") from None
            if result.ca_cert_hash != expected_hash or result.token != token:
                raise PhaseError(
                    "kubeadm init printed a CA hash or token other than the ones hakube "
                    "provided: the host had an older /etc/kubernetes; run `kubeadm reset` there "
                    "and re-apply"
                )

        await ctx.do.change(host, "kubeadm init --upload-certs", init)
        await _fetch_admin_conf(ctx, host)


async def _fetch_admin_conf(ctx: Context, host: Host) -> None:
    # A local write into the state dir: a dry run leaves the state dir as it is.
    if ctx.run.dry_run:
        return
    data = await ctx.facts.get(host, ADMIN_CONF)
    target = ctx.run.state.path / "admin.conf"
    if not target.exists() or target.read_bytes() != data:
        write_private(target, data)


class _Join(Phase):
    control_plane: bool

    def files(
        self, cluster: Cluster, host: Host, secrets: Secrets, facts: HostFacts | None = None
    ) -> list[RenderedFile]:
        return render_kubeadm(cluster, host, secrets)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [(KUBELET_CONF, 0o600)]

    async def run(self, ctx: Context, host: Host) -> None:
        if KUBELET_CONF in ctx.facts[host].files:
            return
        ca_hash = ctx.run.cluster_pki().ca_cert_hash
        if self.control_plane:
            await ctx.do.ensure_files(host, _shared_pki(ctx))
        files = render_kubeadm(ctx.run.cluster, host, ctx.run.secrets, ca_hash)
        await ctx.do.ensure_files(host, files)
        first = first_control_plane(ctx.run.cluster)
        token = shlex.quote(ctx.run.secrets.bootstrap_token)
        # The token hakube chose lives 24 h; re-create it (same value) when it has expired.
        await ctx.do.sh(
            first,
            "make sure the bootstrap token exists",
            f"kubeadm token list | grep -q ^{token.split('.')[0]} "
            f"|| kubeadm token create {token} --ttl 2h",
        )
        await ctx.do.sh(
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
