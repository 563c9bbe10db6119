"""kubeconfig: the admin kubeconfig pointed at the HA endpoint, written 0600 or merged into
~/.kube/config as a context named after the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hakube.fileio import write_private
from hakube.phases.kubeadm import ADMIN_CONF
from hakube.spec.model import APISERVER_PORT, Cluster, EndpointMode
from hakube.state import StateDir
from hakube.workflows.ops import OpsError, OpsInputError, known_cluster, require_reachable, session

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hakube.workflows.ops import Reach

DEFAULT_KUBECONFIG = Path("~/.kube/config")


@dataclass(frozen=True)
class KubeconfigResult:
    path: str
    server: str
    context: str
    merged: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def external_server(cluster: Cluster) -> tuple[str, str]:
    """The API URL as seen from outside the nodes, and a note when it is not HA."""
    ep = cluster.endpoint
    if ep.mode is EndpointMode.VIP and ep.vip is not None:
        return f"https://{ep.vip}:{ep.port}", ""
    if ep.mode is EndpointMode.CLOUD_LB and ep.lb_address is not None:
        return f"https://{ep.lb_address}:{ep.lb_port}", ""
    if ep.name:
        return f"https://{ep.name}:{cluster.endpoint_port}", ""
    first = cluster.control_planes[0]
    return (
        f"https://{first.address}:{APISERVER_PORT}",
        f"endpoint mode {ep.mode.value} has no address outside the nodes: the kubeconfig "
        f"points at {first.name}'s apiserver directly (not highly available)",
    )


def _load(data: bytes, source: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise OpsError(f"{source} is not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not doc.get("clusters") or not doc.get("users"):
        raise OpsError(f"{source} is not a kubeconfig (no clusters/users)")
    return doc


def _existing(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_bytes())
    except yaml.YAMLError as e:
        raise OpsInputError(f"{path} is not valid YAML ({e}); fix or move it first") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise OpsInputError(f"{path} is not a kubeconfig (not a mapping); fix or move it first")
    return doc


def rewrite(admin: dict[str, Any], name: str, server: str) -> dict[str, Any]:
    """admin.conf with one cluster, user and context, all named after the cluster."""
    cluster = dict(admin["clusters"][0]["cluster"])
    cluster["server"] = server
    user = admin["users"][0]["user"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": f"{name}-admin", "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
        "preferences": {},
    }


def merge(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Replace entries with our names, keep every other; current-context only if unset."""
    out = dict(existing)
    for key in ("clusters", "users", "contexts"):
        mine = ours[key]
        names = {e["name"] for e in mine}
        out[key] = [e for e in existing.get(key) or [] if e.get("name") not in names] + mine
    out.setdefault("apiVersion", "v1")
    out.setdefault("kind", "Config")
    if not out.get("current-context"):
        out["current-context"] = ours["current-context"]
    return out


async def admin_conf(cluster: Cluster, state: StateDir, **reach: Unpack[Reach]) -> bytes:
    """admin.conf from the state dir (apply fetched it), else from the init host."""
    local = state.path / "admin.conf"
    if local.exists():
        return local.read_bytes()
    view = known_cluster(cluster, state)
    async with session(cluster, state, **reach) as (ctx, errors):
        require_reachable(errors, [view.init_host])
        try:
            return await ctx.facts.get(view.init_host, ADMIN_CONF)
        except Exception as e:
            raise OpsError(
                f"no admin kubeconfig: {local} is missing and {view.init_host.name} has no "
                f"{ADMIN_CONF} ({e}); has `hakube apply` run its kubeadm phases?"
            ) from None


async def write_kubeconfig(
    cluster: Cluster,
    state: StateDir,
    *,
    out: Path | None,
    merge_into: Path | None,
    **reach: Unpack[Reach],
) -> KubeconfigResult:
    data = await admin_conf(cluster, state, **reach)
    server, note = external_server(cluster)
    ours = rewrite(_load(data, "admin.conf"), cluster.name, server)
    if merge_into is not None:
        target = merge_into.expanduser()
        existing = _existing(target)
        doc = merge(existing, ours)
    else:
        target = (out or Path(f"{cluster.name}.kubeconfig")).expanduser()
        doc = ours
    write_private(target, yaml.safe_dump(doc, sort_keys=False).encode())
    return KubeconfigResult(str(target), server, cluster.name, merge_into is not None, note)
