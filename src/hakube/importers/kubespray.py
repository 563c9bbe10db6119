"""kubespray inventory (inventory.ini or hosts.yaml, with its group_vars/) → hakube cluster.

kubespray's groups: kube_control_plane (older: kube-master, kube_master), kube_node, etcd,
k8s_cluster (its children), calico_rr, bastion. Host addresses: `ip` (what kubespray binds the
services to), `access_ip` (how the others reach the host), `ansible_host` (what Ansible SSHes to).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hakube.importers import common
from hakube.importers.common import Imported, Notes
from hakube.importers.inventory import (
    Inventory,
    InventoryError,
    is_template,
    read_inventory,
    read_vars_file,
    resolve,
)

INVENTORY_FILES = (
    "inventory.ini",
    "hosts.yaml",
    "hosts.yml",
    "inventory.yaml",
    "inventory.yml",
    "hosts.ini",
)
CONTROL_PLANE_GROUPS = ("kube_control_plane", "kube-master", "kube_master", "kube-controlplane")
NODE_GROUPS = ("kube_node", "kube-node")
CLUSTER_GROUPS = ("k8s_cluster", "k8s-cluster")
#: group_vars read, lowest precedence first (Ansible: child groups override `all`).
VAR_GROUPS = ("all", *CLUSTER_GROUPS, *CONTROL_PLANE_GROUPS, "etcd")

#: Variables hakube reads; every other one found is listed as not used.
_HANDLED = {
    "kube_version",
    "kube_network_plugin",
    "kube_pods_subnet",
    "kube_service_addresses",
    "dns_domain",
    "cluster_name",
    "container_manager",
    "etcd_data_dir",
    "etcd_deployment_type",
    "etcd_kubeadm_enabled",
    "loadbalancer_apiserver",
    "apiserver_loadbalancer_domain_name",
    "loadbalancer_apiserver_localhost",
    "loadbalancer_apiserver_port",
    "kube_apiserver_port",
    "kube_image_repo",
}

#: Variables people set often that hakube does not carry over, and why.
_KNOWN_UNMAPPED = {
    "kube_proxy_mode": "hakube leaves kube-proxy in kubeadm's default mode (iptables)",
    "kube_network_node_prefix": "hakube keeps kubeadm's per-node pod CIDR size",
    "supplementary_addresses_in_ssl_keys": "hakube puts the API name, VIP/LB and host "
    "addresses in the apiserver certificate itself",
    "loadbalancer_apiserver_type": "hakube's balancer is always HAProxy",
    "kubeadm_certificate_key": "hakube generates its own certificate key (state directory)",
    "http_proxy": "hakube configures no proxy",
    "https_proxy": "hakube configures no proxy",
    "upstream_dns_servers": "hakube leaves CoreDNS at kubeadm's defaults",
    "enable_nodelocaldns": "hakube does not install NodeLocal DNSCache",
    "kube_network_plugin_multus": "hakube does not install Multus",
    "kube_encrypt_secret_data": "hakube does not configure encryption at rest",
}


def find_inventory(path: Path) -> Path:
    if path.is_dir():
        for name in INVENTORY_FILES:
            if (path / name).is_file():
                return path / name
        raise InventoryError(
            path,
            "no inventory file in this directory",
            f"expected one of {', '.join(INVENTORY_FILES)}, or pass the file itself",
        )
    if not path.is_file():
        raise InventoryError(path, "no such file or directory", "pass inventory.ini or its dir")
    return path


def _vars_files(base: Path, group: str) -> list[Path]:
    """Ansible's group_vars/<group>.yml and group_vars/<group>/*.yml."""
    out = [
        base / f"{group}{ext}" for ext in (".yml", ".yaml") if (base / f"{group}{ext}").is_file()
    ]
    if (base / group).is_dir():
        out += sorted(p for p in (base / group).iterdir() if p.suffix in (".yml", ".yaml"))
    return out


def _variables(inv: Inventory, inventory_dir: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for group in VAR_GROUPS:
        if group in inv.groups:
            merged.update(inv.groups[group].vars)
        for f in _vars_files(inventory_dir / "group_vars", group):
            merged.update(read_vars_file(f))
    return merged


def _hostvars(inv: Inventory, inventory_dir: Path, host: str) -> dict[str, Any]:
    hv = dict(inv.hosts[host])
    for f in _vars_files(inventory_dir / "host_vars", host):
        hv.update(read_vars_file(f))
    return hv


def _address(host: str, hv: dict[str, Any], src: Path, notes: Notes) -> tuple[str, str | None]:
    """(address, ssh_address or None): `ip` first, as kubespray binds services to it."""
    ip = common.ipv4(hv.get("ip"), src, f"host {host}: ip")
    access = common.ipv4(hv.get("access_ip"), src, f"host {host}: access_ip")
    ansible_host = hv.get("ansible_host", hv.get("ansible_ssh_host"))
    ssh = common.ipv4(ansible_host, src, f"host {host}: ansible_host")
    named = None
    if not (ip or access or ssh):
        try:
            named = common.ipv4(host, src, f"host {host}")
        except InventoryError:
            named = None
    address = ip or access or ssh or named
    if address is None:
        raise InventoryError(
            src,
            f"host {host!r} has no address (no ip, access_ip or ansible_host)",
            f"add ip=<address> (or ansible_host=<address>) to {host}'s line",
        )
    if access and ip and access != ip:
        notes.skip(
            f"{host} access_ip={access}",
            f"hakube uses one cluster address per host ({ip}, from ip)",
        )
    return address, ssh if ssh and ssh != address else None


def import_kubespray(path: Path, name: str | None = None) -> Imported:
    inv_file = find_inventory(path)
    inv = read_inventory(inv_file)
    inv_dir = inv_file.parent
    notes = Notes("kubespray", path)
    variables = _variables(inv, inv_dir)

    cp_group = inv.first_group(*CONTROL_PLANE_GROUPS)
    if cp_group is None or not inv.members(cp_group):
        raise InventoryError(
            inv_file,
            "no control-plane hosts: the group kube_control_plane is missing or empty",
            "list the control-plane hosts under [kube_control_plane] (three for HA)",
        )
    cps = inv.members(cp_group)
    node_group = inv.first_group(*NODE_GROUPS)
    nodes = inv.members(node_group) if node_group else []
    etcd = inv.members("etcd") if "etcd" in inv.groups else []

    roles: dict[str, list[str]] = {}
    for h in inv.hosts:
        r = common.roles_of(h, cps, nodes, etcd)
        if r:
            roles[h] = r
    notes.map(f"[{cp_group}] {', '.join(cps)}", "role control-plane")
    if nodes:
        notes.map(f"[{node_group}] {', '.join(nodes)}", "role worker")
    others = [h for h in inv.hosts if h not in roles]
    for group in ("calico_rr", "calico-rr", "bastion"):
        if inv.members(group) if group in inv.groups else []:
            notes.skip(f"[{group}]", "hakube has no such role; these hosts are left out")
    if others:
        notes.skip(", ".join(others), "in no kubernetes or etcd group; left out")

    names = {h: common.check_host_name(h, inv_file, f"from {inv_file.name}") for h in roles}
    connection = {k: val for k, val in variables.items() if k in common.SSH_VARS}
    hostvars = {h: {**connection, **_hostvars(inv, inv_dir, h)} for h in roles}
    hosts: list[dict[str, Any]] = []
    for h, host_roles in roles.items():
        address, ssh_address = _address(h, hostvars[h], inv_file, notes)
        entry: dict[str, Any] = {"name": names[h], "address": address, "roles": host_roles}
        if ssh_address:
            entry["ssh_address"] = ssh_address
        hosts.append(entry)
    notes.map("ip (else access_ip, else ansible_host)", "hosts[].address")
    if any("ssh_address" in e for e in hosts):
        notes.map("ansible_host where it differs from ip", "hosts[].ssh_address")

    ssh, overrides = common.ssh_settings({h: hostvars[h] for h in roles}, names, notes)
    for entry in hosts:
        if entry["name"] in overrides:
            entry["ssh"] = overrides[entry["name"]]

    doc = common.new_doc(name or common.cluster_name(inv_dir.name))
    if ssh:
        doc["ssh"] = ssh
    doc["hosts"] = hosts
    doc["endpoint"] = _endpoint(variables, len(cps), inv_file, notes)
    doc |= common.cluster_sections(
        common.Settings(
            version=("kube_version", variables.get("kube_version")),
            runtime=("container_manager", variables.get("container_manager")),
            cni=("kube_network_plugin", variables.get("kube_network_plugin")),
            dns_domain=(
                "dns_domain",
                resolve(variables.get("dns_domain", "{{ common.cluster_name }}"), variables),
            ),
            pod_subnet=("kube_pods_subnet", variables.get("kube_pods_subnet")),
            service_subnet=("kube_service_addresses", variables.get("kube_service_addresses")),
        ),
        notes,
    )
    repo = variables.get("kube_image_repo")
    if isinstance(repo, str) and not is_template(repo):
        doc["kubernetes"]["image_repository"] = repo
        notes.map(f"kube_image_repo={repo}", "kubernetes.image_repository")
    elif repo is not None:
        notes.skip(f"kube_image_repo={repo}", "a template; set kubernetes.image_repository")
    doc["etcd"] = _etcd(variables, cps, etcd, names, notes)

    common.note_the_rest(variables, _HANDLED, _KNOWN_UNMAPPED, "kube_apiserver_port", notes)
    return Imported(doc, notes)


def _endpoint(v: dict[str, Any], n_cp: int, src: Path, notes: Notes) -> dict[str, Any]:
    lb = v.get("loadbalancer_apiserver")
    domain = v.get("apiserver_loadbalancer_domain_name")
    if n_cp == 1:
        notes.skip("apiserver load balancing", "one control-plane node: endpoint.mode none")
        return {"mode": "none"}
    if isinstance(lb, dict) and lb.get("address"):
        address = common.ipv4(lb.get("address"), src, "loadbalancer_apiserver.address")
        port = common.port_number(lb.get("port", 6443), src, "loadbalancer_apiserver.port")
        notes.map(
            f"loadbalancer_apiserver {address}:{port}",
            "endpoint.mode cloud-lb (lb_address, lb_port); if it is a keepalived VIP you ran "
            "yourself, hakube can run it: endpoint.mode vip",
        )
        out: dict[str, Any] = {"mode": "cloud-lb", "lb_address": address, "lb_port": port}
        if isinstance(domain, str) and not is_template(domain):
            out["name"] = domain
            notes.map(f"apiserver_loadbalancer_domain_name={domain}", "endpoint.name")
        return out
    port = common.port_number(
        v.get("loadbalancer_apiserver_port", 6443), src, "loadbalancer_apiserver_port"
    )
    localhost = v.get("loadbalancer_apiserver_localhost", True)
    notes.map(
        f"loadbalancer_apiserver_localhost={localhost}",
        "endpoint.mode local-lb (HAProxy on 127.0.0.1 on every host, control planes too)",
    )
    return {
        "mode": "local-lb",
        "port": common.balanced_port(port, True, "loadbalancer_apiserver_port", notes),
    }


def _etcd(
    v: dict[str, Any], cps: list[str], etcd: list[str], names: dict[str, str], notes: Notes
) -> dict[str, Any]:
    kubeadm = str(v.get("etcd_kubeadm_enabled", "false")).lower() == "true" or (
        v.get("etcd_deployment_type") == "kubeadm"
    )
    out: dict[str, Any] = {}
    if kubeadm and (not etcd or set(etcd) == set(cps)):
        out["topology"] = "stacked"
        notes.map("etcd deployed by kubeadm", "etcd.topology stacked")
    else:
        out["topology"] = "external"
        notes.map(
            "[etcd] (etcd as a host service, kubespray's default)",
            "etcd.topology external (hakube-managed etcd on those hosts)",
        )
        if etcd and set(etcd) != set(cps):
            out["hosts"] = [names[h] for h in etcd]
    data_dir = v.get("etcd_data_dir")
    if isinstance(data_dir, str) and not is_template(data_dir):
        out["data_dir"] = data_dir
        notes.map(f"etcd_data_dir={data_dir}", "etcd.data_dir")
    return out
