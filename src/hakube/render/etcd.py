"""External etcd member configuration (Debian's etcd-server reads /etc/default/etcd)."""

from __future__ import annotations

from hakube.pki.layout import ETCD_HOST_PKI_DIR
from hakube.render.base import RenderedFile
from hakube.spec.model import Cluster, Host

ETCD_ENV_FILE = "/etc/default/etcd"


def etcd_initial_cluster(cluster: Cluster) -> str:
    port = cluster.etcd.peer_port
    return ",".join(f"{h.name}=https://{h.address}:{port}" for h in cluster.etcd_hosts)


def client_endpoints(cluster: Cluster) -> list[str]:
    return [f"https://{h.address}:{cluster.etcd.client_port}" for h in cluster.etcd_hosts]


def render_etcd(cluster: Cluster, host: Host) -> list[RenderedFile]:
    if not cluster.is_etcd(host):
        return []
    e = cluster.etcd
    pki = ETCD_HOST_PKI_DIR
    ip = host.address
    env = {
        "ETCD_NAME": host.name,
        "ETCD_DATA_DIR": e.data_dir,
        "ETCD_LISTEN_PEER_URLS": f"https://{ip}:{e.peer_port}",
        "ETCD_LISTEN_CLIENT_URLS": f"https://{ip}:{e.client_port},https://127.0.0.1:{e.client_port}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"https://{ip}:{e.peer_port}",
        "ETCD_ADVERTISE_CLIENT_URLS": f"https://{ip}:{e.client_port}",
        "ETCD_INITIAL_CLUSTER": etcd_initial_cluster(cluster),
        # Only read on a member's first start; a member with data keeps its own view.
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": f"hakube-{cluster.name}",
        "ETCD_CERT_FILE": f"{pki}/server.crt",
        "ETCD_KEY_FILE": f"{pki}/server.key",
        "ETCD_TRUSTED_CA_FILE": f"{pki}/ca.crt",
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_PEER_CERT_FILE": f"{pki}/peer.crt",
        "ETCD_PEER_KEY_FILE": f"{pki}/peer.key",
        "ETCD_PEER_TRUSTED_CA_FILE": f"{pki}/ca.crt",
        "ETCD_PEER_CLIENT_CERT_AUTH": "true",
        "ETCD_AUTO_COMPACTION_RETENTION": "8",
        # Raft pre-vote (default from etcd 3.5, off in Debian's 3.4): a member that was cut off
        # campaigns on its own and raises its term; without pre-vote it forces a new election,
        # and the cluster loses its leader for seconds, the moment its link comes back.
        "ETCD_PRE_VOTE": "true",
    }
    body = "".join(f"{k}={v}\n" for k, v in env.items())
    header = "# Written by hakube: external etcd member of cluster " + cluster.name + "\n"
    return [RenderedFile(ETCD_ENV_FILE, header + body, mode=0o644, reload="etcd")]


def etcdctl(cluster: Cluster, *args: str, endpoints: str | None = None) -> str:
    """An etcdctl command line using the healthcheck client certificate."""
    pki = ETCD_HOST_PKI_DIR
    ep = endpoints or f"https://127.0.0.1:{cluster.etcd.client_port}"
    return (
        f"ETCDCTL_API=3 etcdctl --endpoints={ep} --cacert={pki}/ca.crt "
        f"--cert={pki}/healthcheck-client.crt --key={pki}/healthcheck-client.key "
        f"--dial-timeout=3s --command-timeout=5s " + " ".join(args)
    )
