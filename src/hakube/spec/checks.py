"""Cross-field checks: the mistakes a tutorial lets through, each with a fix.

Every check appends to one list so that a file with five problems shows all five at once.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from hakube.spec.model import (
    APISERVER_PORT,
    Cluster,
    EndpointMode,
    EtcdTopology,
    KubeadmAPI,
    Role,
    Runtime,
)

#: The path of problems about the file as a whole (encoding, size, YAML syntax).
FILE = "(file)"

#: kube-controller-manager's default --node-cidr-mask-size for IPv4: one /24 of pods per node.
NODE_CIDR_PREFIX = 24
#: kube-apiserver refuses a --service-cluster-ip-range with more than 2^20 addresses.
MAX_SERVICE_PREFIX = 12


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cluster file: where, what, and how to fix it."""

    path: str
    message: str
    hint: str = ""
    severity: Severity = Severity.ERROR
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}" + (f" (line {self.line})" if self.line else "")
        text = f"{self.severity.value}: {where}: {self.message}"
        return f"{text}\n  fix: {self.hint}" if self.hint else text


def check_cluster(c: Cluster, *, hosts_complete: bool = True) -> list[Problem]:
    """Every cross-field problem. With `hosts_complete` false (some host entries were unreadable
    and left out) the checks that count or place hosts are skipped: they would report the gap."""
    problems: list[Problem] = []
    checks = [_unique_hosts, _kubernetes, _etcd_settings, missing_key_files]
    if hosts_complete:
        checks += [_control_plane_count, _endpoint, _vrrp, _subnets, _etcd]
    for check in checks:
        problems.extend(check(c))
    return problems


def missing_key_files(c: Cluster) -> list[Problem]:
    """SSH key files the file names that do not exist here (validate warns; apply refuses)."""
    named = [("ssh.key_file", c.ssh.key_file)] + [
        (f"hosts[{i}].ssh.key_file", h.ssh.key_file) for i, h in enumerate(c.hosts) if h.ssh
    ]
    return [
        Problem(
            path,
            f"the SSH key file {key} does not exist on this machine",
            f"correct the path, or create the key (ssh-keygen -t ed25519 -f {key}) and install "
            "its .pub on the hosts; apply refuses to start without it",
            Severity.WARNING,
        )
        for path, key in named
        if key is not None and not key.is_file()
    ]


def _err(path: str, message: str, hint: str = "") -> Problem:
    return Problem(path, message, hint, Severity.ERROR)


def _unique_hosts(c: Cluster) -> list[Problem]:
    out: list[Problem] = []
    names = Counter(h.name for h in c.hosts)
    addrs = Counter(h.address for h in c.hosts)
    for i, h in enumerate(c.hosts):
        if names[h.name] > 1:
            out.append(
                _err(
                    f"hosts[{i}].name",
                    f"host name {h.name!r} is used {names[h.name]} times",
                    "give every host its own name: kubeadm registers each as a Node by hostname",
                )
            )
        if addrs[h.address] > 1:
            out.append(
                _err(
                    f"hosts[{i}].address",
                    f"address {h.address} is used by {addrs[h.address]} hosts",
                    "give every host its own address",
                )
            )
    return out


def _control_plane_count(c: Cluster) -> list[Problem]:
    n = len(c.control_planes)
    mode = c.endpoint.mode
    if n == 0:
        return [
            _err(
                "hosts",
                "no host has the role control-plane",
                "add `control-plane` to the roles of one host (three for high availability)",
            )
        ]
    if mode is EndpointMode.NONE:
        if n > 1:
            return [
                _err(
                    "endpoint.mode",
                    f"mode 'none' has no balancer, but there are {n} control-plane nodes",
                    "choose endpoint.mode vip, cloud-lb or local-lb for several control planes",
                )
            ]
        return []
    if n == 1:
        return [
            _err(
                "hosts",
                f"endpoint.mode {mode.value!r} is highly available but there is only one "
                "control-plane node",
                "add two more control-plane nodes (3 in all), or set endpoint.mode: none for a "
                "single-node control plane",
            )
        ]
    if n % 2 == 0:
        tolerated = (n - 1) // 2
        return [
            _err(
                "hosts",
                f"{n} control-plane nodes is an even number: etcd needs a majority "
                f"({n // 2 + 1} of {n}) to keep quorum, so {n} nodes survive only {tolerated} "
                f"failure(s), no more than {n - 1} would; with 2, losing either node (or the "
                "link between them: split-brain) stops the cluster",
                f"use an odd number of control-plane nodes: {n - 1} or {n + 1}",
            )
        ]
    return []


def _endpoint(c: Cluster) -> list[Problem]:
    out: list[Problem] = []
    ep = c.endpoint
    mode = ep.mode
    if mode is EndpointMode.VIP:
        if ep.vip is None:
            out.append(
                _err(
                    "endpoint.vip",
                    "mode vip needs a virtual IP",
                    "set endpoint.vip to a free address in the hosts' subnet",
                )
            )
        else:
            for i, h in enumerate(c.hosts):
                if h.address == ep.vip:
                    out.append(
                        _err(
                            "endpoint.vip",
                            f"the VIP {ep.vip} is the address of host {h.name!r} (hosts[{i}])",
                            "pick an address no host uses: keepalived moves it between hosts",
                        )
                    )
            subnet = c.host_subnet
            if (
                ep.vip in (subnet.network_address, subnet.broadcast_address)
                and subnet.prefixlen < 31
            ):
                which = "network" if ep.vip == subnet.network_address else "broadcast"
                out.append(
                    _err(
                        "endpoint.vip",
                        f"the VIP {ep.vip} is the {which} address of the hosts' subnet {subnet}",
                        f"pick an unused host address inside {subnet}, such as "
                        f"{subnet.broadcast_address - 1}",
                    )
                )
            if ep.vip not in subnet:
                out.append(
                    _err(
                        "endpoint.vip",
                        f"the VIP {ep.vip} is outside the hosts' subnet {subnet}",
                        "VRRP moves the VIP with gratuitous ARP inside one L2 segment: choose an "
                        f"unused address in {subnet} (or set network.host_subnet)",
                    )
                )
    if mode in (EndpointMode.VIP, EndpointMode.LOCAL_LB) and ep.port == APISERVER_PORT:
        shared = [h.name for h in c.lb_hosts if h.has(Role.CONTROL_PLANE)]
        if shared:
            out.append(
                _err(
                    "endpoint.port",
                    f"HAProxy's frontend port {APISERVER_PORT} collides with kube-apiserver on "
                    f"{', '.join(shared)}, which runs HAProxy too",
                    "use another frontend port such as 8443 (controlPlaneEndpoint follows it)",
                )
            )
    if mode is EndpointMode.CLOUD_LB and ep.lb_address is None:
        out.append(
            _err(
                "endpoint.lb_address",
                "mode cloud-lb needs the external balancer's address",
                "set endpoint.lb_address to the SLB/NLB address that workers reach the API on",
            )
        )
    if mode is EndpointMode.CLOUD_LB and ep.lb_address is not None:
        for i, h in enumerate(c.hosts):
            if h.address == ep.lb_address:
                out.append(
                    _err(
                        "endpoint.lb_address",
                        f"the balancer address {ep.lb_address} is the address of host "
                        f"{h.name!r} (hosts[{i}])",
                        "use the address of the external balancer itself (the SLB/NLB), which "
                        "forwards to the control-plane nodes",
                    )
                )
    if mode is EndpointMode.VIP and len(c.lb_hosts) == 1:
        out.append(
            Problem(
                "hosts",
                f"endpoint.mode vip with a single LB host ({c.lb_hosts[0].name}): the VIP has "
                "nowhere to move, so this endpoint is not highly available",
                "give the lb role to two or three hosts (or leave it off: the control-plane "
                "nodes then balance)",
                Severity.WARNING,
            )
        )
    if mode is not EndpointMode.VIP and ep.vip is not None:
        out.append(
            Problem(
                "endpoint.vip",
                f"a VIP is set but endpoint.mode is {mode.value!r}; it is ignored",
                "remove endpoint.vip, or set endpoint.mode: vip",
                Severity.WARNING,
            )
        )
    explicit_lb = [h for h in c.hosts if h.has(Role.LB)]
    if explicit_lb and mode is not EndpointMode.VIP:
        out.append(
            Problem(
                "hosts",
                f"hosts {', '.join(h.name for h in explicit_lb)} have role lb, which only "
                f"endpoint.mode vip uses (mode is {mode.value!r})",
                "remove the lb role, or set endpoint.mode: vip",
                Severity.WARNING,
            )
        )
    return out


def _vrrp(c: Cluster) -> list[Problem]:
    if c.endpoint.mode is not EndpointMode.VIP:
        return []
    out: list[Problem] = []
    v = c.endpoint.vrrp
    if v.version == 2 and v.advert_interval != int(v.advert_interval):
        out.append(
            _err(
                "endpoint.vrrp.advert_interval",
                f"VRRPv2 advertises in whole seconds, not {v.advert_interval}",
                "use a whole number of seconds, or endpoint.vrrp.version: 3 for sub-second adverts",
            )
        )
    if v.version == 3 and round(v.advert_interval * 100) != v.advert_interval * 100:
        out.append(
            _err(
                "endpoint.vrrp.advert_interval",
                f"VRRPv3 advertises in steps of 0.01 s, not {v.advert_interval}",
                "round advert_interval to two decimals",
            )
        )
    if v.unicast and len(c.lb_hosts) < 2:
        out.append(
            _err(
                "endpoint.vrrp.unicast",
                "unicast VRRP needs at least two LB hosts to peer with",
                "add hosts with the lb (or control-plane) role",
            )
        )
    w = v.check_weight
    n = len(c.lb_hosts)
    if w is not None and w != 0 and (w > 0 or -w < n):
        out.append(
            _err(
                "endpoint.vrrp.check_weight",
                f"weight {w} cannot move the VIP on a failed check: with {n} LB hosts the "
                f"priorities are spread at least {n - 1} apart, so |weight| must exceed that",
                f"use a negative weight of at most -{n} (or leave it unset for the computed one, "
                "or 0 to put a failing host in FAULT)",
            )
        )
    if not v.preempt:
        # keepalived's nopreempt: a backup never takes the VIP from a live master, whatever
        # the priorities say. Both settings would be accepted and do nothing.
        if w is not None and w != 0:
            out.append(
                _err(
                    "endpoint.vrrp.check_weight",
                    f"weight {w} cannot move the VIP with preempt off: a backup never takes "
                    "it from a live master, so a failing owner would keep it",
                    "remove check_weight (a failing host then goes to FAULT and gives the VIP "
                    "away), or set endpoint.vrrp.preempt: true",
                )
            )
        if "preempt_delay" in v.model_fields_set:
            out.append(
                _err(
                    "endpoint.vrrp.preempt_delay",
                    "preempt_delay only delays a preemption, and preempt is off",
                    "remove preempt_delay, or set endpoint.vrrp.preempt: true",
                )
            )
    out.extend(_vrrp_segment(c))
    if len(c.lb_hosts) > 250:
        out.append(
            _err(
                "hosts",
                f"{len(c.lb_hosts)} LB hosts cannot get distinct VRRP priorities",
                "give the lb role to a few hosts (three is usual)",
            )
        )
    return out


def _vrrp_segment(c: Cluster) -> list[Problem]:
    """VRRP adverts and the VIP's gratuitous ARP stay inside one L2 segment."""
    lbs = c.lb_hosts
    if len(lbs) < 2:
        return []
    explicit = c.network.host_subnet
    if explicit is not None:
        return [
            _err(
                f"hosts[{c.hosts.index(h)}].address",
                f"LB host {h.name} ({h.address}) is outside network.host_subnet {explicit}, so "
                "it cannot take part in VRRP with the other LB hosts",
                "give the lb role only to hosts on the VIP's segment, or correct "
                "network.host_subnet",
            )
            for h in lbs
            if h.address not in explicit
        ]
    first = ipaddress.IPv4Network((int(lbs[0].address), NODE_CIDR_PREFIX), strict=False)
    apart = [h for h in lbs if h.address not in first]
    if not apart:
        return []
    h = apart[0]
    return [
        _err(
            f"hosts[{c.hosts.index(h)}].address",
            f"LB hosts {lbs[0].name} ({lbs[0].address}) and {h.name} ({h.address}) are not in one "
            f"/{NODE_CIDR_PREFIX}: VRRP and the VIP only work inside one L2 segment",
            "give the lb role only to hosts of one subnet, or, if they really share one "
            "segment, say so with network.host_subnet (e.g. a /23)",
        )
    ]


def _subnets(c: Cluster) -> list[Problem]:
    out: list[Problem] = []
    nets: list[tuple[str, ipaddress.IPv4Network]] = [
        ("network.pod_subnet", c.network.pod_subnet),
        ("network.service_subnet", c.network.service_subnet),
        ("network.host_subnet", c.host_subnet),
    ]
    for i, (pa, a) in enumerate(nets):
        for pb, b in nets[i + 1 :]:
            if a.overlaps(b):
                out.append(
                    _err(
                        pb if pb != "network.host_subnet" else pa,
                        f"{pa} {a} overlaps {pb} {b}",
                        "pod, service and host subnets must be disjoint, or routing breaks; "
                        "pick another private range",
                    )
                )
    explicit = c.network.host_subnet
    if explicit is not None and not any(h.address in explicit for h in c.hosts):
        out.append(
            _err(
                "network.host_subnet",
                f"network.host_subnet {explicit} contains none of the hosts' addresses",
                "set it to the subnet the hosts are on (or remove it to derive it from them)",
            )
        )
    out.extend(_pod_and_service_sizes(c))
    for i, h in enumerate(c.hosts):
        for path, net in nets[:2]:
            if h.address in net:
                out.append(
                    _err(
                        f"hosts[{i}].address",
                        f"host {h.name} ({h.address}) lies inside {path} {net}",
                        f"move {path} to a range that holds no host",
                    )
                )
    return out


def _pod_and_service_sizes(c: Cluster) -> list[Problem]:
    out: list[Problem] = []
    pods = c.network.pod_subnet
    nodes = len({h.name for h in c.hosts if h.has(Role.CONTROL_PLANE) or h.has(Role.WORKER)})
    if pods.prefixlen > NODE_CIDR_PREFIX:
        out.append(
            _err(
                "network.pod_subnet",
                f"{pods} is smaller than one node's pod range (/{NODE_CIDR_PREFIX}, "
                "kube-controller-manager's --node-cidr-mask-size): no node would get pod addresses",
                f"use a /16 such as 10.244.0.0/16 (at most /{NODE_CIDR_PREFIX})",
            )
        )
    else:
        ranges = 1 << (NODE_CIDR_PREFIX - pods.prefixlen)
        if nodes > ranges:
            wanted = NODE_CIDR_PREFIX - max(nodes - 1, 1).bit_length()
            out.append(
                _err(
                    "network.pod_subnet",
                    f"{pods} holds {ranges} node pod range(s) of /{NODE_CIDR_PREFIX}, but the "
                    f"cluster has {nodes} nodes: the nodes beyond {ranges} get no pod addresses",
                    f"use a /{wanted} or larger (e.g. 10.244.0.0/16)",
                )
            )
    svc = c.network.service_subnet
    if svc.prefixlen < MAX_SERVICE_PREFIX:
        out.append(
            _err(
                "network.service_subnet",
                f"{svc} is larger than /{MAX_SERVICE_PREFIX}; kube-apiserver refuses service "
                f"ranges over 2^20 addresses",
                f"use a /{MAX_SERVICE_PREFIX} or smaller, such as 10.96.0.0/12",
            )
        )
    return out


def _kubernetes(c: Cluster) -> list[Problem]:
    out: list[Problem] = []
    k = c.kubernetes
    minor = k.minor
    if k.runtime is Runtime.DOCKER and minor >= (1, 24):
        out.append(
            _err(
                "kubernetes.runtime",
                f"docker (dockershim) was removed in Kubernetes 1.24; version {k.version} "
                "cannot use it",
                "use runtime: containerd (the default), or a Kubernetes version up to 1.23",
            )
        )
    if minor < (1, 24) and not c.packages.kubernetes_repository:
        out.append(
            _err(
                "packages.kubernetes_repository",
                f"pkgs.k8s.io has no channel for Kubernetes {k.version} (it starts at 1.24)",
                "set packages.kubernetes_repository to a mirror that carries it (the tutorial "
                "uses mirrors.aliyun.com/kubernetes), or use Kubernetes 1.24 or newer",
            )
        )
    bad_api = _config_api_problem(k.config_api, minor, k.version)
    if bad_api:
        out.append(_err("kubernetes.config_api", *bad_api))
    return out


def _config_api_problem(
    api: KubeadmAPI | None, minor: tuple[int, int], version: str
) -> tuple[str, str] | None:
    """Why kubeadm `version` cannot use the config API asked for, and what to do (or None)."""
    if api is KubeadmAPI.V1BETA2 and minor > (1, 26):
        return (
            f"kubeadm {version} no longer reads v1beta2 (removed in 1.27)",
            "remove config_api to get the right one, or use v1beta3",
        )
    if api is KubeadmAPI.V1BETA4 and minor < (1, 31):
        return (
            f"v1beta4 exists from kubeadm 1.31; {version} does not read it",
            "remove config_api to get the right one (v1beta3 for this version)",
        )
    if api is KubeadmAPI.V1BETA3 and minor > (1, 33):
        return (
            f"v1beta3 is deprecated and no longer safe for {version}",
            "remove config_api to use v1beta4",
        )
    return None


def _etcd_settings(c: Cluster) -> list[Problem]:
    out: list[Problem] = []
    e = c.etcd
    if e.client_port == e.peer_port:
        out.append(_err("etcd.peer_port", "client and peer ports are equal", "keep 2379 and 2380"))
    seen: dict[str, int] = {}
    for i, name in enumerate(e.hosts or []):
        if name in seen:
            out.append(
                _err(
                    f"etcd.hosts[{i}]",
                    f"host {name!r} is listed twice in etcd.hosts (items {seen[name]} and {i})",
                    "list each etcd member once",
                )
            )
        seen.setdefault(name, i)
    return out


def _etcd(c: Cluster) -> list[Problem]:
    out: list[Problem] = []
    e = c.etcd
    if e.topology is EtcdTopology.STACKED:
        if e.hosts is not None:
            out.append(
                _err(
                    "etcd.hosts",
                    "etcd.hosts is only used with topology external",
                    "remove etcd.hosts, or set etcd.topology: external",
                )
            )
        # kubeadm's stacked etcd always listens on 2379/2380: another value would be accepted
        # here and ignored on the hosts.
        for field, port, default in (
            ("client_port", e.client_port, 2379),
            ("peer_port", e.peer_port, 2380),
        ):
            if port != default:
                out.append(
                    _err(
                        f"etcd.{field}",
                        f"{field} {port} with stacked etcd: kubeadm's etcd static pod always "
                        f"uses {default}",
                        f"remove etcd.{field}, or set etcd.topology: external",
                    )
                )
        return out
    known = {h.name for h in c.hosts}
    for i, name in enumerate(e.hosts or []):
        if name not in known:
            out.append(
                _err(
                    f"etcd.hosts[{i}]",
                    f"{name!r} is not a host of this cluster",
                    f"use one of: {', '.join(sorted(known))}",
                )
            )
    n = len(c.etcd_hosts)
    if n not in (1, 3, 5):
        out.append(
            _err(
                "etcd.hosts",
                f"an external etcd cluster of {n} members; etcd needs 1, 3 or 5 "
                "(an even count adds a failure point without adding tolerance)",
                "list 3 hosts in etcd.hosts (or 5 to survive two failures)",
            )
        )
    return out
