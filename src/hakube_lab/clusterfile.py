"""The cluster file a lab writes for its hosts (pure: plan in, YAML text out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hakube_lab.addressing import HOST_INTERFACE, SPARE, LabPlan

KUBERNETES_VERSION = "1.30.4"


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
        "endpoint": {
            "mode": "vip",
            "vip": str(plan.vip),
            "name": f"apiserver.{plan.name}.lab",
            "port": 8443,
            "interface": HOST_INTERFACE,
        },
        "hosts": [
            {"name": h.name, "address": str(h.address), "roles": [h.role]}
            for h in plan.hosts
            if h.role != SPARE
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
    body = yaml.safe_dump(
        cluster_document(plan, state_dir), sort_keys=False, default_flow_style=None, width=100
    )
    return header + body
