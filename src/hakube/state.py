"""The per-cluster state directory: generated secrets, PKI, journal, logs and a lock.

Everything secret is written 0600 inside a 0700 directory and never leaves it except to the
hosts that need it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path

from hakube.fileio import write_private
from hakube.pki.cluster import ClusterPKI
from hakube.pki.etcd import EtcdMember, EtcdPKI
from hakube.secrets import Secrets

#: Default home of state directories; HAKUBE_STATE_DIR overrides it.
DEFAULT_STATE_ROOT = Path.home() / ".local" / "state" / "hakube"


def state_root() -> Path:
    env = os.environ.get("HAKUBE_STATE_DIR")
    return Path(env) if env else DEFAULT_STATE_ROOT


class StateDir:
    def __init__(self, cluster_name: str, root: Path | None = None) -> None:
        self.path = (root or state_root()) / cluster_name

    def ensure(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        return self.path

    @property
    def secrets_file(self) -> Path:
        return self.path / "secrets.json"

    def secrets(self, *, create: bool = True) -> Secrets:
        """Load the cluster's secrets, generating them on first use."""
        f = self.secrets_file
        if f.exists():
            data = json.loads(f.read_text())
            known = {x.name for x in fields(Secrets)}
            fresh = asdict(Secrets.generate())
            # A secret added in a newer hakube is generated once and stored beside the old ones.
            merged = {k: data.get(k, fresh[k]) for k in known}
            if merged != data:
                write_private(f, json.dumps(merged, indent=2).encode())
            return Secrets(**merged)
        s = Secrets.generate()
        if create:
            self.ensure()
            write_private(f, json.dumps(asdict(s), indent=2).encode())
        return s

    # PKI: generated here once, on the operator's machine, then copied to the hosts.

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    def cluster_pki(self) -> ClusterPKI:
        self.ensure()
        return ClusterPKI.load_or_generate(self.pki_dir / "kubernetes")

    def etcd_pki(self, members: list[EtcdMember]) -> EtcdPKI:
        """The external etcd PKI, with certificates for any member that has none yet."""
        d = self.pki_dir / "etcd"
        if not (d / "ca.crt").exists():
            self.ensure()
            pki = EtcdPKI.generate(members)
            pki.save(d)
            return pki
        have = [m for m in members if (d / "members" / m.name / "server.crt").exists()]
        pki = EtcdPKI.load(d, have)
        changed = False
        for m in members:
            if m not in have:
                pki = pki.with_member(m)
                changed = True
        if changed:
            pki.save(d)
        return pki
