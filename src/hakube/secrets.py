"""The cluster's secrets: what each looks like, how it is generated, and the per-cluster set.

Renderers take `Secrets` from here without pulling in the state dir, the PKI or cryptography.

Everything here comes from :mod:`secrets` (the OS CSPRNG). Generating the bootstrap token and the
certificate key ourselves, instead of scraping them from ``kubeadm init``, lets hakube write them
into the kubeadm config up front and know them before the first control-plane node exists.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, fields

__all__ = [
    "BOOTSTRAP_TOKEN_RE",
    "CA_CERT_HASH_RE",
    "CERTIFICATE_KEY_RE",
    "HAPROXY_PASSWORD_ALPHABET",
    "HAPROXY_STATS_PASSWORD_LENGTH",
    "VRRP_PASSWORD_ALPHABET",
    "VRRP_PASSWORD_LENGTH",
    "Secrets",
    "bootstrap_token_id",
    "generate_bootstrap_token",
    "generate_certificate_key",
    "generate_haproxy_stats_password",
    "generate_password",
    "generate_vrrp_password",
    "is_bootstrap_token",
    "is_ca_cert_hash",
    "is_certificate_key",
]

# kubeadm's own validation (k8s.io/cluster-bootstrap/token/api BootstrapTokenPattern).
BOOTSTRAP_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
# The key is an AES-256 key printed as lowercase hex (kubeadm's copycerts.CreateCertificateKey).
CERTIFICATE_KEY_RE = re.compile(r"^[a-f0-9]{64}$")
# kubeadm prints lowercase hex; it accepts only the sha256 type.
CA_CERT_HASH_RE = re.compile(r"^sha256:[a-f0-9]{64}$")

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits

# Letters and digits only: no quoting, comment (#), escape (\\) or list separator can ever be
# produced, so the value can be dropped unquoted into keepalived.conf and haproxy.cfg alike.
VRRP_PASSWORD_ALPHABET = string.ascii_letters + string.digits
HAPROXY_PASSWORD_ALPHABET = string.ascii_letters + string.digits
# keepalived silently truncates a VRRPv2 auth_pass to 8 characters; a longer value would only
# mislead a reader about its strength.
VRRP_PASSWORD_LENGTH = 8
HAPROXY_STATS_PASSWORD_LENGTH = 32

# Characters that change meaning in keepalived or haproxy configuration syntax.
_UNSAFE_IN_CONFIG = frozenset(string.whitespace + "\"'#\\{}$:;")


def generate_bootstrap_token() -> str:
    """A fresh kubeadm bootstrap token, ``[a-z0-9]{6}.[a-z0-9]{16}``."""
    token_id = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(6))
    token_secret = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16))
    return f"{token_id}.{token_secret}"


def is_bootstrap_token(value: str) -> bool:
    return BOOTSTRAP_TOKEN_RE.fullmatch(value) is not None


def bootstrap_token_id(token: str) -> str:
    """The public half of a token (it names the Secret ``bootstrap-token-<id>``)."""
    match = BOOTSTRAP_TOKEN_RE.fullmatch(token)
    if match is None:
        raise ValueError("not a bootstrap token")
    return match.group(1)


def generate_certificate_key() -> str:
    """A key for ``kubeadm init --upload-certs --certificate-key``: 32 random bytes, hex."""
    return secrets.token_hex(32)


def is_certificate_key(value: str) -> bool:
    return CERTIFICATE_KEY_RE.fullmatch(value) is not None


def is_ca_cert_hash(value: str) -> bool:
    return CA_CERT_HASH_RE.fullmatch(value) is not None


def generate_password(length: int, alphabet: str = VRRP_PASSWORD_ALPHABET) -> str:
    """``length`` characters drawn uniformly from ``alphabet``.

    Characters that would need quoting in keepalived or haproxy configuration are refused, so a
    caller cannot accidentally produce a password that breaks the file it is rendered into.
    """
    if length < 1:
        raise ValueError(f"password length must be at least 1, got {length}")
    symbols = "".join(dict.fromkeys(alphabet))  # duplicates would bias the draw
    if len(symbols) < 2:
        raise ValueError("password alphabet needs at least two distinct characters")
    unsafe = sorted(set(symbols) & _UNSAFE_IN_CONFIG)
    if unsafe:
        raise ValueError(f"password alphabet contains characters unsafe in configs: {unsafe!r}")
    return "".join(secrets.choice(symbols) for _ in range(length))


def generate_vrrp_password() -> str:
    """An 8-character VRRPv2 ``auth_pass`` (keepalived ignores anything beyond 8)."""
    return generate_password(VRRP_PASSWORD_LENGTH, VRRP_PASSWORD_ALPHABET)


def generate_haproxy_stats_password(length: int = HAPROXY_STATS_PASSWORD_LENGTH) -> str:
    """A password for ``stats auth admin:<password>``."""
    return generate_password(length, HAPROXY_PASSWORD_ALPHABET)


@dataclass(frozen=True)
class Secrets:
    """Per-cluster secrets, generated once and then reused so re-runs change nothing."""

    vrrp_password: str
    stats_password: str
    bootstrap_token: str
    certificate_key: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            vrrp_password=generate_password(8),
            stats_password=generate_password(24),
            bootstrap_token=generate_bootstrap_token(),
            certificate_key=generate_certificate_key(),
        )

    def values(self) -> list[str]:
        """Every secret string, for log redaction."""
        return [str(getattr(self, f.name)) for f in fields(self)]
