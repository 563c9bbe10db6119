"""PKI: certificate authorities and leaf certificates, the kubeadm CA hash, tokens, keys."""

from hakube.pki.certs import (
    CertAndKey,
    CertUsage,
    KeyAlgorithm,
    ca_cert_hash,
    cert_expiry,
    generate_ca,
    is_signed_by,
    issue_certificate,
    write_secret_file,
)
from hakube.pki.cluster import ClusterPKI
from hakube.pki.etcd import EtcdMember, EtcdPKI
from hakube.pki.layout import PKIFile
from hakube.pki.tokens import (
    generate_bootstrap_token,
    generate_certificate_key,
    generate_password,
    is_bootstrap_token,
)

__all__ = [
    "CertAndKey",
    "CertUsage",
    "ClusterPKI",
    "EtcdMember",
    "EtcdPKI",
    "KeyAlgorithm",
    "PKIFile",
    "ca_cert_hash",
    "cert_expiry",
    "generate_bootstrap_token",
    "generate_ca",
    "generate_certificate_key",
    "generate_password",
    "is_bootstrap_token",
    "is_signed_by",
    "issue_certificate",
    "write_secret_file",
]
