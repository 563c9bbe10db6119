"""External etcd: the control planes that already run follow the etcd members after a change.

kubeadm writes the etcd endpoint list once, at init or join: into the kubeadm-config ConfigMap
(ClusterConfiguration ``etcd.external.endpoints``) and into each control plane's
kube-apiserver manifest (``--etcd-servers``). When etcd hosts are added or removed, nothing
updates them: the survivors keep talking to a removed member (and lose etcd altogether once
every listed member is gone), and a control plane that joins later copies the stale list from
the ConfigMap. This phase rewrites the ConfigMap's list and then each joined control plane's
manifest, one host at a time: the kubelet restarts that apiserver, and the next host waits until
it runs with the new list, answers /readyz and every HAProxy lists it UP again.

It runs before the etcd members change: a leaving member is dropped from every list before
`remove/hosts` removes it (a removed member that still runs answers "unhealthy", and an apiserver
asking it would report not ready), and a new member is listed before it starts (the etcd client
skips an endpoint that refuses, until it answers). New control planes join after both, with the
ConfigMap's new list.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import yaml

from hakube.phases.base import Phase, PhaseError
from hakube.phases.context import Context, Timeout
from hakube.phases.kubeadm import APISERVER_MANIFEST, KUBECTL, init_host
from hakube.phases.lb import settle
from hakube.record import ClusterRecord
from hakube.render.etcd import client_endpoints
from hakube.spec.model import Cluster, EtcdTopology, Host
from hakube.transport.base import TransportError
from hakube.workflows.apiserver import readyz_wait

FLAG = "--etcd-servers="
#: The merge patch for kubeadm-config is sent as a file: the ClusterConfiguration is too long
#: and too full of quotes for a command line.
PATCH_FILE = "/etc/hakube/kubeadm-config-etcd.patch.json"
GET_CLUSTER_CONFIGURATION = (
    f"{KUBECTL} -n kube-system get configmap kubeadm-config "
    "-o jsonpath='{.data.ClusterConfiguration}'"
)
#: How long one apiserver may take to come back with the new list.
RESTART_SECONDS = 180


def with_endpoints(cluster_configuration: str, endpoints: list[str]) -> str | None:
    """The ClusterConfiguration text with these etcd endpoints; None when it has them already."""
    doc = yaml.safe_load(cluster_configuration)
    external = doc.get("etcd", {}).get("external") if isinstance(doc, dict) else None
    if not isinstance(external, dict):
        raise PhaseError(
            "the kubeadm-config ConfigMap has no etcd.external section, but the cluster file "
            "says external etcd: the cluster was set up with stacked etcd; put "
            "`etcd: {topology: stacked}` back in the file"
        )
    if external.get("endpoints") == endpoints:
        return None
    external["endpoints"] = endpoints
    return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def with_etcd_servers(manifest: str, servers: str) -> str | None:
    """The manifest with `--etcd-servers=servers`; None when it has it already. Only that one
    line changes, so everything kubeadm or an operator put in the manifest stays."""
    lines = manifest.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if line.lstrip().startswith(f"- {FLAG}")]
    if len(found) != 1:
        raise PhaseError(
            f"{APISERVER_MANIFEST} has {len(found)} {FLAG} arguments, expected one: fix the "
            "manifest by hand (kubeadm writes exactly one), then re-run"
        )
    i = found[0]
    line = lines[i]
    indent = line[: len(line) - len(line.lstrip())]
    new = f"{indent}- {FLAG}{servers}\n"
    if line.rstrip("\n") == new.rstrip("\n"):
        return None
    lines[i] = new
    return "".join(lines)


def restarted_with(servers: str) -> str:
    """Waits until the kube-apiserver process runs with exactly this list and answers /readyz."""
    arg = shlex.quote(f"{FLAG}{servers}")
    runs_with = (
        "( for p in $(pgrep -x kube-apiserver); do "
        f"tr '\\0' '\\n' < /proc/$p/cmdline 2>/dev/null | grep -qxF -- {arg} && exit 0; "
        "done; exit 1 )"
    )
    return readyz_wait(RESTART_SECONDS, first=runs_with)


class EtcdEndpoints(Phase):
    """external etcd: kubeadm-config's etcd endpoints and each joined control plane's
    kube-apiserver --etcd-servers follow the etcd members, one control plane at a time"""

    name = "kubeadm/etcd-endpoints"
    serial = True

    def __init__(self) -> None:
        self._config_done = False

    def targets(self, cluster: Cluster) -> list[Host]:
        if cluster.etcd.topology is not EtcdTopology.EXTERNAL:
            return []
        return cluster.control_planes

    def hosts(self, ctx: Context) -> list[Host]:
        """Control planes that already run an apiserver (recorded), when the list they were
        last given is not the file's (or not known); joining ones take the list from the
        ConfigMap when they join."""
        rec = ctx.run.record
        if rec is None or rec.init_host is None:
            return []
        if rec.etcd_endpoints == client_endpoints(ctx.run.cluster):
            return []
        joined = {n for n, role in rec.nodes.items() if role == "control-plane"}
        joined.add(rec.init_host)
        return [h for h in self.targets(ctx.run.cluster) if h.name in joined]

    async def run(self, ctx: Context, host: Host) -> None:
        endpoints = client_endpoints(ctx.run.cluster)
        if not self._config_done:
            await self._cluster_configuration(ctx, endpoints)
            self._config_done = True
        servers = ",".join(endpoints)
        try:
            manifest = (await ctx.facts.get(host, APISERVER_MANIFEST)).decode()
        except TransportError:
            raise PhaseError(
                f"{host.name} is a joined control plane but has no {APISERVER_MANIFEST}: its "
                "control plane is not running; restore it (or remove the host), then re-run"
            ) from None
        new = with_etcd_servers(manifest, servers)
        if new is None:
            return
        await ctx.do.put(
            host,
            f"kube-apiserver --etcd-servers={servers} (the kubelet restarts the apiserver)",
            APISERVER_MANIFEST,
            new.encode(),
            0o600,
        )
        if ctx.run.dry_run:
            return
        res = await ctx.facts.read(
            host, restarted_with(servers), check=False, timeout=RESTART_SECONDS + Timeout.READ
        )
        if not res.ok:
            raise PhaseError(
                f"the kube-apiserver on {host.name} did not come back with --etcd-servers="
                f"{servers} and /readyz ok within {RESTART_SECONDS} s; see `crictl ps -a` and "
                "`journalctl -u kubelet` there. The control planes not yet updated keep their "
                "old list"
            )
        await settle(ctx, host)

    async def finish(self, ctx: Context) -> None:
        endpoints = client_endpoints(ctx.run.cluster)

        def update(r: ClusterRecord) -> None:
            r.etcd_endpoints = endpoints

        ctx.run.remember(update)

    async def _cluster_configuration(self, ctx: Context, endpoints: list[str]) -> None:
        admin = init_host(ctx)
        res = await ctx.facts.read(admin, GET_CLUSTER_CONFIGURATION, check=False)
        if not res.ok or not res.stdout.strip():
            raise PhaseError(
                f"cannot read the kubeadm-config ConfigMap through {admin.name} "
                f"({res.stderr.strip() or 'empty'}): check the API server, then re-run"
            )
        new = with_endpoints(res.stdout, endpoints)
        if new is None:
            return
        patch: dict[str, Any] = {"data": {"ClusterConfiguration": new}}
        await ctx.do.put(
            admin,
            f"write {PATCH_FILE}",
            PATCH_FILE,
            json.dumps(patch).encode(),
            0o600,
        )
        await ctx.do.sh(
            admin,
            f"kubeadm-config: etcd endpoints {', '.join(endpoints)}",
            f"{KUBECTL} -n kube-system patch configmap kubeadm-config --type merge "
            f'-p "$(cat {PATCH_FILE})" >/dev/null && rm -f {PATCH_FILE}',
        )
