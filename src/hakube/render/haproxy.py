"""HAProxy in front of every kube-apiserver: on the LB hosts (mode vip) or on every node
(mode local-lb). Cloud-lb and none have no HAProxy."""

from __future__ import annotations

from hakube.render.base import RenderedFile, Validation, render_template
from hakube.secrets import Secrets
from hakube.spec.model import APISERVER_PORT, Cluster, EndpointMode, Host

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
STATS_SOCKET = "/run/haproxy/admin.sock"


def render_haproxy(cluster: Cluster, host: Host, secrets: Secrets) -> list[RenderedFile]:
    mode = cluster.endpoint.mode
    if mode not in (EndpointMode.VIP, EndpointMode.LOCAL_LB):
        return []
    if host.name not in {h.name for h in cluster.lb_hosts}:
        return []
    hp = cluster.endpoint.haproxy
    content = render_template(
        "haproxy.cfg.j2",
        cluster_name=cluster.name,
        host_name=host.name,
        local=mode is EndpointMode.LOCAL_LB,
        port=cluster.endpoint.port,
        # The settings as they are: the template reads the names the cluster file uses.
        hp=hp,
        servers=cluster.control_planes,
        apiserver_port=APISERVER_PORT,
        stats_password=secrets.stats_password if hp.stats_page else "",
    )
    return [
        RenderedFile(
            path=HAPROXY_CFG,
            content=content,
            # Only the stats page puts a password in the file.
            mode=0o600 if hp.stats_page else 0o644,
            secret=hp.stats_page,
            validate=Validation.run("haproxy", "-c", "-f"),
            reload="haproxy",
        )
    ]
