"""PKI for an external etcd cluster, in the layout kubeadm expects for ``etcd.external``.

On each etcd host: ``/etc/etcd/pki/{ca.crt,server.crt,server.key,peer.crt,peer.key}`` plus a
client certificate for ``etcdctl`` health checks. On each control-plane node:
``/etc/kubernetes/pki/etcd/ca.crt`` and ``/etc/kubernetes/pki/apiserver-etcd-client.{crt,key}``,
the paths a ClusterConfiguration's ``etcd.external.{caFile,certFile,keyFile}`` point to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING

from hakube.pki.certs import (
    CA_VALIDITY,
    LEAF_VALIDITY,
    CertAndKey,
    CertUsage,
    KeyAlgorithm,
    generate_ca,
    issue_certificate,
    key_algorithm,
    load_cert_and_key,
    save_cert_and_key,
)
from hakube.pki.layout import ETCD_HOST_PKI_DIR, KUBERNETES_PKI_DIR, pki_file
from hakube.render.base import RenderedFile

if TYPE_CHECKING:
    from hakube.spec.model import Cluster

__all__ = [
    "APISERVER_ETCD_CLIENT_COMMON_NAME",
    "ETCD_CA_COMMON_NAME",
    "HEALTHCHECK_CLIENT_COMMON_NAME",
    "EtcdMember",
    "EtcdMemberCerts",
    "EtcdPKI",
    "etcd_members",
]

# Same names kubeadm uses for its stacked-etcd certificates.
ETCD_CA_COMMON_NAME = "etcd-ca"
APISERVER_ETCD_CLIENT_COMMON_NAME = "kube-apiserver-etcd-client"
HEALTHCHECK_CLIENT_COMMON_NAME = "kube-etcd-healthcheck-client"

# Member names end up in file paths of the state directory and in SANs.
_MEMBER_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class EtcdMember:
    name: str
    ip: str

    def __post_init__(self) -> None:
        if not _MEMBER_NAME_RE.fullmatch(self.name):
            raise ValueError(f"etcd member name {self.name!r} is not a lowercase DNS name")
        ipaddress.ip_address(self.ip)  # raises ValueError naming the bad address


@dataclass(frozen=True)
class EtcdMemberCerts:
    member: EtcdMember
    server: CertAndKey
    peer: CertAndKey


def _issue_member(
    ca: CertAndKey,
    member: EtcdMember,
    *,
    algorithm: KeyAlgorithm,
    validity: dt.timedelta,
    now: dt.datetime | None,
) -> EtcdMemberCerts:
    server = issue_certificate(
        ca,
        member.name,
        # etcd's gRPC gateway dials its own client port with the server certificate, so the
        # server certificate must be good for client auth too (kubeadm does the same).
        CertUsage.PEER,
        dns_names=[member.name, "localhost"],
        ip_addresses=[member.ip, "127.0.0.1"],
        algorithm=algorithm,
        validity=validity,
        now=now,
    )
    peer = issue_certificate(
        ca,
        member.name,
        CertUsage.PEER,
        dns_names=[member.name],
        ip_addresses=[member.ip],
        algorithm=algorithm,
        validity=validity,
        now=now,
    )
    return EtcdMemberCerts(member=member, server=server, peer=peer)


def _files(
    directory: PurePosixPath, stem: str, bundle: CertAndKey, owner: str
) -> list[RenderedFile]:
    return [
        pki_file(directory / f"{stem}.crt", bundle.cert_pem, 0o644, owner),
        pki_file(directory / f"{stem}.key", bundle.key_pem, 0o600, owner),
    ]


@dataclass(frozen=True)
class EtcdPKI:
    ca: CertAndKey
    apiserver_client: CertAndKey
    healthcheck_client: CertAndKey
    members: Mapping[str, EtcdMemberCerts] = field(default_factory=dict)
    algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256

    def __post_init__(self) -> None:
        # Frozen all the way down: callers get a new EtcdPKI from with_member, never a mutation.
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))

    @classmethod
    def generate(
        cls,
        members: Iterable[EtcdMember],
        *,
        algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
        ca_validity: dt.timedelta = CA_VALIDITY,
        cert_validity: dt.timedelta = LEAF_VALIDITY,
        now: dt.datetime | None = None,
    ) -> EtcdPKI:
        member_list = list(members)
        _check_unique(member_list)
        ca = generate_ca(ETCD_CA_COMMON_NAME, algorithm=algorithm, validity=ca_validity, now=now)
        return cls._issued(ca, member_list, algorithm, cert_validity, now)

    @classmethod
    def _issued(
        cls,
        ca: CertAndKey,
        members: list[EtcdMember],
        algorithm: KeyAlgorithm,
        validity: dt.timedelta,
        now: dt.datetime | None,
    ) -> EtcdPKI:
        """Every leaf certificate (the two clients and each member's) issued under `ca`."""

        def client(common_name: str) -> CertAndKey:
            return issue_certificate(
                ca, common_name, CertUsage.CLIENT, algorithm=algorithm, validity=validity, now=now
            )

        return cls(
            ca=ca,
            apiserver_client=client(APISERVER_ETCD_CLIENT_COMMON_NAME),
            healthcheck_client=client(HEALTHCHECK_CLIENT_COMMON_NAME),
            members={
                m.name: _issue_member(ca, m, algorithm=algorithm, validity=validity, now=now)
                for m in members
            },
            algorithm=algorithm,
        )

    def with_member(
        self,
        member: EtcdMember,
        *,
        cert_validity: dt.timedelta = LEAF_VALIDITY,
        now: dt.datetime | None = None,
    ) -> EtcdPKI:
        """A copy with certificates for one more (or a re-addressed) member, same CA."""
        others = [m.member for name, m in self.members.items() if name != member.name]
        _check_unique([*others, member])
        certs = _issue_member(
            self.ca, member, algorithm=self.algorithm, validity=cert_validity, now=now
        )
        return EtcdPKI(
            ca=self.ca,
            apiserver_client=self.apiserver_client,
            healthcheck_client=self.healthcheck_client,
            members={**self.members, member.name: certs},
            algorithm=self.algorithm,
        )

    def renewed(
        self, *, cert_validity: dt.timedelta = LEAF_VALIDITY, now: dt.datetime | None = None
    ) -> EtcdPKI:
        """Every leaf certificate issued again (new keys, new validity) under the same CA, so
        members with old and new certificates keep trusting each other during a rolling renew."""
        members = [m.member for m in self.members.values()]
        return self._issued(self.ca, members, self.algorithm, cert_validity, now)

    def without_member(self, name: str) -> EtcdPKI:
        return EtcdPKI(
            ca=self.ca,
            apiserver_client=self.apiserver_client,
            healthcheck_client=self.healthcheck_client,
            members={k: v for k, v in self.members.items() if k != name},
            algorithm=self.algorithm,
        )

    def etcd_host_files(
        self, name: str, pki_dir: PurePosixPath | str = ETCD_HOST_PKI_DIR
    ) -> list[RenderedFile]:
        """Files for the etcd host running member ``name``, owned by the etcd user.

        The CA key never leaves the operator's machine: members need only to verify, not sign.
        """
        try:
            certs = self.members[name]
        except KeyError:
            raise KeyError(f"no etcd member named {name!r}") from None
        root = PurePosixPath(pki_dir)
        return [
            pki_file(root / "ca.crt", self.ca.cert_pem, 0o644, "etcd"),
            *_files(root, "server", certs.server, "etcd"),
            *_files(root, "peer", certs.peer, "etcd"),
            *_files(root, "healthcheck-client", self.healthcheck_client, "etcd"),
        ]

    def control_plane_files(
        self, pki_dir: PurePosixPath | str = KUBERNETES_PKI_DIR
    ) -> list[RenderedFile]:
        """Files for each control-plane node talking to this etcd cluster."""
        root = PurePosixPath(pki_dir)
        return [
            pki_file(root / "etcd" / "ca.crt", self.ca.cert_pem, 0o644),
            *_files(root, "apiserver-etcd-client", self.apiserver_client, "root"),
        ]

    # --- local state ---------------------------------------------------------------------------

    def save(self, directory: Path | str) -> None:
        """Store under ``directory``: ca.*, apiserver-etcd-client.*, healthcheck-client.*,
        members/<name>/{server,peer}.*"""
        d = Path(directory)
        save_cert_and_key(self.ca, d / "ca.crt", d / "ca.key")
        save_cert_and_key(
            self.apiserver_client, d / "apiserver-etcd-client.crt", d / "apiserver-etcd-client.key"
        )
        save_cert_and_key(
            self.healthcheck_client, d / "healthcheck-client.crt", d / "healthcheck-client.key"
        )
        for name, certs in self.members.items():
            md = d / "members" / name
            save_cert_and_key(certs.server, md / "server.crt", md / "server.key")
            save_cert_and_key(certs.peer, md / "peer.crt", md / "peer.key")

    @classmethod
    def load(cls, directory: Path | str, members: Iterable[EtcdMember]) -> EtcdPKI:
        """Load what :meth:`save` wrote, for the given members (their IPs are not stored)."""
        d = Path(directory)
        ca = load_cert_and_key(d / "ca.crt", d / "ca.key")
        loaded: dict[str, EtcdMemberCerts] = {}
        for member in members:
            md = d / "members" / member.name
            loaded[member.name] = EtcdMemberCerts(
                member=member,
                server=load_cert_and_key(md / "server.crt", md / "server.key"),
                peer=load_cert_and_key(md / "peer.crt", md / "peer.key"),
            )
        return cls(
            ca=ca,
            apiserver_client=load_cert_and_key(
                d / "apiserver-etcd-client.crt", d / "apiserver-etcd-client.key"
            ),
            healthcheck_client=load_cert_and_key(
                d / "healthcheck-client.crt", d / "healthcheck-client.key"
            ),
            members=loaded,
            algorithm=key_algorithm(ca.key),
        )


def _check_unique(members: list[EtcdMember]) -> None:
    names = [m.name for m in members]
    ips = [m.ip for m in members]
    dup_names = sorted({n for n in names if names.count(n) > 1})
    dup_ips = sorted({i for i in ips if ips.count(i) > 1})
    if dup_names or dup_ips:
        raise ValueError(f"duplicate etcd members: names {dup_names}, addresses {dup_ips}")


def etcd_members(cluster: Cluster) -> list[EtcdMember]:
    """One member per etcd host of the cluster, named and addressed like the host."""
    return [EtcdMember(h.name, str(h.address)) for h in cluster.etcd_hosts]
