"""The cluster file a lab writes for its hosts (pure: plan in, YAML text out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hakube_lab.addressing import HOST_INTERFACE, NOT_IN_CLUSTER, LabPlan

KUBERNETES_VERSION = "1.30.4"


#: HAProxy's frontend where it shares a host with an apiserver (vip and local-lb).
FRONTEND_PORT = 8443
#: The lab SLB's listener: kube-apiserver's own port, so that the control-plane nodes, which
#: resolve the API name to 127.0.0.1 (the SLB cannot hairpin), reach their own apiserver there.
SLB_PORT = 6443


def endpoint_document(plan: LabPlan) -> dict[str, Any]:
    name = f"apiserver.{plan.name}.lab"
    if plan.endpoint_mode == "cloud-lb":
        assert plan.slb is not None
        return {"mode": "cloud-lb", "name": name, "lb_address": str(plan.slb.address),
                "lb_port": SLB_PORT, "interface": HOST_INTERFACE}  # fmt: skip
    if plan.endpoint_mode == "local-lb":
        return {"mode": "local-lb", "name": name, "port": FRONTEND_PORT,
                "interface": HOST_INTERFACE}  # fmt: skip
    return {"mode": "vip", "vip": str(plan.vip), "name": name, "port": FRONTEND_PORT,
            "interface": HOST_INTERFACE}  # fmt: skip


def cluster_document(plan: LabPlan, state_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "hakube/v1alpha1",
        "kind": "Cluster",
        "name": plan.name,
        "ssh": {
            "user": "root",
            "port": 22,
            "key_file": str(state_dir / "id_ed25519"),
            "known_hosts": str(state_dir / "known_hosts"),
        },
        "endpoint": endpoint_document(plan),
        "hosts": [
            {"name": h.name, "address": str(h.address), "roles": [h.role]}
            for h in plan.hosts
            if h.role not in NOT_IN_CLUSTER
        ],
        "network": {"pod_subnet": "10.244.0.0/16", "service_subnet": "10.96.0.0/16"},
        "kubernetes": {"version": KUBERNETES_VERSION},
        "etcd": {"topology": "external"},
        # The lab mirror is a flat repository ("URL ./") without signatures ([trusted=yes]).
        "packages": {"manager": "apt", "repository": f"{plan.mirror_url} ./", "gpg_check": False},
    }


def render_cluster_file(plan: LabPlan, state_dir: Path) -> str:
    header = (
        f"# Written by `hakube lab up --name {plan.name}`; rewritten on every `up`.\n"
        f"# Hosts are systemd-nspawn containers on bridge {plan.bridge} ({plan.subnet}).\n"
    )
    if plan.slb is not None:
        header += (
            f"# endpoint.lb_address {plan.slb.address} is lab host {plan.slb.name}: HAProxy in TCP "
            "mode, the lab's model of a cloud L4 balancer (Alibaba SLB); it drops connections "
            "from its own backends (no hairpin).\n"
        )
    body = yaml.safe_dump(
        cluster_document(plan, state_dir), sort_keys=False, default_flow_style=None, width=100
    )
    return header + body
