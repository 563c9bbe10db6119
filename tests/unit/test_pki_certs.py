from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hakube.fileio import write_public_file, write_secret_file
from hakube.pki.certs import (
    CertAndKey,
    CertUsage,
    KeyAlgorithm,
    ca_cert_hash,
    cert_expiry,
    generate_ca,
    is_signed_by,
    issue_certificate,
    key_algorithm,
    load_cert_and_key,
    load_key_pem,
    save_cert_and_key,
)
from hakube.pki.cluster import ClusterPKI
from hakube.pki.etcd import EtcdMember, EtcdPKI

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")


@pytest.fixture(scope="module")
def rsa_ca() -> CertAndKey:
    return generate_ca("kubernetes", algorithm=KeyAlgorithm.RSA_2048)


@pytest.fixture(scope="module")
def ec_ca() -> CertAndKey:
    return generate_ca("etcd-ca")


def _spki_sha256(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _openssl(args: list[str], data: bytes) -> bytes:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=True).stdout


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


# --- CA ------------------------------------------------------------------------------------------


def test_ca_is_self_signed_ca_with_ten_year_validity(ec_ca: CertAndKey) -> None:
    cert = ec_ca.cert
    assert cert.subject == cert.issuer
    assert ec_ca.common_name == "etcd-ca"
    assert isinstance(ec_ca.key, ec.EllipticCurvePrivateKey)
    assert isinstance(ec_ca.key.curve, ec.SECP256R1)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert is_signed_by(cert, cert)
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=3650)


def test_rsa_ca(rsa_ca: CertAndKey) -> None:
    assert isinstance(rsa_ca.key, rsa.RSAPrivateKey)
    assert rsa_ca.key.key_size == 2048
    assert key_algorithm(rsa_ca.key) is KeyAlgorithm.RSA_2048
    assert rsa_ca.key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_ec_key_pem_is_sec1_like_kubeadm(ec_ca: CertAndKey) -> None:
    assert ec_ca.key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")


def test_ca_is_backdated_for_clock_skew() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    ca = generate_ca("x", now=now)
    assert ca.cert.not_valid_before_utc < now


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        generate_ca("x", now=dt.datetime(2030, 1, 1))


# --- CA hash -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ca_fixture", ["rsa_ca", "ec_ca"])
def test_ca_cert_hash_is_sha256_of_spki(ca_fixture: str, request: pytest.FixtureRequest) -> None:
    ca: CertAndKey = request.getfixturevalue(ca_fixture)
    expected = _spki_sha256(ca.cert)
    assert ca_cert_hash(ca.cert_pem) == expected
    assert ca_cert_hash(ca.cert_pem.decode()) == expected
    assert ca_cert_hash(ca.cert) == expected


@needs_openssl
@pytest.mark.parametrize("ca_fixture", ["rsa_ca", "ec_ca"])
def test_ca_cert_hash_matches_openssl_pkey_pipeline(
    ca_fixture: str, request: pytest.FixtureRequest
) -> None:
    ca: CertAndKey = request.getfixturevalue(ca_fixture)
    pubkey_pem = _openssl(["x509", "-pubkey", "-noout"], ca.cert_pem)
    der = _openssl(["pkey", "-pubin", "-outform", "der"], pubkey_pem)
    assert ca_cert_hash(ca.cert_pem) == "sha256:" + hashlib.sha256(der).hexdigest()


@needs_openssl
def test_ca_cert_hash_matches_the_tutorials_rsa_pipeline(rsa_ca: CertAndKey) -> None:
    # openssl x509 -pubkey | openssl rsa -pubin -outform der | openssl dgst -sha256 -hex
    pubkey_pem = _openssl(["x509", "-pubkey", "-noout"], rsa_ca.cert_pem)
    der = _openssl(["rsa", "-pubin", "-outform", "der"], pubkey_pem)
    digest = _openssl(["dgst", "-sha256", "-hex"], der).decode().split()[-1]
    assert ca_cert_hash(rsa_ca.cert_pem) == f"sha256:{digest}"


def test_ca_cert_hash_does_not_depend_on_the_certificate_only_the_key(rsa_ca: CertAndKey) -> None:
    # Re-signing a CA with the same key (e.g. to extend it) keeps joins working.
    builder = (
        x509.CertificateBuilder()
        .subject_name(rsa_ca.cert.subject)
        .issuer_name(rsa_ca.cert.subject)
        .public_key(rsa_ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(rsa_ca.cert.not_valid_before_utc)
        .not_valid_after(rsa_ca.cert.not_valid_after_utc + dt.timedelta(days=1))
    )
    renewed = builder.sign(rsa_ca.key, hashes.SHA256())
    assert ca_cert_hash(renewed) == ca_cert_hash(rsa_ca.cert)


# --- leaves --------------------------------------------------------------------------------------


def test_server_cert_signed_with_sans_and_usages(ec_ca: CertAndKey) -> None:
    leaf = issue_certificate(
        ec_ca,
        "kube-apiserver",
        CertUsage.SERVER,
        dns_names=["vip", "kubernetes", "vip"],
        ip_addresses=["192.168.2.199", ipaddress.ip_address("10.96.0.1"), "::1"],
    )
    assert is_signed_by(leaf.cert, ec_ca.cert)
    assert leaf.cert.issuer == ec_ca.cert.subject
    san = _san(leaf.cert)
    assert san.get_values_for_type(x509.DNSName) == ["vip", "kubernetes"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.2.199"),
        ipaddress.ip_address("10.96.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert _eku(leaf.cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    usage = leaf.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert not usage.key_encipherment  # EC key
    assert not leaf.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ec_ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_client_and_peer_usages(rsa_ca: CertAndKey) -> None:
    client = issue_certificate(
        rsa_ca,
        "admin",
        CertUsage.CLIENT,
        organizations=["system:masters"],
        algorithm=KeyAlgorithm.RSA_2048,
    )
    peer = issue_certificate(rsa_ca, "etcd-1", CertUsage.PEER)
    assert _eku(client.cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert _eku(peer.cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    org = client.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in org] == ["system:masters"]
    assert client.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    with pytest.raises(x509.ExtensionNotFound):
        client.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert is_signed_by(client.cert, rsa_ca.cert)
    assert is_signed_by(peer.cert, rsa_ca.cert)


def test_leaf_is_not_signed_by_another_ca(ec_ca: CertAndKey, rsa_ca: CertAndKey) -> None:
    leaf = issue_certificate(ec_ca, "x", CertUsage.SERVER)
    assert not is_signed_by(leaf.cert, rsa_ca.cert)
    impostor = generate_ca("etcd-ca")  # same name, different key
    assert not is_signed_by(leaf.cert, impostor.cert)


def test_leaf_validity_default_one_year_and_capped_at_ca(ec_ca: CertAndKey) -> None:
    leaf = issue_certificate(ec_ca, "x", CertUsage.SERVER)
    lifetime = cert_expiry(leaf.cert_pem) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)
    long = issue_certificate(ec_ca, "x", CertUsage.SERVER, validity=dt.timedelta(days=5000))
    assert long.not_after == ec_ca.not_after


def test_expired_ca_cannot_issue() -> None:
    old = generate_ca(
        "old", validity=dt.timedelta(days=1), now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    with pytest.raises(ValueError, match="expired"):
        issue_certificate(old, "x", CertUsage.CLIENT)


@pytest.mark.parametrize("bad", ["", "two words"])
def test_bad_dns_names_refused(ec_ca: CertAndKey, bad: str) -> None:
    with pytest.raises(ValueError, match="DNS name"):
        issue_certificate(ec_ca, "x", CertUsage.SERVER, dns_names=[bad])


def test_bad_ip_refused(ec_ca: CertAndKey) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        issue_certificate(ec_ca, "x", CertUsage.SERVER, ip_addresses=["300.1.1.1"])


@needs_openssl
def test_openssl_verifies_leaf_against_ca(tmp_path: Path, rsa_ca: CertAndKey) -> None:
    leaf = issue_certificate(rsa_ca, "apiserver", CertUsage.SERVER, dns_names=["vip"])
    (tmp_path / "ca.crt").write_bytes(rsa_ca.cert_pem)
    (tmp_path / "leaf.crt").write_bytes(leaf.cert_pem)
    assert OPENSSL is not None
    result = subprocess.run(
        [OPENSSL, "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "leaf.crt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- files ---------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_secret_file_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "sub" / "ca.key"
        write_secret_file(target, b"secret")
        assert _mode(target) == 0o600
        assert target.read_bytes() == b"secret"
        write_secret_file(target, "replaced")
        assert _mode(target) == 0o600
        assert target.read_text() == "replaced"
    finally:
        os.umask(old)


def test_write_secret_file_tightens_an_existing_loose_file(tmp_path: Path) -> None:
    target = tmp_path / "ca.key"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_secret_file(target, b"new")
    assert _mode(target) == 0o600


def test_write_secret_file_exact_mode_under_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        write_secret_file(tmp_path / "k", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o600


def test_secret_file_is_never_visible_with_broader_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Observe the temp file at the moment of the rename: it must already be 0600 and complete.
    seen: list[tuple[int, bytes]] = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        seen.append((stat.S_IMODE(os.stat(src).st_mode), Path(src).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    old = os.umask(0)
    try:
        write_secret_file(tmp_path / "ca.key", b"k" * 100)
    finally:
        os.umask(old)
    assert seen == [(0o600, b"k" * 100)]


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(src: str, dst: Path) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_secret_file(tmp_path / "ca.key", b"x")
    assert list(tmp_path.iterdir()) == []


def test_public_file_is_0644(tmp_path: Path) -> None:
    write_public_file(tmp_path / "ca.crt", b"cert")
    assert _mode(tmp_path / "ca.crt") == 0o644


def test_save_and_load_round_trip(tmp_path: Path, ec_ca: CertAndKey) -> None:
    save_cert_and_key(ec_ca, tmp_path / "ca.crt", tmp_path / "ca.key")
    assert _mode(tmp_path / "ca.key") == 0o600
    loaded = load_cert_and_key(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert loaded.cert == ec_ca.cert
    assert loaded.key_pem == ec_ca.key_pem


def test_load_refuses_mismatched_key(tmp_path: Path, ec_ca: CertAndKey) -> None:
    other = generate_ca("other")
    (tmp_path / "ca.crt").write_bytes(ec_ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(other.key_pem)
    with pytest.raises(ValueError, match="does not hold the private key"):
        load_cert_and_key(tmp_path / "ca.crt", tmp_path / "ca.key")


def test_load_key_pem_refuses_other_key_types() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="unsupported private key type"):
        load_key_pem(pem)


# --- cluster PKI ---------------------------------------------------------------------------------


def test_cluster_pki_layout_and_names() -> None:
    pki = ClusterPKI.generate()
    assert pki.ca.common_name == "kubernetes"
    assert pki.front_proxy_ca.common_name == "front-proxy-ca"
    assert pki.ca_cert_hash == _spki_sha256(pki.ca.cert)
    files = {f.path: f for f in pki.control_plane_files()}
    assert sorted(files) == [
        "/etc/kubernetes/pki/ca.crt",
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        "/etc/kubernetes/pki/front-proxy-ca.key",
        "/etc/kubernetes/pki/sa.key",
        "/etc/kubernetes/pki/sa.pub",
    ]
    assert {p for p, f in files.items() if f.secret} == {
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/front-proxy-ca.key",
        "/etc/kubernetes/pki/sa.key",
    }
    assert files["/etc/kubernetes/pki/sa.pub"].content.startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in repr(files["/etc/kubernetes/pki/ca.key"])


def test_cluster_pki_load_or_generate_is_stable(tmp_path: Path) -> None:
    first = ClusterPKI.load_or_generate(tmp_path / "pki", algorithm=KeyAlgorithm.RSA_2048)
    again = ClusterPKI.load_or_generate(tmp_path / "pki")
    assert again.ca_cert_hash == first.ca_cert_hash
    assert again.front_proxy_ca.cert == first.front_proxy_ca.cert
    assert _mode(tmp_path / "pki" / "sa.key") == 0o600
    (tmp_path / "pki" / "front-proxy-ca.key").unlink()
    with pytest.raises(FileNotFoundError, match=r"front-proxy-ca\.key"):
        ClusterPKI.load_or_generate(tmp_path / "pki")


# --- etcd PKI ------------------------------------------------------------------------------------

MEMBERS = [
    EtcdMember("etcd-1", "192.168.2.207"),
    EtcdMember("etcd-2", "192.168.2.208"),
    EtcdMember("etcd-3", "192.168.2.209"),
]


@pytest.fixture(scope="module")
def etcd_pki() -> EtcdPKI:
    return EtcdPKI.generate(MEMBERS)


def test_etcd_member_certs(etcd_pki: EtcdPKI) -> None:
    assert etcd_pki.ca.common_name == "etcd-ca"
    certs = etcd_pki.members["etcd-2"]
    server_san = _san(certs.server.cert)
    assert server_san.get_values_for_type(x509.DNSName) == ["etcd-2", "localhost"]
    assert server_san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.2.208"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    peer_san = _san(certs.peer.cert)
    assert peer_san.get_values_for_type(x509.DNSName) == ["etcd-2"]
    assert peer_san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.2.208")]
    both = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert _eku(certs.server.cert) == both
    assert _eku(certs.peer.cert) == both
    for bundle in (
        certs.server,
        certs.peer,
        etcd_pki.apiserver_client,
        etcd_pki.healthcheck_client,
    ):
        assert is_signed_by(bundle.cert, etcd_pki.ca.cert)
    assert _eku(etcd_pki.apiserver_client.cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert etcd_pki.apiserver_client.common_name == "kube-apiserver-etcd-client"


def test_etcd_file_layouts(etcd_pki: EtcdPKI) -> None:
    host = {f.path: f.mode for f in etcd_pki.etcd_host_files("etcd-1")}
    assert host == {
        "/etc/etcd/pki/ca.crt": 0o644,
        "/etc/etcd/pki/server.crt": 0o644,
        "/etc/etcd/pki/server.key": 0o600,
        "/etc/etcd/pki/peer.crt": 0o644,
        "/etc/etcd/pki/peer.key": 0o600,
        "/etc/etcd/pki/healthcheck-client.crt": 0o644,
        "/etc/etcd/pki/healthcheck-client.key": 0o600,
    }
    cp = {f.path: f.mode for f in etcd_pki.control_plane_files()}
    assert cp == {
        "/etc/kubernetes/pki/etcd/ca.crt": 0o644,
        "/etc/kubernetes/pki/apiserver-etcd-client.crt": 0o644,
        "/etc/kubernetes/pki/apiserver-etcd-client.key": 0o600,
    }
    # The CA key stays on the operator's machine.
    all_content = "".join(
        f.content for f in [*etcd_pki.etcd_host_files("etcd-3"), *etcd_pki.control_plane_files()]
    )
    assert etcd_pki.ca.key_pem.decode() not in all_content
    other_root = etcd_pki.etcd_host_files("etcd-1", PurePosixPath("/srv/etcd"))
    assert other_root[0].path == "/srv/etcd/ca.crt"
    with pytest.raises(KeyError, match="etcd-9"):
        etcd_pki.etcd_host_files("etcd-9")


def test_etcd_with_and_without_member(etcd_pki: EtcdPKI) -> None:
    grown = etcd_pki.with_member(EtcdMember("etcd-4", "192.168.2.210"))
    assert set(grown.members) == {"etcd-1", "etcd-2", "etcd-3", "etcd-4"}
    assert grown.ca is etcd_pki.ca
    assert is_signed_by(grown.members["etcd-4"].server.cert, etcd_pki.ca.cert)
    assert set(etcd_pki.members) == {"etcd-1", "etcd-2", "etcd-3"}  # original untouched
    assert set(grown.without_member("etcd-1").members) == {"etcd-2", "etcd-3", "etcd-4"}
    with pytest.raises(ValueError, match="duplicate"):
        etcd_pki.with_member(EtcdMember("etcd-5", "192.168.2.207"))


def test_etcd_member_validation() -> None:
    with pytest.raises(ValueError, match="not a lowercase DNS name"):
        EtcdMember("Etcd_1", "10.0.0.1")
    with pytest.raises(ValueError, match="IPv4 or IPv6"):
        EtcdMember("etcd-1", "not-an-ip")
    with pytest.raises(ValueError, match="duplicate"):
        EtcdPKI.generate([EtcdMember("a", "10.0.0.1"), EtcdMember("a", "10.0.0.2")])


def test_etcd_save_load_round_trip(tmp_path: Path, etcd_pki: EtcdPKI) -> None:
    etcd_pki.save(tmp_path)
    assert _mode(tmp_path / "members" / "etcd-1" / "peer.key") == 0o600
    loaded = EtcdPKI.load(tmp_path, MEMBERS)
    assert loaded.ca.cert == etcd_pki.ca.cert
    assert loaded.algorithm is KeyAlgorithm.ECDSA_P256
    assert loaded.members["etcd-3"].server.cert == etcd_pki.members["etcd-3"].server.cert
    assert loaded.etcd_host_files("etcd-2") == etcd_pki.etcd_host_files("etcd-2")
