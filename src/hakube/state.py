"""The per-cluster state directory: generated secrets, PKI, journal, logs and a lock.

Everything secret is written 0600 inside a 0700 directory and never leaves it except to the
hosts that need it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import TypeVar

from hakube.fileio import write_private
from hakube.pki.certs import ca_cert_hash
from hakube.pki.cluster import ClusterPKI
from hakube.pki.etcd import EtcdMember, EtcdPKI
from hakube.record import ClusterRecord, load_record, save_record
from hakube.secrets import Secrets

_T = TypeVar("_T")

#: Default home of state directories; HAKUBE_STATE_DIR overrides it.
DEFAULT_STATE_ROOT = Path.home() / ".local" / "state" / "hakube"


def state_root() -> Path:
    env = os.environ.get("HAKUBE_STATE_DIR")
    return Path(env) if env else DEFAULT_STATE_ROOT


class StateDir:
    """One cluster's state directory.

    With ``persist=False`` (dry runs) nothing is ever written: what is missing is generated in
    memory, kept for the run so that every phase sees the same values, and dropped at the end.
    """

    def __init__(
        self, cluster_name: str, root: Path | None = None, *, persist: bool = True
    ) -> None:
        self.path = (root or state_root()) / cluster_name
        self.persist = persist
        self._memory: dict[str, object] = {}

    def read_only(self) -> StateDir:
        """The same directory, for a run that must not create or change anything locally."""
        return StateDir(self.path.name, self.path.parent, persist=False)

    def record(self) -> ClusterRecord:
        """The recorded cluster; a new one (new UUID) is saved on first use unless read-only."""
        cached = self._memory.get("record")
        if isinstance(cached, ClusterRecord):
            return cached
        found = load_record(self.path)
        if found is None:
            found = ClusterRecord.new(self.path.name)
            self.save_record(found)
        self._memory["record"] = found  # one object per run, whatever the mode
        return found

    def save_record(self, record: ClusterRecord) -> None:
        if self.persist:
            self.ensure()
            save_record(self.path, record)

    def exists(self) -> bool:
        return self.path.is_dir()

    def ensure(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        return self.path

    @property
    def secrets_file(self) -> Path:
        return self.path / "secrets.json"

    def secrets(self, *, create: bool = True) -> Secrets:
        """Load the cluster's secrets, generating them on first use."""
        create = create and self.persist
        cached = self._memory.get("secrets")
        if isinstance(cached, Secrets):
            return cached
        f = self.secrets_file
        if f.exists():
            data = json.loads(f.read_text())
            known = {x.name for x in fields(Secrets)}
            fresh = asdict(Secrets.generate())
            # A secret added in a newer hakube is generated once and stored beside the old ones.
            merged = {k: data.get(k, fresh[k]) for k in known}
            if merged != data and self.persist:
                write_private(f, json.dumps(merged, indent=2).encode())
            return self._remember("secrets", Secrets(**merged))
        s = Secrets.generate()
        if create:
            self.ensure()
            write_private(f, json.dumps(asdict(s), indent=2).encode())
        return self._remember("secrets", s)

    def _remember(self, key: str, value: _T) -> _T:
        if not self.persist:
            self._memory[key] = value
        return value

    # PKI: generated here once, on the operator's machine, then copied to the hosts.

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    def cluster_pki(self) -> ClusterPKI:
        cached = self._memory.get("cluster_pki")
        if isinstance(cached, ClusterPKI):
            return cached
        d = self.pki_dir / "kubernetes"
        if not self.persist:
            found = (d / "ca.key").exists()
            return self._remember(
                "cluster_pki", ClusterPKI.load(d) if found else ClusterPKI.generate()
            )
        self.ensure()
        return ClusterPKI.load_or_generate(d)

    def existing_secrets(self) -> Secrets | None:
        """The cluster's secrets if every one was generated already; never creates any (a
        set from an older hakube that lacks a newer secret counts as not generated yet)."""
        if not self.secrets_file.exists():
            return None
        stored = json.loads(self.secrets_file.read_text())
        if not {x.name for x in fields(Secrets)} <= set(stored):
            return None
        return self.read_only().secrets()

    def existing_ca_cert_hash(self) -> str | None:
        """The discovery hash of the cluster CA if it exists already; never creates one."""
        cert = self.pki_dir / "kubernetes" / "ca.crt"
        if not cert.exists():
            return None
        return ca_cert_hash(cert.read_bytes())

    def etcd_pki(self, members: list[EtcdMember]) -> EtcdPKI:
        """The external etcd PKI, with certificates for any member that has none yet."""
        d = self.pki_dir / "etcd"
        cached = self._memory.get("etcd_pki")
        if isinstance(cached, EtcdPKI):
            pki = cached
        elif not (d / "ca.crt").exists():
            pki = EtcdPKI.generate(members)
            if self.persist:
                self.ensure()
                pki.save(d)
            return self._remember("etcd_pki", pki)
        else:
            have = [m for m in members if (d / "members" / m.name / "server.crt").exists()]
            pki = EtcdPKI.load(d, have)
        changed = False
        for m in members:
            if m.name not in pki.members:
                pki = pki.with_member(m)
                changed = True
        if changed and self.persist:
            pki.save(d)
        return self._remember("etcd_pki", pki)
