"""etcd snapshots of hakube's external etcd: save from a healthy member, restore every member.

A snapshot etcd streams ends with the SHA-256 of everything before it (etcd's maintenance
Snapshot RPC appends it; `etcdctl snapshot restore` checks it). hakube checks it too, locally and
before anything is stopped, so a truncated or corrupt file never costs the cluster its data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hakube.fileio import write_private
from hakube.phases.base import Event, EventKind
from hakube.phases.context import Context
from hakube.phases.etcd import endpoint_health, wait_healthy
from hakube.render.etcd import etcd_initial_cluster, etcdctl
from hakube.spec.model import Cluster, EtcdTopology, Host
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.workflows.apply import ApplyLocked, cluster_lock
from hakube.workflows.ops import OpsError, OpsInputError, in_session, require_reachable, session

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hakube.workflows.ops import Reach

DEFAULT_KEEP = 10
#: Where a snapshot is staged on an etcd host (root only).
REMOTE_DIR = "/var/lib/hakube/snapshots"
_HASH_SIZE = 32  # sha256
_PAGE = 512  # etcd's own test: a db file is a whole number of 512-byte blocks


@dataclass
class SnapshotInfo:
    path: str
    sha256: str
    revision: int
    total_keys: int
    size: int
    member: str
    created: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreResult:
    snapshot: SnapshotInfo
    revision: int
    members: list[str]
    old_data_dirs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "snapshot": self.snapshot.as_dict()}


def snapshot_dir(state: StateDir) -> Path:
    return state.path / "snapshots"


def check_snapshot_bytes(data: bytes, source: str) -> None:
    """Refuse a file that is not a whole etcd snapshot (truncated, corrupt, or something else)."""
    if len(data) < _PAGE + _HASH_SIZE or len(data) % _PAGE != _HASH_SIZE:
        raise OpsInputError(
            f"{source} is not a complete etcd snapshot ({len(data)} bytes; a snapshot is whole "
            "512-byte blocks plus a 32-byte checksum): it is truncated or not a snapshot. "
            "Nothing was stopped."
        )
    body, digest = data[:-_HASH_SIZE], data[-_HASH_SIZE:]
    if hashlib.sha256(body).digest() != digest:
        raise OpsInputError(
            f"{source}: the checksum etcd wrote at its end does not match its content: the file "
            "is corrupt. Nothing was stopped."
        )


def _meta_path(snapshot: Path) -> Path:
    return snapshot.with_suffix(".json")


def load_info(path: Path) -> SnapshotInfo | None:
    meta = _meta_path(path)
    if not meta.exists():
        return None
    return SnapshotInfo(**json.loads(meta.read_text()))


def prune(directory: Path, keep: int) -> list[Path]:
    snaps = sorted(directory.glob("*.db"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in snaps[keep:]:
        old.unlink()
        _meta_path(old).unlink(missing_ok=True)
        removed.append(old)
    return removed


def _require_external(cluster: Cluster) -> None:
    if cluster.etcd.topology is not EtcdTopology.EXTERNAL or not cluster.etcd_hosts:
        raise OpsInputError(
            "etcd snapshot works on hakube's external etcd (etcd.topology: external); for "
            "stacked etcd (kubeadm's static pods) it is not implemented yet"
        )


async def _healthy_member(ctx: Context, errors: dict[str, str]) -> Host:
    for h in ctx.run.cluster.etcd_hosts:
        if h.name in errors:
            continue
        health = await endpoint_health(ctx, h)
        if any(e.get("health") is True for e in health):
            return h
    raise OpsError("no healthy etcd member to take a snapshot from (see `hakube status`)")


async def _status(ctx: Context, host: Host, path: str) -> dict[str, Any]:
    command = etcdctl(ctx.run.cluster, "snapshot", "status", shlex.quote(path), "-w", "json")
    res = await ctx.facts.read(host, command, check=False)
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        data = None
    if not res.ok or not isinstance(data, dict):
        raise OpsInputError(
            f"{host.name}: etcdctl cannot read the snapshot ({res.stderr_tail(3)}). "
            "Nothing was stopped."
        )
    return data


async def save(
    ctx: Context, errors: dict[str, str], *, out: Path | None, keep: int
) -> SnapshotInfo:
    host = await _healthy_member(ctx, errors)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    remote = f"{REMOTE_DIR}/{ctx.run.cluster.name}-{stamp}.db"
    got: dict[str, Any] = {}

    async def take(t: Transport) -> None:
        # Staged on the member (root only), read back, removed: nothing stays on the host.
        await t.run(f"install -d -m 700 {REMOTE_DIR}")
        try:
            res = await t.run(
                etcdctl(ctx.run.cluster, "snapshot", "save", shlex.quote(remote)), check=False,
                timeout=600,
            )  # fmt: skip
            if not res.ok:
                raise OpsError(f"{host.name}: etcdctl snapshot save failed: {res.stderr_tail(5)}")
            got["status"] = await _status(ctx, host, remote)
            got["data"] = await t.get(remote)
        finally:
            await t.run(f"rm -f {shlex.quote(remote)}", check=False)

    await ctx.do.change(host, "take an etcd snapshot", take)
    st: dict[str, Any] = got["status"]
    data: bytes = got["data"]
    check_snapshot_bytes(data, f"the snapshot from {host.name}")
    rev = int(st.get("revision", 0))
    target = out or snapshot_dir(ctx.run.state) / f"{ctx.run.cluster.name}-{stamp}-rev{rev}.db"
    write_private(target, data)
    info = SnapshotInfo(
        path=str(target),
        sha256=hashlib.sha256(data).hexdigest(),
        revision=rev,
        total_keys=int(st.get("totalKey", 0)),
        size=len(data),
        member=host.name,
        created=stamp,
    )
    write_private(_meta_path(target), json.dumps(info.as_dict(), indent=2).encode())
    if out is None:
        prune(snapshot_dir(ctx.run.state), keep)
    ctx.report(Event(EventKind.CHANGE, "etcd/snapshot", host.name,
                     f"saved revision {rev} ({len(data)} bytes) to {target}"))  # fmt: skip
    return info


def read_snapshot(path: Path) -> tuple[bytes, SnapshotInfo]:
    """The snapshot's bytes and what is known of it; OpsInputError if it cannot be used."""
    if not path.is_file():
        raise OpsInputError(f"{path}: no such snapshot file")
    data = path.read_bytes()
    check_snapshot_bytes(data, str(path))
    info = load_info(path)
    digest = hashlib.sha256(data).hexdigest()
    if info is not None and info.sha256 != digest:
        raise OpsInputError(
            f"{path} does not match the checksum recorded when it was saved "
            f"({_meta_path(path)}): it was changed since. Nothing was stopped."
        )
    if info is None:
        info = SnapshotInfo(str(path), digest, 0, 0, len(data), "", "")
    return data, info


async def restore(ctx: Context, errors: dict[str, str], path: Path) -> RestoreResult:
    started = time.monotonic()
    c = ctx.run.cluster
    hosts = c.etcd_hosts
    require_reachable(errors, hosts)
    data, info = read_snapshot(path)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    remote = f"{REMOTE_DIR}/restore-{stamp}.db"

    async def put(t: Transport) -> None:
        await t.run(f"install -d -m 700 {REMOTE_DIR}")
        await t.put(remote, data, mode=0o600)

    async def stage(h: Host) -> dict[str, Any]:
        await ctx.do.change(h, f"stage the snapshot in {remote}", put)
        return await _status(ctx, h, remote)

    # Every member gets the file and reads it BEFORE anything stops.
    statuses = await asyncio.gather(*(stage(h) for h in hosts))
    revision = int(statuses[0].get("revision", 0))
    info.revision = info.revision or revision
    token = f"hakube-{c.name}-restore-{stamp}".lower()
    data_dir = c.etcd.data_dir
    old = f"{data_dir}.before-restore-{stamp}"
    initial = etcd_initial_cluster(c)

    async def stop(h: Host) -> None:
        await ctx.do.sh(h, "stop etcd", "systemctl stop etcd")

    kept: dict[str, str] = {}

    async def rebuild(h: Host) -> None:
        peer = f"https://{h.address}:{c.etcd.peer_port}"
        q = shlex.quote
        restore_cmd = (
            f"snapshot restore {q(remote)} --name {q(h.name)} --initial-cluster {q(initial)} "
            f"--initial-cluster-token {q(token)} --initial-advertise-peer-urls {q(peer)} "
            f"--data-dir {q(data_dir)}"
        )
        existed = (await ctx.facts.read(h, f"test -e {q(data_dir)}", check=False)).ok
        if existed:
            kept[h.name] = old
        # etcd >= 3.5 moved offline restore to etcdutl; Debian 12's 3.4 has it in etcdctl.
        await ctx.do.sh(
            h,
            f"restore {data_dir} from the snapshot as member {h.name}"
            + (f" (old one kept as {old})" if existed else ""),
            f"set -e; if [ -e {q(data_dir)} ]; then mv {q(data_dir)} {q(old)}; fi; "
            f"if command -v etcdutl >/dev/null; then etcdutl {restore_cmd}; "
            f"else ETCDCTL_API=3 etcdctl {restore_cmd}; fi; "
            f"chown -R etcd:etcd {q(data_dir)} 2>/dev/null || true; chmod 700 {q(data_dir)}; "
            f"rm -f {q(remote)}",
        )

    async def start(h: Host) -> None:
        # --no-block: a member only reports ready once a quorum of its peers is up.
        await ctx.do.sh(h, "start etcd", "systemctl start --no-block etcd")

    await asyncio.gather(*(stop(h) for h in hosts))
    await asyncio.gather(*(rebuild(h) for h in hosts))
    await asyncio.gather(*(start(h) for h in hosts))
    await wait_healthy(ctx, hosts[0], whole_cluster=True, timeout=90)
    res = await ctx.facts.read(
        hosts[0], etcdctl(c, "endpoint", "status", "-w", "json"), check=False
    )
    try:
        now_rev = int(json.loads(res.stdout)[0]["Status"]["header"]["revision"])
    except (ValueError, LookupError, TypeError):
        now_rev = -1
    if now_rev < revision:
        raise OpsError(
            f"etcd is healthy again but at revision {now_rev}, not the snapshot's {revision}"
        )
    return RestoreResult(
        snapshot=info,
        revision=now_rev,
        members=[h.name for h in hosts],
        old_data_dirs=kept,
        seconds=time.monotonic() - started,
    )


async def run_save(
    cluster: Cluster,
    state: StateDir,
    *,
    out: Path | None = None,
    keep: int = DEFAULT_KEEP,
    **reach: Unpack[Reach],
) -> SnapshotInfo:
    _require_external(cluster)
    if keep < 1:
        raise OpsInputError("--keep must be at least 1")
    snapshot = functools.partial(save, out=out, keep=keep)
    return await in_session(cluster, state, "etcd/snapshot", snapshot, **reach)


async def run_restore(
    cluster: Cluster,
    state: StateDir,
    path: Path,
    **reach: Unpack[Reach],
) -> RestoreResult:
    _require_external(cluster)
    read_snapshot(path)  # bad input fails here, before any host is contacted
    try:
        with cluster_lock(state):
            async with session(cluster, state, phase="etcd/restore", **reach) as (ctx, errors):
                return await restore(ctx, errors, path)
    except ApplyLocked as e:
        raise OpsError(str(e)) from None
