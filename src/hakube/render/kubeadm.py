"""kubeadm configuration files: init.yaml on the first control-plane node, join.yaml elsewhere.

Built as Python dicts and dumped with PyYAML: every value comes from the validated spec, so an
unset shell variable (the tutorial's `${P_SUBNET}`) cannot reach the file.
"""

from __future__ import annotations

from typing import Any

import yaml

from hakube.render.base import RenderedFile, Validation
from hakube.secrets import Secrets
from hakube.spec.model import (
    APISERVER_PORT,
    Cluster,
    EndpointMode,
    EtcdTopology,
    Host,
    KubeadmAPI,
    Role,
    Runtime,
)

KUBEADM_DIR = "/etc/hakube/kubeadm"
INIT_CONFIG = f"{KUBEADM_DIR}/init.yaml"
JOIN_CONFIG = f"{KUBEADM_DIR}/join.yaml"

#: Written into join.yaml while the CA does not exist yet (plan, dry-run). kubeadm rejects it,
#: and the file's validate command refuses it, so it can never be installed by mistake.
CA_HASH_PLACEHOLDER = "sha256:<filled-in-at-join>"

CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
DOCKERSHIM_SOCKET = "unix:///var/run/dockershim.sock"
ETCD_PKI = "/etc/kubernetes/pki"
TOKEN_GROUPS = ["system:bootstrappers:kubeadm:default-node-token"]


def first_control_plane(cluster: Cluster) -> Host:
    return cluster.control_planes[0]


def cert_sans(cluster: Cluster) -> list[str]:
    """Every name the apiserver is reached by; a missing one fails TLS only when it is used."""
    sans: list[str] = [cluster.api_name]
    ep = cluster.endpoint
    if ep.mode is EndpointMode.VIP and ep.vip is not None:
        sans.append(str(ep.vip))
    if ep.mode is EndpointMode.CLOUD_LB and ep.lb_address is not None:
        sans.append(str(ep.lb_address))
    sans.append("127.0.0.1")
    sans += [str(h.address) for h in cluster.control_planes]
    return list(dict.fromkeys(sans))


def _api_version(api: KubeadmAPI) -> str:
    return f"kubeadm.k8s.io/{api.value}"


def _args(api: KubeadmAPI, args: dict[str, str]) -> Any:
    """extraArgs: a map up to v1beta3, a list of {name, value} from v1beta4."""
    if api is KubeadmAPI.V1BETA4:
        return [{"name": k, "value": v} for k, v in args.items()]
    return dict(args)


def _kubelet_args(host: Host) -> dict[str, str]:
    args = {"node-ip": str(host.address)}
    if host.labels:
        # kubelet registers the Node with these labels (the spec refuses keys it would reject).
        args["node-labels"] = ",".join(f"{k}={v}" for k, v in sorted(host.labels.items()))
    return args


def _node_registration(cluster: Cluster, host: Host, api: KubeadmAPI) -> dict[str, Any]:
    docker = cluster.kubernetes.runtime is Runtime.DOCKER
    reg: dict[str, Any] = {
        "name": host.name,
        "criSocket": DOCKERSHIM_SOCKET if docker else CONTAINERD_SOCKET,
        # Without it kubelet picks the default-route address, wrong on multi-NIC hosts.
        "kubeletExtraArgs": _args(api, _kubelet_args(host)),
    }
    if host.has(Role.WORKER) and host.has(Role.CONTROL_PLANE):
        # An empty list (not an absent key) stops kubeadm adding its control-plane taint.
        reg["taints"] = []
    return reg


def _timeouts() -> dict[str, str]:
    return {
        "controlPlaneComponentHealthCheck": "4m0s",
        "discovery": "5m0s",
        "kubeletHealthCheck": "4m0s",
        "tlsBootstrap": "5m0s",
    }


def _etcd(cluster: Cluster) -> dict[str, Any]:
    e = cluster.etcd
    if e.topology is EtcdTopology.EXTERNAL:
        return {
            "external": {
                "endpoints": [f"https://{h.address}:{e.client_port}" for h in cluster.etcd_hosts],
                "caFile": f"{ETCD_PKI}/etcd/ca.crt",
                "certFile": f"{ETCD_PKI}/apiserver-etcd-client.crt",
                "keyFile": f"{ETCD_PKI}/apiserver-etcd-client.key",
            }
        }
    return {"local": {"dataDir": e.data_dir}}


def init_documents(cluster: Cluster, host: Host, secrets: Secrets) -> list[dict[str, Any]]:
    k = cluster.kubernetes
    api = k.kubeadm_api
    init: dict[str, Any] = {
        "apiVersion": _api_version(api),
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": secrets.bootstrap_token,
                "ttl": "24h0m0s",
                "groups": TOKEN_GROUPS,
                "usages": ["signing", "authentication"],
            }
        ],
        "certificateKey": secrets.certificate_key,
        "localAPIEndpoint": {"advertiseAddress": str(host.address), "bindPort": APISERVER_PORT},
        "nodeRegistration": _node_registration(cluster, host, api),
    }
    if api is KubeadmAPI.V1BETA4:
        init["timeouts"] = _timeouts()
    cluster_cfg: dict[str, Any] = {
        "apiVersion": _api_version(api),
        "kind": "ClusterConfiguration",
        "clusterName": cluster.name,
        "kubernetesVersion": f"v{k.version}",
        "imageRepository": k.image_repository,
        "controlPlaneEndpoint": cluster.control_plane_endpoint,
        "networking": {
            "podSubnet": str(cluster.network.pod_subnet),
            "serviceSubnet": str(cluster.network.service_subnet),
            "dnsDomain": k.dns_domain,
        },
        "apiServer": {"certSANs": cert_sans(cluster)},
        "etcd": _etcd(cluster),
    }
    kubelet: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Must match the runtime's cgroup driver (containerd SystemdCgroup, docker exec-opts).
        "cgroupDriver": "systemd",
    }
    return [init, cluster_cfg, kubelet]


def join_document(
    cluster: Cluster, host: Host, secrets: Secrets, ca_cert_hash: str | None
) -> dict[str, Any]:
    api = cluster.kubernetes.kubeadm_api
    doc: dict[str, Any] = {
        "apiVersion": _api_version(api),
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": cluster.control_plane_endpoint,
                "token": secrets.bootstrap_token,
                "caCertHashes": [ca_cert_hash or CA_HASH_PLACEHOLDER],
            }
        },
        "nodeRegistration": _node_registration(cluster, host, api),
    }
    if host.has(Role.CONTROL_PLANE):
        doc["controlPlane"] = {
            "localAPIEndpoint": {
                "advertiseAddress": str(host.address),
                "bindPort": APISERVER_PORT,
            },
            "certificateKey": secrets.certificate_key,
        }
    if api is KubeadmAPI.V1BETA4:
        doc["timeouts"] = _timeouts()
    return doc


def _dump(docs: list[dict[str, Any]]) -> str:
    head = "# Managed by hakube. Contains the bootstrap token and certificate key: keep 0600.\n"
    return head + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def _validate(cluster: Cluster, content: str) -> Validation | None:
    if CA_HASH_PLACEHOLDER in content:
        return Validation.refuse(CA_HASH_PLACEHOLDER)
    # `kubeadm config validate` exists from 1.26.
    if cluster.kubernetes.minor >= (1, 26):
        return Validation.run("kubeadm", "config", "validate", "--config")
    return None


def render_kubeadm(
    cluster: Cluster, host: Host, secrets: Secrets, ca_cert_hash: str | None = None
) -> list[RenderedFile]:
    """init.yaml for the first control-plane node, join.yaml for every other Kubernetes node.

    `ca_cert_hash` (``sha256:<hex>``) exists only once the cluster CA does; without it join.yaml
    carries `CA_HASH_PLACEHOLDER` and a validate command that refuses to install it.
    """
    if not (host.has(Role.CONTROL_PLANE) or host.has(Role.WORKER)):
        return []
    init = host.name == first_control_plane(cluster).name
    return [kubeadm_file(cluster, host, secrets, ca_cert_hash, init=init)]


def kubeadm_file(
    cluster: Cluster, host: Host, secrets: Secrets, ca_cert_hash: str | None, *, init: bool
) -> RenderedFile:
    """init.yaml or join.yaml for `host`, whichever host the cluster was initialised on."""
    if init:
        path, content = INIT_CONFIG, _dump(init_documents(cluster, host, secrets))
    else:
        path, content = JOIN_CONFIG, _dump([join_document(cluster, host, secrets, ca_cert_hash)])
    # kubeadm reads the file only when the apply layer runs `kubeadm init/join --config`.
    return RenderedFile(
        path=path,
        content=content,
        mode=0o600,
        secret=True,
        validate=_validate(cluster, content),
    )
