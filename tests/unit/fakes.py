"""Fixed, obviously fake inputs shared by the renderer tests (never real secrets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hakube.secrets import Secrets

ROOT = Path(__file__).resolve().parents[2]
#: Real kubeadm output, outside the repository (tests that need it skip when it is absent).
TRANSCRIPTS = ROOT / ".." / "shared" / "reference" / "kubeadm-transcripts"

SECRETS = Secrets(
    vrrp_password="vrrpPa55wordTooLong",
    stats_password="stats-Pa55word-0123456789",
    bootstrap_token="abcdef.0123456789abcdef",
    certificate_key="0123456789abcdef" * 4,
)

# Three control planes (stacked etcd, the default) behind a VIP: the day-2 tests' cluster.
OPS_CLUSTER: dict[str, Any] = {
    "apiVersion": "hakube/v1alpha1",
    "kind": "Cluster",
    "name": "ops",
    "hosts": [
        {"name": f"cp{i}", "address": f"10.88.0.1{i}", "roles": ["control-plane"]}
        for i in (1, 2, 3)
    ],
    "endpoint": {"mode": "vip", "vip": "10.88.0.10", "port": 8443},
    "etcd": {"topology": "stacked"},
}
