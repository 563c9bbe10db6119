"""Fixed, obviously fake inputs shared by the renderer tests (never real secrets)."""

from __future__ import annotations

from pathlib import Path

from hakube.secrets import Secrets

ROOT = Path(__file__).resolve().parents[2]

SECRETS = Secrets(
    vrrp_password="vrrpPa55wordTooLong",
    stats_password="stats-Pa55word-0123456789",
    bootstrap_token="abcdef.0123456789abcdef",
    certificate_key="0123456789abcdef" * 4,
)
