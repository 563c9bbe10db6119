"""cni: the pod network (flannel or calico), applied once the first control plane answers."""

from __future__ import annotations

import shlex
from pathlib import Path

from hakube.phases.base import Phase
from hakube.phases.context import Context
from hakube.phases.kubeadm import KUBECTL, init_host
from hakube.render.cni import patch_manifest
from hakube.render.kubeadm import first_control_plane
from hakube.spec.model import Cluster, CNIPlugin, Host
from hakube.transport.base import Transport


class CNIPhase(Phase):
    """pod network (flannel or calico) with the cluster's real pod subnet"""

    name = "cni"
    needs = ("kubeadm/init",)

    def targets(self, cluster: Cluster) -> list[Host]:
        if cluster.kubernetes.cni.plugin is CNIPlugin.NONE:
            return []
        return [first_control_plane(cluster)]

    def hosts(self, ctx: Context) -> list[Host]:
        return [init_host(ctx)] if self.targets(ctx.run.cluster) else []

    async def run(self, ctx: Context, host: Host) -> None:
        cni = ctx.run.cluster.kubernetes.cni
        manifest = cni.resolved_manifest
        assert manifest is not None
        plugin = cni.plugin.value
        ds = "kube-flannel/kube-flannel-ds" if plugin == "flannel" else "kube-system/calico-node"
        ns, name = ds.split("/")
        res = await ctx.facts.read(host, f"{KUBECTL} -n {ns} get ds {name} -o name", check=False)
        if res.ok:
            return
        path = f"/etc/hakube/cni/{plugin}-{cni.resolved_version}.yaml"
        pod_subnet = str(ctx.run.cluster.network.pod_subnet)

        remote = manifest.startswith(("http://", "https://"))
        if remote:
            # Downloaded as data and patched here; nothing fetched is ever executed.
            await ctx.do.sh(
                host,
                f"download the {plugin} manifest ({manifest})",
                f"mkdir -p /etc/hakube/cni && curl -fsSL --retry 3 --max-time 60 -o {path}.orig "
                f"{shlex.quote(manifest)}",
            )

        async def upload(t: Transport) -> None:
            text = (await t.get(f"{path}.orig")).decode() if remote else Path(manifest).read_text()
            patched = patch_manifest(cni.plugin, text, pod_subnet)
            await t.put(path, patched.encode(), mode=0o644)

        await ctx.do.change(host, f"write {path} (pod subnet {pod_subnet})", upload)
        await ctx.do.sh(
            host, f"apply {plugin} {cni.resolved_version}", f"{KUBECTL} apply -f {path}"
        )
