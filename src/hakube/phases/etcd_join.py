"""A new member for a running external etcd: added as a learner, promoted once caught up.

A learner receives the log but does not vote, so adding one never changes the quorum while it
catches up (a new voting member that is still syncing would count against it). etcd accepts one
learner at a time; the caller serialises joins.

The ``ETCD_INITIAL_CLUSTER*`` settings are only read on a member's first start. A running member
keeps the ones it was started with: the cluster file gaining or losing a host must not rewrite
(and so restart) every member.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shlex
from dataclasses import dataclass

from hakube.phases.base import PhaseError
from hakube.phases.context import Context, Timeout
from hakube.render.base import RenderedFile
from hakube.render.etcd import ETCD_ENV_FILE, etcdctl
from hakube.spec.model import Host
from hakube.transport.base import Transport

BOOTSTRAP_KEYS = ("ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_CLUSTER_STATE")
#: How long a learner may take to catch up before the join is reported as failed (resumable).
PROMOTE_TIMEOUT = 120.0
#: Seconds between promote attempts while the learner catches up.
PROMOTE_RETRY = 1.0


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"


def parse_member_list(text: str) -> list[Member]:
    """``etcdctl member list -w json``; a member added but never started has no name yet."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise PhaseError(f"etcdctl member list printed something that is not JSON: {e}") from None
    out = []
    for m in data.get("members") or []:
        out.append(
            Member(
                id=int(m.get("ID", 0)),
                name=str(m.get("name", "")),
                peer_urls=tuple(map(str, m.get("peerURLs") or [])),
                client_urls=tuple(map(str, m.get("clientURLs") or [])),
                learner=bool(m.get("isLearner", False)),
            )
        )
    return out


def env_values(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


def with_bootstrap(text: str, values: dict[str, str]) -> str:
    """`text` (an etcd environment file) with its first-start settings replaced by `values`."""
    lines = []
    for line in text.splitlines(keepends=True):
        key = line.split("=", 1)[0]
        lines.append(f"{key}={values[key]}\n" if key in BOOTSTRAP_KEYS and key in values else line)
    return "".join(lines)


def bootstrapped(files: list[RenderedFile], values: dict[str, str]) -> list[RenderedFile]:
    """`files` with the etcd env file's first-start settings replaced by `values`."""
    return [
        dataclasses.replace(rf, content=with_bootstrap(rf.content, values))
        if rf.path == ETCD_ENV_FILE
        else rf
        for rf in files
    ]


def peer_url(ctx: Context, host: Host) -> str:
    return f"https://{host.address}:{ctx.run.cluster.etcd.peer_port}"


def live_peer(ctx: Context, host: Host) -> Host | None:
    """Another etcd host of the file whose etcd runs: a cluster exists and `host` joins it.
    Recorded members come first (they were seen healthy)."""
    recorded = set(ctx.run.record.etcd_members) if ctx.run.record else set()
    running = [
        h
        for h in ctx.run.cluster.etcd_hosts
        if h.name != host.name and h in ctx.facts and ctx.facts[h].unit("etcd").running
    ]
    running.sort(key=lambda h: h.name not in recorded)
    return running[0] if running else None


async def members(ctx: Context, via: Host) -> list[Member]:
    res = await ctx.facts.read(
        via, etcdctl(ctx.run.cluster, "member", "list", "-w", "json"), check=False
    )
    if not res.ok:
        raise PhaseError(
            f"etcdctl member list on {via.name} failed ({res.stderr.strip() or res.exit_status}): "
            "a new member can only be added to an etcd that answers; see `journalctl -u etcd`"
        )
    return parse_member_list(res.stdout)


async def keep_bootstrap(ctx: Context, host: Host, files: list[RenderedFile]) -> list[RenderedFile]:
    """`files` with the env file's first-start settings taken from the running member's own."""
    env = next((rf for rf in files if rf.path == ETCD_ENV_FILE), None)
    if env is None or ctx.facts.file_is_current(host, env):
        return files
    res = await ctx.facts.read(host, f"cat {shlex.quote(ETCD_ENV_FILE)}", check=False)
    return as_running(files, res.stdout if res.ok else "")


def as_running(files: list[RenderedFile], env: str) -> list[RenderedFile]:
    """`files` with the env file's first-start settings those of the running member's `env`
    (a member that joined a live cluster keeps `existing` and the list it joined with)."""
    have = env_values(env)
    return bootstrapped(files, {k: have[k] for k in BOOTSTRAP_KEYS if k in have})


async def join(ctx: Context, host: Host, via: Host, files: list[RenderedFile]) -> None:
    """Add `host` to the etcd `via` belongs to (resumable at every step), start it, promote it."""
    url = peer_url(ctx, host)
    found = await members(ctx, via)
    mine = next((m for m in found if url in m.peer_urls), None)
    other = next((m for m in found if m.name == host.name and url not in m.peer_urls), None)
    if other is not None:
        raise PhaseError(
            f"etcd already has a member named {host.name} with peer URLs "
            f"{', '.join(other.peer_urls)}, not {url}: remove it first (`hakube node remove`) "
            "or give this host another name"
        )
    if mine is not None and not mine.learner:
        # One of the members the cluster was bootstrapped with (or already promoted): a normal
        # start, with the configuration it was created with.
        await ctx.do.ensure_files(host, files)
        await _start(ctx, host)
        return
    if mine is None:
        add = etcdctl(
            ctx.run.cluster, "member", "add", host.name, f"--peer-urls={url}", "--learner"
        )
        await ctx.do.change(
            via,
            f"etcd member add {host.name} ({url}) as a learner",
            lambda t: _until_accepted(t, add, "unhealthy cluster", _ADD_REFUSED),
        )
        found = await members(ctx, via) if not ctx.run.dry_run else found
        mine = next((m for m in found if url in m.peer_urls), None)
        if mine is None and not ctx.run.dry_run:
            raise PhaseError(f"etcd member add {host.name} succeeded but {url} is not listed")
    peers = [f"{m.name or host.name}={m.peer_urls[0]}" for m in found if m.peer_urls]
    if mine is None:  # dry run: the member list as it will be after the add
        peers.append(f"{host.name}={url}")
    boot = {"ETCD_INITIAL_CLUSTER": ",".join(peers), "ETCD_INITIAL_CLUSTER_STATE": "existing"}
    await ctx.do.ensure_files(host, bootstrapped(files, boot))
    await _start(ctx, host)
    member_id = mine.hex_id if mine else "<new>"
    await ctx.do.change(
        via,
        f"etcd member promote {host.name} ({member_id}) once it has caught up",
        lambda t: _promote(ctx, t, member_id),
    )


async def _start(ctx: Context, host: Host) -> None:
    u = ctx.facts[host.name].unit("etcd")
    if not u.running or u.enabled != "enabled":
        await ctx.do.sh(
            host, "start etcd", "systemctl enable -q etcd && systemctl start --no-block etcd"
        )


_ADD_REFUSED = (
    "etcd refuses to add a member while the cluster is not healthy (a member that just joined "
    "counts as active only after a while); nothing was added. See `etcdctl endpoint health "
    "--cluster` on an etcd host, then re-apply"
)
_NOT_CAUGHT_UP = (
    "the etcd learner has not caught up; it stays a non-voting learner, quorum is unchanged. "
    "See `journalctl -u etcd` on the new host, then re-apply to promote it"
)


async def _promote(ctx: Context, via: Transport, member_id: str) -> None:
    cmd = etcdctl(ctx.run.cluster, "member", "promote", member_id)
    await _until_accepted(via, cmd, "in sync with leader", _NOT_CAUGHT_UP)


async def _until_accepted(t: Transport, cmd: str, transient: str, failed: str) -> None:
    """Run a membership command that etcd refuses for a while ("unhealthy cluster" right
    after a change, "not in sync with leader" for a learner catching up); retry until it
    accepts, or fail with `failed` after PROMOTE_TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROMOTE_TIMEOUT
    while True:
        res = await t.run(cmd, check=False, timeout=Timeout.READ)
        if res.ok:
            return
        why = res.stderr.strip().splitlines()[-1:] or [f"exit {res.exit_status}"]
        if transient not in res.stderr or loop.time() >= deadline:
            raise PhaseError(f"{why[0]}: {failed}")
        await asyncio.sleep(PROMOTE_RETRY)
