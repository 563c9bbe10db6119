"""Certificate authorities, leaf certificates, PEM I/O and the kubeadm CA public-key hash.

hakube pre-generates the cluster CAs so that the ``--discovery-token-ca-cert-hash`` is known
before ``kubeadm init`` runs (kubeadm keeps a CA it finds in ``/etc/kubernetes/pki``), and so
that re-running hakube never rotates a CA behind the cluster's back. Keys are written in the same
PEM flavours kubeadm writes (PKCS#1 for RSA, SEC1 for EC), so files are interchangeable.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hakube.fileio import as_bytes, write_public_file, write_secret_file

__all__ = [
    "CA_VALIDITY",
    "CLOCK_SKEW_ALLOWANCE",
    "LEAF_VALIDITY",
    "CertAndKey",
    "CertUsage",
    "IPAddress",
    "KeyAlgorithm",
    "PrivateKey",
    "ca_cert_hash",
    "cert_expiry",
    "cert_to_pem",
    "generate_ca",
    "generate_private_key",
    "is_signed_by",
    "issue_certificate",
    "key_algorithm",
    "key_to_pem",
    "load_cert_and_key",
    "load_cert_pem",
    "load_key_pem",
    "public_key_to_pem",
    "save_cert_and_key",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
# Certificates are made on the operator's machine and used on hosts whose clocks may lag a
# little; without backdating, a fresh certificate can be "not yet valid" there for a while.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(minutes=5)

_T = TypeVar("_T")


class KeyAlgorithm(enum.StrEnum):
    ECDSA_P256 = "ecdsa-p256"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"


class CertUsage(enum.StrEnum):
    """What a leaf certificate is for; maps to its extended key usages."""

    SERVER = "server"
    CLIENT = "client"
    # Both directions: etcd peers dial each other and also serve each other.
    PEER = "peer"


_EXTENDED_USAGES: dict[CertUsage, tuple[x509.ObjectIdentifier, ...]] = {
    CertUsage.SERVER: (ExtendedKeyUsageOID.SERVER_AUTH,),
    CertUsage.CLIENT: (ExtendedKeyUsageOID.CLIENT_AUTH,),
    CertUsage.PEER: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
}


@dataclass(frozen=True)
class CertAndKey:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self.key)

    @property
    def common_name(self) -> str:
        return _common_name(self.cert)

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def generate_private_key(algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256) -> PrivateKey:
    match algorithm:
        case KeyAlgorithm.ECDSA_P256:
            return ec.generate_private_key(ec.SECP256R1())
        case KeyAlgorithm.RSA_2048:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        case KeyAlgorithm.RSA_4096:
            return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise ValueError(f"unknown key algorithm {algorithm!r}")  # pragma: no cover


def key_algorithm(key: PrivateKey) -> KeyAlgorithm:
    """The :class:`KeyAlgorithm` that would produce ``key`` (for keys loaded from disk)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyAlgorithm.ECDSA_P256
        raise ValueError(f"unsupported EC curve {key.curve.name}")
    if key.key_size == 2048:
        return KeyAlgorithm.RSA_2048
    if key.key_size == 4096:
        return KeyAlgorithm.RSA_4096
    raise ValueError(f"unsupported RSA key size {key.key_size}")


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    if not common_name:
        raise ValueError("a certificate needs a non-empty common name")
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _common_name(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return ""
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


def generate_ca(
    common_name: str,
    *,
    algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
    validity: dt.timedelta = CA_VALIDITY,
    organizations: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> CertAndKey:
    """A self-signed CA: key, and a certificate with the extensions kubeadm's CAs carry."""
    if validity <= dt.timedelta(0):
        raise ValueError("validity must be positive")
    start = _now(now)
    key = generate_private_key(algorithm)
    name = _name(common_name, organizations)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertAndKey(cert=cert, key=key)


def _dedupe(values: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(values))


def issue_certificate(
    ca: CertAndKey,
    common_name: str,
    usage: CertUsage,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | IPAddress] = (),
    organizations: Sequence[str] = (),
    algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
    validity: dt.timedelta = LEAF_VALIDITY,
    now: dt.datetime | None = None,
) -> CertAndKey:
    """A leaf certificate signed by ``ca``, with a fresh key.

    The validity is cut at the CA's own expiry: a leaf that outlives its issuer cannot be
    verified anyway, and a silent cut is what kubeadm does too.
    """
    if validity <= dt.timedelta(0):
        raise ValueError("validity must be positive")
    start = _now(now)
    not_after = min(start + validity, ca.cert.not_valid_after_utc)
    if not_after <= start:
        raise ValueError(f"CA {ca.common_name!r} has expired; cannot issue certificates from it")
    ips = _dedupe(ipaddress.ip_address(ip) if isinstance(ip, str) else ip for ip in ip_addresses)
    names = _dedupe(dns_names)
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"invalid DNS name for a certificate: {name!r}")

    key = generate_private_key(algorithm)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # Only RSA keys encrypt key material in TLS key exchange; kubeadm sets the bit
                # for RSA keys alone as well.
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(_EXTENDED_USAGES[usage])), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.extend(x509.IPAddress(ip) for ip in ips)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertAndKey(cert=builder.sign(ca.key, hashes.SHA256()), key=key)


def is_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``cert`` was issued by ``ca_cert`` (issuer name and signature both match)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- PEM ---------------------------------------------------------------------------------------


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key: PrivateKey) -> bytes:
    # TraditionalOpenSSL = "RSA PRIVATE KEY" / "EC PRIVATE KEY", the blocks kubeadm writes.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_to_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_cert_pem(data: bytes | str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(as_bytes(data))


def load_key_pem(data: bytes | str) -> PrivateKey:
    key = serialization.load_pem_private_key(as_bytes(data), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__} (want RSA or EC)")
    return key


def _cert(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    return cert if isinstance(cert, x509.Certificate) else load_cert_pem(cert)


def _spki_der(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ca_cert_hash(cert_pem: x509.Certificate | bytes | str) -> str:
    """kubeadm's ``--discovery-token-ca-cert-hash``: SHA-256 of the DER SubjectPublicKeyInfo.

    Hashing the SPKI (not the whole certificate) is what kubeadm's pubkeypin does, so the value
    survives re-signing the CA with the same key and works for RSA and EC keys alike.
    """
    return "sha256:" + hashlib.sha256(_spki_der(_cert(cert_pem).public_key())).hexdigest()


def cert_expiry(cert_pem: x509.Certificate | bytes | str) -> dt.datetime:
    """The certificate's notAfter, timezone-aware UTC."""
    return _cert(cert_pem).not_valid_after_utc


# --- files -------------------------------------------------------------------------------------


def save_cert_and_key(bundle: CertAndKey, cert_path: Path | str, key_path: Path | str) -> None:
    # Key first: a crash in between leaves a key without a certificate, which load refuses,
    # rather than a certificate whose key was never stored.
    write_secret_file(key_path, bundle.key_pem)
    write_public_file(cert_path, bundle.cert_pem)


def load_cert_and_key(cert_path: Path | str, key_path: Path | str) -> CertAndKey:
    cert = load_cert_pem(Path(cert_path).read_bytes())
    key = load_key_pem(Path(key_path).read_bytes())
    if _spki_der(cert.public_key()) != _spki_der(key.public_key()):
        raise ValueError(f"{key_path} does not hold the private key of {cert_path}")
    return CertAndKey(cert=cert, key=key)
