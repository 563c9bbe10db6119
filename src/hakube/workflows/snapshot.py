"""etcd snapshots: save from a healthy member, restore every member with the apiservers stopped.

Both of hakube's etcd topologies: its external members (systemd unit) and kubeadm's stacked
ones (static pods on the control planes; see `etcd_access`). A restore writes each member's new
data dir while everything still runs, so a snapshot the hosts cannot restore stops nothing; only
then are the apiservers and every member stopped, the data dirs swapped, the members started
together and, once etcd is healthy at the snapshot's revision, the apiservers started again one
host at a time.

A snapshot etcd streams ends with the SHA-256 of everything before it (etcd's maintenance
Snapshot RPC appends it; `etcdctl snapshot restore` checks it). hakube checks it too, locally and
before anything is stopped, so a truncated or corrupt file never costs the cluster its data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hakube.fileio import write_private
from hakube.phases.base import Event, EventKind
from hakube.phases.context import Context, Timeout
from hakube.phases.etcd import endpoint_health, wait_healthy
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.workflows.apiserver import start_apiservers, stop_apiservers
from hakube.workflows.apply import ApplyLocked, cluster_lock
from hakube.workflows.etcd_access import NO_TOOL, EtcdAccess, etcd_access
from hakube.workflows.ops import (
    FAILURES,
    OpsError,
    OpsInputError,
    in_session,
    known_cluster,
    require_reachable,
    session,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hakube.workflows.ops import Reach

DEFAULT_KEEP = 10
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
    #: How each control plane's apiserver ran (static-pod, unit, none): stopped, then restarted.
    apiservers: dict[str, str] = field(default_factory=dict)
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


def _access(cluster: Cluster, state: StateDir) -> EtcdAccess:
    access = etcd_access(cluster, kubernetes=known_cluster(cluster, state).kubernetes)
    if access is None or not access.hosts:
        raise OpsInputError(
            "etcd is stacked (kubeadm's static pods) and Kubernetes is not installed yet (no "
            "admin.conf in the state dir): there is no etcd to take a snapshot of or restore; "
            "run `hakube apply` first"
        )
    return access


async def _healthy_member(ctx: Context, access: EtcdAccess, errors: dict[str, str]) -> Host:
    for h in access.hosts:
        if h.name in errors:
            continue
        health = await endpoint_health(ctx, h, etcdctl_prefix=access.ctl_prefix)
        if any(e.get("health") is True for e in health):
            return h
    raise OpsError(
        f"no healthy member of {access.what} to take a snapshot from (see `hakube status`)"
    )


async def _status(ctx: Context, access: EtcdAccess, host: Host, path: str) -> dict[str, Any]:
    command = access.offline("snapshot", "status", shlex.quote(path), "-w", "json")
    res = await ctx.facts.read(host, command, check=False)
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        data = None
    if res.exit_status == NO_TOOL:
        raise OpsError(
            f"{host.name}: {res.stderr_tail(1)}: install etcd's client tools there (Debian/Ubuntu "
            "package etcd-client: etcdctl, and etcdutl from etcd 3.5), then run this again. "
            "Nothing was stopped."
        )
    if not res.ok or not isinstance(data, dict):
        raise OpsInputError(
            f"{host.name}: etcd cannot read the snapshot ({res.stderr_tail(3)}). "
            "Nothing was stopped."
        )
    return data


async def save(
    ctx: Context, access: EtcdAccess, errors: dict[str, str], *, out: Path | None, keep: int
) -> SnapshotInfo:
    host = await _healthy_member(ctx, access, errors)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    remote = f"{access.staging}/hakube-snapshot-{stamp}.db"
    got: dict[str, Any] = {}

    async def take(t: Transport) -> None:
        # Staged on the member (root only), read back, removed: nothing stays on the host.
        await t.run(f"install -d -m 700 {access.staging}", timeout=Timeout.READ)
        try:
            res = await t.run(
                access.ctl("snapshot", "save", shlex.quote(remote)), check=False, timeout=600
            )
            if not res.ok:
                raise OpsError(f"{host.name}: etcdctl snapshot save failed: {res.stderr_tail(5)}")
            got["status"] = await _status(ctx, access, host, remote)
            got["data"] = await t.get(remote)
        finally:
            await t.run(
                f"rm -f {shlex.quote(remote)} {shlex.quote(remote)}.part",
                check=False,
                timeout=Timeout.READ,
            )

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


async def _check_members(ctx: Context, access: EtcdAccess, errors: dict[str, str]) -> None:
    """If etcd still answers, its members must be the ones the restore recreates: a cluster
    whose names or peer URLs differ would come back as a different cluster."""
    want = {h.name: access.peer_url(h) for h in access.hosts}
    for h in access.hosts:
        if h.name in errors:
            continue
        res = await ctx.facts.read(h, access.ctl("member", "list", "-w", "json"), check=False)
        try:
            members = json.loads(res.stdout)["members"] if res.ok else None
        except (ValueError, LookupError, TypeError):
            members = None
        if not isinstance(members, list):
            continue
        live = {
            str(m.get("name")): ",".join(m.get("peerURLs") or [])
            for m in members
            if isinstance(m, dict) and m.get("name")
        }
        if live != want:
            show = ", ".join(f"{n}={u}" for n, u in sorted(live.items()))
            raise OpsError(
                f"the running etcd's members ({show}) are not the ones the restore would create "
                f"({access.initial_cluster()}); change the cluster file to match, or restore by "
                "hand. Nothing was stopped."
            )
        return


def _after_move(path: str, data_dir: str, old: str) -> str:
    """Where `path` is once `data_dir` has been renamed to `old`."""
    return old + path[len(data_dir) :] if path.startswith(data_dir + "/") else path


async def restore(
    ctx: Context, access: EtcdAccess, errors: dict[str, str], path: Path
) -> RestoreResult:
    started = time.monotonic()
    c = ctx.run.cluster
    hosts = list(access.hosts)
    control_planes = list(c.control_planes)
    require_reachable(errors, [*hosts, *(h for h in control_planes if h not in hosts)])
    data, info = read_snapshot(path)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    remote = f"{access.staging}/hakube-restore-{stamp}.db"
    token = f"hakube-{c.name}-restore-{stamp}".lower()
    data_dir = access.data_dir
    fresh = access.restore_dir(stamp)
    old = f"{data_dir}.before-restore-{stamp}"
    aside = f"/etc/kubernetes/hakube-restore-aside-{stamp}"
    initial = access.initial_cluster()
    q = shlex.quote
    await _check_members(ctx, access, errors)

    async def put(t: Transport) -> None:
        await t.run(f"install -d -m 700 {access.staging}", timeout=Timeout.READ)
        await t.put(remote, data, mode=0o600)

    async def prepare(h: Host) -> dict[str, Any]:
        await ctx.do.change(h, f"stage the snapshot in {remote}", put)
        st = await _status(ctx, access, h, remote)
        restore_cmd = access.offline(
            "snapshot", "restore", q(remote), "--name", q(h.name),
            "--initial-cluster", q(initial), "--initial-cluster-token", q(token),
            "--initial-advertise-peer-urls", q(access.peer_url(h)), "--data-dir", q(fresh),
        )  # fmt: skip
        await ctx.do.sh(
            h,
            f"restore the snapshot into {fresh} as member {h.name} (etcd still running)",
            f"rm -rf {q(fresh)}; {restore_cmd}",
        )
        return st

    async def discard(h: Host) -> None:
        await ctx.do.sh(h, "remove the staged snapshot and restored data dir",
                        f"rm -rf {q(fresh)} {q(remote)}")  # fmt: skip

    # Every member reads the file and builds its new data dir BEFORE anything stops.
    try:
        statuses = await asyncio.gather(*(prepare(h) for h in hosts))
    except BaseException:
        await asyncio.gather(*(discard(h) for h in hosts), return_exceptions=True)
        raise
    revision = int(statuses[0].get("revision", 0))
    info.revision = info.revision or revision
    kept: dict[str, str] = {}
    for h in hosts:
        if (await ctx.facts.read(h, f"test -e {q(data_dir)}", check=False)).ok:
            kept[h.name] = old

    async def stop(h: Host) -> None:
        await ctx.do.sh(h, *access.stop_etcd(aside))

    async def swap(h: Host) -> None:
        moved = _after_move(fresh, data_dir, old)
        await ctx.do.sh(
            h,
            f"put the restored data dir in place of {data_dir}"
            + (f" (old one kept as {old})" if h.name in kept else ""),
            f"set -e; if [ -e {q(data_dir)} ]; then mv {q(data_dir)} {q(old)}; fi; "
            f"mv {q(moved)} {q(data_dir)}; chown -R etcd:etcd {q(data_dir)} 2>/dev/null || true; "
            f"chmod 700 {q(data_dir)}; rm -f {q(_after_move(remote, data_dir, old))}",
        )

    async def start(h: Host) -> None:
        await ctx.do.sh(h, *access.start_etcd(aside))

    async def bring_back() -> int:
        await asyncio.gather(*(stop(h) for h in hosts))
        await asyncio.gather(*(swap(h) for h in hosts))
        await asyncio.gather(*(start(h) for h in hosts))
        await wait_healthy(ctx, hosts[0], whole_cluster=True, timeout=120,
                           etcdctl_prefix=access.ctl_prefix, members=len(hosts))  # fmt: skip
        res = await ctx.facts.read(
            hosts[0], access.ctl("endpoint", "status", "-w", "json"), check=False
        )
        try:
            now = int(json.loads(res.stdout)[0]["Status"]["header"]["revision"])
        except (ValueError, LookupError, TypeError):
            now = -1
        if now < revision:
            raise OpsError(
                f"etcd is healthy again but at revision {now}, not the snapshot's {revision}"
            )
        return now

    apiservers = await stop_apiservers(ctx, control_planes, aside)
    try:
        now_rev = await bring_back()
    except FAILURES as e:
        # Past this point the operator finishes by hand: say exactly where everything is.
        raise OpsError(
            f"{e}. The restore stopped there: the kube-apiservers stay stopped (kubeadm's "
            f"manifests in {aside}, or their unit); old data dirs are kept as {old}"
            + (f", etcd's manifests may still be in {aside}" if access.stacked else "")
        ) from e
    await start_apiservers(ctx, control_planes, apiservers, aside)
    return RestoreResult(
        snapshot=info,
        revision=now_rev,
        members=[h.name for h in hosts],
        old_data_dirs=kept,
        apiservers={name: str(kind) for name, kind in apiservers.items()},
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
    if keep < 1:
        raise OpsInputError("--keep must be at least 1")
    access = _access(cluster, state)

    async def snapshot(ctx: Context, errors: dict[str, str]) -> SnapshotInfo:
        return await save(ctx, access, errors, out=out, keep=keep)

    return await in_session(cluster, state, "etcd/snapshot", snapshot, **reach)


async def run_restore(
    cluster: Cluster,
    state: StateDir,
    path: Path,
    **reach: Unpack[Reach],
) -> RestoreResult:
    access = _access(cluster, state)
    read_snapshot(path)  # bad input fails here, before any host is contacted
    try:
        with cluster_lock(state):
            async with session(cluster, state, phase="etcd/restore", **reach) as (ctx, errors):
                return await restore(ctx, access, errors, path)
    except ApplyLocked as e:
        raise OpsError(str(e)) from None
