"""How day-2 commands reach a cluster's etcd: hakube's external members or kubeadm's stacked ones.

External etcd runs as hakube's `etcd` unit with certificates in /etc/etcd/pki and etcdctl on the
host. Stacked etcd is kubeadm's static pod on every control plane: certificates in
/etc/kubernetes/pki/etcd, its data dir a hostPath mounted at the same path in the pod, ports
fixed at 2379/2380, and often no etcdctl on the host. Commands for it use the host's etcdctl
(or etcdutl) when there is one and otherwise run the same tool inside the running etcd
container (`crictl exec`), as kubeadm's own documentation does; files a tool must read or
write (snapshots, restored data dirs) are placed under the data dir, which both see.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from hakube.facts.ops import EtcdClient
from hakube.pki.layout import ETCD_HOST_PKI_DIR
from hakube.render.etcd import etcdctl
from hakube.render.kubeadm import CONTAINERD_SOCKET, DOCKERSHIM_SOCKET
from hakube.spec.model import Cluster, EtcdTopology, Host, Runtime
from hakube.workflows.apiserver import move_aside, move_back, wait_gone

STACKED_PKI = "/etc/kubernetes/pki/etcd"
#: kubeadm's local etcd always listens on these; hakube's etcd ports apply to external etcd.
STACKED_CLIENT_PORT = 2379
STACKED_PEER_PORT = 2380
ETCD_MANIFEST = "etcd.yaml"

#: The tool's exit status when neither the host nor a running etcd container has it.
NO_TOOL = 127

# Runs as `sh -c TOOL etcd MODE ARGS...`: MODE `online` talks to a member (etcdctl), `offline`
# works on files (etcdutl where it exists: etcd 3.6 dropped `etcdctl snapshot status|restore`).
_TOOL = (
    "export ETCDCTL_API=3; m=$1; shift; "
    'if [ "$m" = offline ]; then names="etcdutl etcdctl"; else names=etcdctl; fi; '
    'for n in $names; do if command -v "$n" >/dev/null 2>&1; then exec "$n" "$@"; fi; done; '
    "c=$(crictl ps -q --name '^etcd$' --state running 2>/dev/null | head -n 1); "
    'if [ -z "$c" ]; then echo "no $names on this host and no running etcd container to run '
    f'it in" >&2; exit {NO_TOOL}; fi; '
    'for n in $names; do if crictl exec "$c" "$n" version >/dev/null 2>&1; then '
    'exec crictl exec "$c" "$n" "$@"; fi; done; '
    f'echo "the etcd container has no $names" >&2; exit {NO_TOOL}'
)


def etcd_tool(mode: str, cri: str | None = None) -> str:
    """`cri`: the container runtime's socket, for crictl (hakube writes no /etc/crictl.yaml)."""
    env = f"CONTAINER_RUNTIME_ENDPOINT={shlex.quote(cri)} " if cri else ""
    return f"{env}sh -c {shlex.quote(_TOOL)} etcd {mode}"


def stacked_etcdctl(cri: str, *args: str) -> str:
    """etcdctl against the local stacked member, with kubeadm's healthcheck client cert."""
    flags = (
        f"--endpoints=https://127.0.0.1:{STACKED_CLIENT_PORT} --cacert={STACKED_PKI}/ca.crt "
        f"--cert={STACKED_PKI}/healthcheck-client.crt "
        f"--key={STACKED_PKI}/healthcheck-client.key --dial-timeout=3s --command-timeout=5s"
    )
    return " ".join((etcd_tool("online", cri), flags, *args))


@dataclass(frozen=True)
class EtcdAccess:
    stacked: bool
    hosts: tuple[Host, ...]
    data_dir: str
    peer_port: int
    #: etcdctl against the member on the host it runs on; a subcommand is appended.
    ctl_prefix: str
    #: Where a snapshot is staged on a member (root only) so the tool can read it.
    staging: str
    #: The member's client API on the host it runs on, and the certificates that reach it.
    local: EtcdClient
    #: The container runtime's socket where the tool may have to run inside the etcd pod.
    cri: str | None = None

    def ctl(self, *args: str) -> str:
        return " ".join((self.ctl_prefix, *args))

    def offline(self, *args: str) -> str:
        """etcdutl (or an older etcdctl) for work on files: snapshot status and restore."""
        return " ".join((etcd_tool("offline", self.cri), *args))

    @property
    def what(self) -> str:
        return "kubeadm's stacked etcd" if self.stacked else "hakube's external etcd"

    def peer_url(self, host: Host) -> str:
        return f"https://{host.address}:{self.peer_port}"

    def initial_cluster(self) -> str:
        """Members by name and peer URL: hakube names external members after their host, and
        kubeadm names a stacked member after its node (hakube's node name is the host name)
        with the node's advertise address."""
        return ",".join(f"{h.name}={self.peer_url(h)}" for h in self.hosts)

    def restore_dir(self, stamp: str) -> str:
        """A fresh data dir the restore writes while etcd still runs: inside the data dir for
        the static pod (the only host path it sees), beside it for hakube's unit."""
        if self.stacked:
            return f"{self.data_dir}/hakube-restore-{stamp}"
        return f"{self.data_dir}.hakube-restore-{stamp}"

    def stop_etcd(self, aside: str) -> tuple[str, str]:
        """(description, shell) stopping the member and waiting until its process is gone."""
        if self.stacked:
            return (
                f"stop etcd (static pod: manifest moved to {aside})",
                f"{move_aside([ETCD_MANIFEST], aside)}; {wait_gone('etcd')}",
            )
        return "stop etcd", "systemctl stop etcd"

    def start_etcd(self, aside: str) -> tuple[str, str]:
        if self.stacked:
            return "start etcd (manifest put back)", move_back([ETCD_MANIFEST], aside)
        # --no-block: a member only reports ready once a quorum of its peers is up.
        return "start etcd", "systemctl start --no-block etcd"


def etcd_access(cluster: Cluster, *, kubernetes: bool) -> EtcdAccess | None:
    """How to reach the cluster's etcd; None for stacked etcd before `kubeadm init` ran."""
    if cluster.etcd.topology is EtcdTopology.EXTERNAL:
        return EtcdAccess(
            stacked=False,
            hosts=tuple(cluster.etcd_hosts),
            data_dir=cluster.etcd.data_dir,
            peer_port=cluster.etcd.peer_port,
            ctl_prefix=etcdctl(cluster).rstrip(),
            staging="/var/lib/hakube/snapshots",
            local=EtcdClient(
                f"https://127.0.0.1:{cluster.etcd.client_port}", str(ETCD_HOST_PKI_DIR)
            ),
        )
    if not kubernetes:
        return None
    docker = cluster.kubernetes.runtime is Runtime.DOCKER
    cri = DOCKERSHIM_SOCKET if docker else CONTAINERD_SOCKET
    return EtcdAccess(
        stacked=True,
        hosts=tuple(cluster.control_planes),
        data_dir=cluster.etcd.data_dir,
        peer_port=STACKED_PEER_PORT,
        ctl_prefix=stacked_etcdctl(cri),
        staging=cluster.etcd.data_dir,
        local=EtcdClient(f"https://127.0.0.1:{STACKED_CLIENT_PORT}", STACKED_PKI),
        cri=cri,
    )
