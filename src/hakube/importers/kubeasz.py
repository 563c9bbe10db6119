"""kubeasz `hosts` file (clusters/<name>/hosts, INI) → hakube cluster.

kubeasz's groups: etcd, kube_master, kube_node, ex_lb, harbor, chrony (2.x spelled them
kube-master, kube-node, ex-lb). Hosts are IP addresses; node names come from `k8s_nodename`
(3.x) when set. Settings live in `[all:vars]`; the Kubernetes version lives in config.yml next to
the hosts file (`K8S_VER`), read when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hakube.importers import common
from hakube.importers.common import Imported, Notes
from hakube.importers.inventory import InventoryError, is_template, read_ini, read_vars_file

MASTER_GROUPS = ("kube_master", "kube-master")
NODE_GROUPS = ("kube_node", "kube-node")
LB_GROUPS = ("ex_lb", "ex-lb")

_HANDLED = {
    "CONTAINER_RUNTIME",
    "CLUSTER_NETWORK",
    "SERVICE_CIDR",
    "CLUSTER_CIDR",
    "CLUSTER_DNS_DOMAIN",
    "SECURE_PORT",
    "k8s_nodename",
}
_KNOWN_UNMAPPED = {
    "PROXY_MODE": "hakube leaves kube-proxy in kubeadm's default mode (iptables)",
    "NODE_PORT_RANGE": "hakube keeps the apiserver's default NodePort range (30000-32767)",
    "bin_dir": "hakube installs the distribution packages (kubeadm, kubelet) instead of binaries",
    "ca_dir": "kubeadm keeps certificates in /etc/kubernetes/pki",
}


def _node_name(ip: str, hv: dict[str, Any], prefix: str, src: Path, notes: Notes) -> str:
    # NODE_NAME (kubeasz 2.x) names the etcd member, not the node: it is not used here.
    given = str(hv.get("k8s_nodename", "")).strip()
    if given:
        return common.check_host_name(given, src, f"k8s_nodename of {ip}")
    return f"{prefix}-{ip.replace('.', '-')}"


def import_kubeasz(path: Path, name: str | None = None) -> Imported:
    if path.is_dir():
        path = path / "hosts"
    if not path.is_file():
        raise InventoryError(path, "no such file", "pass kubeasz's clusters/<name>/hosts file")
    inv = read_ini(path)
    notes = Notes("kubeasz", path)
    gvars = inv.groups["all"].vars if "all" in inv.groups else {}

    master_group = inv.first_group(*MASTER_GROUPS)
    masters = inv.members(master_group) if master_group else []
    if not masters:
        raise InventoryError(
            path,
            "no master hosts: the group kube_master is missing or empty",
            "list the masters' addresses under [kube_master] (three for HA)",
        )
    node_group = inv.first_group(*NODE_GROUPS)
    nodes = inv.members(node_group) if node_group else []
    etcd = inv.members("etcd") if "etcd" in inv.groups else []
    lb_group = inv.first_group(*LB_GROUPS)
    lbs = inv.members(lb_group) if lb_group else []

    members = [h for h in inv.hosts if h in {*masters, *nodes, *etcd, *lbs}]
    for h in members:
        common.ipv4(h, path, f"host {h!r} (kubeasz names hosts by address)")
    names: dict[str, str] = {}
    roles: dict[str, list[str]] = {}
    for h in members:
        r = common.roles_of(h, masters, nodes, etcd, lbs)
        prefix = (
            "master" if h in masters else "node" if h in nodes else "etcd" if h in etcd else "lb"
        )
        names[h] = _node_name(h, inv.hosts[h], prefix, path, notes)
        roles[h] = r
    notes.map(f"[{master_group}] {', '.join(masters)}", "role control-plane")
    if nodes:
        notes.map(f"[{node_group}] {', '.join(nodes)}", "role worker")
    notes.map("host addresses", "hosts[].address")
    notes.map("k8s_nodename (else <role>-<address with dashes>)", "hosts[].name")
    for group in ("harbor", "chrony"):
        if inv.members(group) if group in inv.groups else []:
            notes.skip(f"[{group}]", "hakube installs no such service; these hosts are left out")

    # Ansible applies [all:vars] connection settings to every host unless the host overrides them.
    connection = {k: v for k, v in gvars.items() if k in common.SSH_VARS}
    ssh, overrides = common.ssh_settings(
        {h: {**connection, **inv.hosts[h]} for h in members}, names, notes
    )
    hosts: list[dict[str, Any]] = []
    for h in members:
        entry: dict[str, Any] = {"name": names[h], "address": h, "roles": roles[h]}
        if names[h] in overrides:
            entry["ssh"] = overrides[names[h]]
        hosts.append(entry)

    doc = common.new_doc(name or common.cluster_name(path.parent.name))
    if ssh:
        doc["ssh"] = ssh
    doc["hosts"] = hosts
    doc["endpoint"] = _endpoint(inv.hosts, masters, (lb_group, lbs), gvars, path, notes)
    doc |= common.cluster_sections(
        common.Settings(
            version=("K8S_VER (config.yml)", _config_version(path)),
            runtime=("CONTAINER_RUNTIME", gvars.get("CONTAINER_RUNTIME")),
            cni=("CLUSTER_NETWORK", gvars.get("CLUSTER_NETWORK")),
            dns_domain=("CLUSTER_DNS_DOMAIN", gvars.get("CLUSTER_DNS_DOMAIN")),
            pod_subnet=("CLUSTER_CIDR", gvars.get("CLUSTER_CIDR")),
            service_subnet=("SERVICE_CIDR", gvars.get("SERVICE_CIDR")),
        ),
        notes,
    )
    etcd_doc: dict[str, Any] = {"topology": "external"}
    notes.map("[etcd] (etcd as a host service)", "etcd.topology external (hakube-managed etcd)")
    if etcd and set(etcd) != set(masters):
        etcd_doc["hosts"] = [names[h] for h in etcd]
    elif not etcd:
        notes.skip("[etcd]", "empty; hakube runs etcd on the control-plane nodes")
    doc["etcd"] = etcd_doc

    common.note_the_rest(gvars, _HANDLED, _KNOWN_UNMAPPED, "SECURE_PORT", notes)
    return Imported(doc, notes)


def _endpoint(
    hostvars: dict[str, dict[str, Any]],
    masters: list[str],
    lb: tuple[str | None, list[str]],
    gvars: dict[str, Any],
    src: Path,
    notes: Notes,
) -> dict[str, Any]:
    lb_group, lbs = lb
    if lbs:
        vips = {hostvars[h].get("EX_APISERVER_VIP") for h in lbs}
        ports = {hostvars[h].get("EX_APISERVER_PORT", "8443") for h in lbs}
        if len(vips) != 1 or len(ports) != 1:
            raise InventoryError(
                src,
                "the [ex_lb] hosts disagree on EX_APISERVER_VIP or EX_APISERVER_PORT",
                "give every [ex_lb] host the same EX_APISERVER_VIP and EX_APISERVER_PORT",
            )
        vip = common.ipv4(vips.pop(), src, "EX_APISERVER_VIP")
        if vip is None:
            raise InventoryError(
                src, "[ex_lb] hosts have no EX_APISERVER_VIP", "add EX_APISERVER_VIP=<address>"
            )
        port = common.port_number(ports.pop(), src, "EX_APISERVER_PORT")
        notes.map(
            f"[{lb_group}] EX_APISERVER_VIP={vip}", "endpoint.mode vip, endpoint.vip, role lb"
        )
        notes.skip(
            "LB_ROLE (master/backup)",
            "hakube orders VRRP priorities itself, in host order, highest first",
        )
        notes.skip(
            "the VIP's interface",
            "not in the hosts file; hakube's default eth0 is used: set endpoint.interface",
        )
        on_masters = any(h in masters for h in lbs)
        return {
            "mode": "vip",
            "vip": vip,
            "port": common.balanced_port(port, on_masters, "EX_APISERVER_PORT", notes),
        }
    if len(masters) == 1:
        notes.skip("apiserver load balancing", "one master: endpoint.mode none")
        return {"mode": "none"}
    notes.map(
        "no [ex_lb]: kubeasz's kube-lb on every node",
        "endpoint.mode local-lb (HAProxy on 127.0.0.1 on every host, masters too)",
    )
    port = common.port_number(gvars.get("SECURE_PORT", 6443), src, "SECURE_PORT")
    return {"mode": "local-lb", "port": common.balanced_port(port, True, "kube-lb port", notes)}


def _config_version(hosts: Path) -> Any:
    """K8S_VER from kubeasz's config.yml beside the hosts file (after `ezctl new`), if any."""
    config = hosts.parent / "config.yml"
    if not config.is_file():
        return None
    version = read_vars_file(config).get("K8S_VER")
    return None if is_template(version) or version == "__k8s_ver__" else version
