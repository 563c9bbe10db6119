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


@dataclass
class Plan:
    cluster: str
    endpoint: str
    hosts: list[PlannedHost] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: Hosts joining, and recorded hosts missing from the file (see hakube.membership).
    membership: list[str] = field(default_factory=list)

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
    plan = Plan(cluster.name, cluster.control_plane_endpoint)
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
        plan.hosts.append(hp)
    plan.skipped = [p.name for p in phases if p.name not in used]
    if record is not None:
        plan.membership = membership(cluster, record).lines()
    return plan


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


def render_to_dir(cluster: Cluster, out: Path, state: StateDir | None = None) -> int:
    """Write every host's rendered files under out/<host>/<path>, secrets 0600.

    The output directory is checked first: a path that cannot be written fails with
    `RenderTargetError` before any state (secrets, CA) is created."""
    check_writable_dir(out)
    state = state or StateDir(cluster.name)
    secrets = state.secrets()
    ca_hash = state.cluster_pki().ca_cert_hash
    count = 0
    for host in cluster.hosts:
        for f in render_host(cluster, host, secrets, ca_cert_hash=ca_hash):
            target = out / host.name / f.path.lstrip("/")
            if f.secret or not f.mode & 0o077:
                write_private(target, f.content.encode())
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f.content)
                os.chmod(target, f.mode)
            count += 1
    return count
