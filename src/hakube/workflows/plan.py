"""plan and render: what apply would do, from the spec alone (no host is contacted)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakube.fileio import write_private
from hakube.membership import membership
from hakube.phases.base import Phase, RenderInput
from hakube.record import ClusterRecord
from hakube.render import render_host
from hakube.secrets import Secrets
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.workflows.apply import apply_phases


@dataclass(frozen=True)
class PlannedFile:
    path: str
    mode: int
    secret: bool
    #: Sent from this workstation (False: the host makes it, e.g. kubeadm's admin.conf).
    sent: bool = True


@dataclass
class PlannedPhase:
    name: str
    summary: str
    files: list[PlannedFile] = field(default_factory=list)


@dataclass
class PlannedHost:
    host: str
    address: str
    roles: list[str]
    phases: list[PlannedPhase] = field(default_factory=list)

    @property
    def secrets_sent(self) -> list[str]:
        """Every secret file that leaves the workstation for this host (keys, passwords,
        tokens), in phase order."""
        out = [f.path for p in self.phases for f in p.files if f.secret and f.sent]
        return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Plan:
    """What `plan()` found, built once it has walked every host."""

    cluster: str
    endpoint: str
    hosts: list[PlannedHost]
    #: Phases no host of this cluster needs (no VIP, stacked etcd, ...).
    skipped: list[str]
    #: Hosts joining, and recorded hosts missing from the file (see hakube.membership).
    membership: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "endpoint": self.endpoint,
            "hosts": [
                {
                    "host": h.host,
                    "address": h.address,
                    "roles": h.roles,
                    "secrets_sent": h.secrets_sent,
                    "phases": [
                        {
                            "name": p.name,
                            "summary": p.summary,
                            "files": [
                                {
                                    "path": f.path,
                                    "mode": f"{f.mode:04o}",
                                    "secret": f.secret,
                                    "sent": f.sent,
                                }
                                for f in p.files
                            ],
                        }
                        for p in h.phases
                    ],
                }
                for h in self.hosts
            ],
            "skipped": self.skipped,
            "membership": self.membership,
        }


def build_plan(
    cluster: Cluster,
    secrets: Secrets | None = None,
    phases: list[Phase] | None = None,
    record: ClusterRecord | None = None,
) -> Plan:
    """Per host, the phases that apply would run there and the files each writes.

    Secrets only shape file contents, never which files exist, so throwaway ones do here and
    `plan` never creates a state directory.
    """
    secrets = secrets or Secrets.generate()
    phases = phases if phases is not None else apply_phases()
    hosts: list[PlannedHost] = []
    used: set[str] = set()
    targets = {p.name: {t.name for t in p.targets(cluster)} for p in phases}
    for host in cluster.hosts:
        hp = PlannedHost(host.name, str(host.address), [r.value for r in host.roles])
        for phase in phases:
            if host.name not in targets[phase.name]:
                continue
            used.add(phase.name)
            rendered = sorted(
                phase.files(RenderInput(cluster, host, secrets)), key=lambda f: f.path
            )
            files = [PlannedFile(f.path, f.mode, f.secret) for f in rendered]
            files += [
                PlannedFile(path, mode, not mode & 0o077, path not in phase.made_on_host)
                for path, mode in phase.extra_paths(cluster, host)
            ]
            hp.phases.append(PlannedPhase(phase.name, phase.summary, files))
        hosts.append(hp)
    return Plan(
        cluster.name,
        cluster.control_plane_endpoint,
        hosts,
        skipped=[p.name for p in phases if p.name not in used],
        membership=membership(cluster, record).lines() if record is not None else [],
    )


class RenderTargetError(ValueError):
    """The output directory cannot be created or written."""


def check_writable_dir(out: Path) -> None:
    """Create `out` if needed and prove a file can be written in it."""
    existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        if not existed and out.is_dir():
            out.rmdir()
        reason = e.strerror or str(e)
        raise RenderTargetError(
            f"cannot write into {out}: {reason}; choose a directory you can write "
            "(--out-dir/-d DIR). Nothing was created."
        ) from None


#: Stand-in CA hashes that only tell which files depend on the CA; never written anywhere.
_PROBE_HASHES = ("sha256:" + "0" * 64, "sha256:" + "f" * 64)


@dataclass
class RenderResult:
    written: int = 0
    #: "<host>:<path>" of files that hold a secret (or the CA's hash) not generated yet.
    withheld: list[str] = field(default_factory=list)


def render_to_dir(cluster: Cluster, out: Path, state: StateDir | None = None) -> RenderResult:
    """Write every host's rendered files under out/<host>/<path>, secrets 0600.

    Secrets and the CA come from the state directory, which render never creates or changes:
    before the first apply has generated them, the files that would hold them are withheld
    (named in the result) and every other file is written as apply would write it. Which
    files depend on them is found by rendering with two different throwaway sets: a file that
    differs holds one, and neither throwaway value ever reaches the output.

    The output directory is checked first: a path that cannot be written fails with
    `RenderTargetError` before anything is written.
    """
    state = state or StateDir(cluster.name)
    secrets = state.existing_secrets()
    ca_hash = state.existing_ca_cert_hash()
    check_writable_dir(out)
    complete = secrets is not None and ca_hash is not None
    (s1, h1), (s2, h2) = ((secrets or Secrets.generate(), ca_hash or p) for p in _PROBE_HASHES)
    result = RenderResult()
    for host in cluster.hosts:
        files = render_host(cluster, host, s1, ca_cert_hash=h1)
        others = files if complete else render_host(cluster, host, s2, ca_cert_hash=h2)
        for f, other in zip(files, others, strict=True):
            if f.content != other.content:
                result.withheld.append(f"{host.name}:{f.path}")
                continue
            target = out / host.name / f.path.lstrip("/")
            if f.secret or not f.mode & 0o077:
                write_private(target, f.content.encode())
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f.content)
                os.chmod(target, f.mode)
            result.written += 1
    return result
