"""The shared control-plane PKI hakube pre-generates for kubeadm.

kubeadm treats ``ca``, ``front-proxy-ca`` and ``sa`` as the material every control-plane node
must share (it is what ``--upload-certs`` carries). Generating it up front means the
``--discovery-token-ca-cert-hash`` is known before ``kubeadm init``, and every control-plane node
can be given identical files instead of depending on the two-hour kubeadm-certs Secret.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hakube.fileio import write_public_file, write_secret_file
from hakube.pki.certs import (
    CA_VALIDITY,
    CertAndKey,
    KeyAlgorithm,
    PrivateKey,
    ca_cert_hash,
    generate_ca,
    generate_private_key,
    key_to_pem,
    load_cert_and_key,
    load_key_pem,
    public_key_to_pem,
    save_cert_and_key,
)
from hakube.pki.layout import KUBERNETES_PKI_DIR, pki_file
from hakube.render.base import RenderedFile

__all__ = [
    "FRONT_PROXY_CA_COMMON_NAME",
    "KUBERNETES_CA_COMMON_NAME",
    "ClusterPKI",
]

# The common names kubeadm gives its own CAs; kept identical so nothing downstream can tell a
# hakube-made CA from a kubeadm-made one.
KUBERNETES_CA_COMMON_NAME = "kubernetes"
FRONT_PROXY_CA_COMMON_NAME = "front-proxy-ca"

_STATE_FILES = ("ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub")


@dataclass(frozen=True)
class ClusterPKI:
    """Cluster CA, front-proxy CA and service-account signing key."""

    ca: CertAndKey
    front_proxy_ca: CertAndKey
    service_account_key: PrivateKey

    @classmethod
    def generate(
        cls,
        *,
        algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
        validity: dt.timedelta = CA_VALIDITY,
        now: dt.datetime | None = None,
    ) -> ClusterPKI:
        return cls(
            ca=generate_ca(
                KUBERNETES_CA_COMMON_NAME, algorithm=algorithm, validity=validity, now=now
            ),
            front_proxy_ca=generate_ca(
                FRONT_PROXY_CA_COMMON_NAME, algorithm=algorithm, validity=validity, now=now
            ),
            service_account_key=generate_private_key(algorithm),
        )

    @property
    def ca_cert_hash(self) -> str:
        """The value for ``kubeadm join --discovery-token-ca-cert-hash``."""
        return ca_cert_hash(self.ca.cert)

    def control_plane_files(
        self, pki_dir: PurePosixPath | str = KUBERNETES_PKI_DIR
    ) -> list[RenderedFile]:
        """Files for every control-plane node, at the paths kubeadm looks for them."""
        root = PurePosixPath(pki_dir)
        return [
            pki_file(root / "ca.crt", self.ca.cert_pem, 0o644),
            pki_file(root / "ca.key", self.ca.key_pem, 0o600),
            pki_file(root / "front-proxy-ca.crt", self.front_proxy_ca.cert_pem, 0o644),
            pki_file(root / "front-proxy-ca.key", self.front_proxy_ca.key_pem, 0o600),
            pki_file(root / "sa.key", key_to_pem(self.service_account_key), 0o600),
            pki_file(root / "sa.pub", public_key_to_pem(self.service_account_key), 0o644),
        ]

    def save(self, directory: Path | str) -> None:
        """Store in a local state directory (same file names as on the hosts)."""
        d = Path(directory)
        save_cert_and_key(self.ca, d / "ca.crt", d / "ca.key")
        save_cert_and_key(self.front_proxy_ca, d / "front-proxy-ca.crt", d / "front-proxy-ca.key")
        write_secret_file(d / "sa.key", key_to_pem(self.service_account_key))
        write_public_file(d / "sa.pub", public_key_to_pem(self.service_account_key))

    @classmethod
    def load(cls, directory: Path | str) -> ClusterPKI:
        d = Path(directory)
        return cls(
            ca=load_cert_and_key(d / "ca.crt", d / "ca.key"),
            front_proxy_ca=load_cert_and_key(d / "front-proxy-ca.crt", d / "front-proxy-ca.key"),
            service_account_key=load_key_pem((d / "sa.key").read_bytes()),
        )

    @classmethod
    def load_or_generate(
        cls, directory: Path | str, *, algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256
    ) -> ClusterPKI:
        """Load the stored PKI, or create and store it on first use.

        A partly present set is an error, not a reason to regenerate: replacing one CA of a
        running cluster would lock out every node that trusts the old one.
        """
        d = Path(directory)
        present = [name for name in _STATE_FILES if (d / name).exists()]
        if len(present) == len(_STATE_FILES):
            return cls.load(d)
        if present:
            missing = sorted(set(_STATE_FILES) - set(present))
            raise FileNotFoundError(f"incomplete cluster PKI in {d}: missing {', '.join(missing)}")
        pki = cls.generate(algorithm=algorithm)
        pki.save(d)
        return pki
