"""Day-2 commands (status, join-command, token, etcd snapshot, certs, reset, kubeconfig): a thin
typer shell over `hakube.workflows`; mounted by `hakube.cli`.

Exit codes: 0 ok/healthy, 1 failed/degraded, 2 bad input (nothing changed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import typer

from hakube import console
from hakube.console import FileOpt, Output, OutputOpt, YesOpt, err, fail, out, table

if TYPE_CHECKING:
    # Imported where used (asyncio too): these commands are mounted on first need, and even
    # then `hakube <cmd> --help` must not load workflows, asyncio or the PKI.
    from hakube.phases.base import Event, EventSink
    from hakube.spec.model import Cluster
    from hakube.state import StateDir
    from hakube.workflows.certs import RenewResult
    from hakube.workflows.credentials import JoinResult, Revoked
    from hakube.workflows.reset import ResetResult
    from hakube.workflows.snapshot import RestoreResult, SnapshotInfo

T = TypeVar("T")


class Reported(Protocol):
    """A day-2 result: `--output json` prints its `as_dict()` as the one document."""

    def as_dict(self) -> object: ...


R = TypeVar("R", bound=Reported)
R_co = TypeVar("R_co", bound=Reported, covariant=True)


class Reporting(Protocol[R_co]):
    """A day-2 operation with its options bound (`functools.partial`), progress to `emit`."""

    def __call__(
        self, cluster: Cluster, state: StateDir, *, emit: EventSink
    ) -> Awaitable[R_co]: ...


WatchOpt = Annotated[
    float, typer.Option("--watch", "-w", help="Repeat every SECONDS until interrupted (0: once).")
]


def out_option(default: str) -> Any:
    """`--out PATH` of a command that writes one file; `default` says where it goes without."""
    return typer.Option("--out", help=f"Where to write it; {default}")


KubeconfigOutOpt = Annotated[Path | None, out_option("default ./<cluster>.kubeconfig")]
SnapshotOutOpt = Annotated[Path | None, out_option("default: the state dir (pruned).")]
MergeOpt = Annotated[
    bool, typer.Option("--merge", help="Merge into ~/.kube/config as context <cluster>.")
]


etcd_app = typer.Typer(no_args_is_help=True, add_completion=False, help="hakube's etcd.")
snapshot_app = typer.Typer(no_args_is_help=True, add_completion=False, help="etcd snapshots.")
certs_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Certificates.")
token_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Bootstrap tokens.")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("join-command")(join_command)
    app.command("kubeconfig")(kubeconfig)
    token_app.command("list")(token_list)
    token_app.command("revoke")(token_revoke)
    app.add_typer(token_app, name="token")
    snapshot_app.command("save")(snapshot_save)
    snapshot_app.command("restore")(snapshot_restore)
    etcd_app.add_typer(snapshot_app, name="snapshot")
    app.add_typer(etcd_app, name="etcd")
    certs_app.command("check")(certs_check)
    certs_app.command("renew")(certs_renew)
    app.add_typer(certs_app, name="certs")
    app.command("reset")(reset)


def status(
    file: FileOpt = Path("cluster.yaml"),
    watch: WatchOpt = 0.0,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Health of every HA piece, certificates, tokens, nodes, drift (exit 0 healthy, 1 not)."""
    import asyncio

    from hakube.state import StateDir
    from hakube.workflows.status import StatusReport, collect
    from hakube.workflows.status import watch as watch_status

    if watch < 0:
        fail("--watch must be 0 (once) or a number of seconds", 2)
    cluster = console.load_or_exit(file, output).cluster
    state = StateDir(cluster.name)
    last: list[StatusReport] = []

    def show(report: StatusReport) -> None:
        last[:] = [report]  # the verdict of the latest round decides the exit code
        if output is Output.JSON and watch:
            # One document a line, so that a watcher can read the stream line by line.
            sys.stdout.write(json.dumps(report.as_dict(), default=str) + "\n")
            sys.stdout.flush()
        elif output is Output.JSON:
            console.print_json(report.as_dict())
        else:
            if watch:
                out.clear()
            print_status(report)

    try:
        if watch:
            # One session for every round: the hosts are not connected again each time.
            asyncio.run(watch_status(cluster, state, watch, show))
        else:
            show(asyncio.run(collect(cluster, state)))
    except KeyboardInterrupt:
        pass  # --watch ends with Ctrl-C; the exit code is the last verdict
    raise typer.Exit(0 if last and last[-1].healthy else 1)


def _colour(ok: bool, text: str) -> str:
    return f"[{'green' if ok else 'red'}]{text}[/]"


def print_status(r: object) -> None:
    from hakube.workflows.status import StatusReport

    assert isinstance(r, StatusReport)
    if r.vip:
        owners = ", ".join(r.vip_owners) or "nobody"
        out.print(f"VIP {r.vip} on {_colour(len(r.vip_owners) == 1, owners)}", highlight=False)
    if r.lbs:
        t = table("load balancers", "host", "VRRP", "priority", "keepalived", "haproxy", "backends")
        for lb in r.lbs:
            mine = [b for b in r.backends if b.lb == lb.host]
            up = sum(b.status.startswith("UP") for b in mine)
            prio = "" if lb.priority is None else str(lb.priority)
            if lb.configured_priority is not None and lb.priority != lb.configured_priority:
                prio += f" (configured {lb.configured_priority})"
            t.add_row(
                lb.host,
                lb.vrrp_state or "-",
                prio,
                _colour(lb.keepalived == "active", lb.keepalived),
                _colour(lb.haproxy == "active", lb.haproxy),
                _colour(up == len(mine) and bool(mine), f"{up}/{len(mine)} UP"),
            )
        out.print(t)
    if r.etcd:
        t = table("etcd", "member", "id", "leader", "learner", "raft index", "revision", "DB",
                  "health")  # fmt: skip
        for m in r.etcd:
            health = "healthy" if m.healthy else (m.error or "unhealthy")
            if m.alarms:
                health += f" alarms: {', '.join(m.alarms)}"
            t.add_row(
                m.name, m.id, "yes" if m.leader else "", "yes" if m.learner else "",
                str(m.raft_index), str(m.revision), f"{m.db_size / 1e6:.1f} MB",
                _colour(m.healthy and not m.alarms, health),
            )  # fmt: skip
        out.print(t)
    if r.certs:
        soonest: dict[str, float] = {}
        for c in r.certs:
            if c.days_left is not None:
                soonest[c.host] = min(soonest.get(c.host, c.days_left), c.days_left)
        out.print(
            "certificates (soonest expiry): "
            + ", ".join(f"{h} {d:.0f} d" for h, d in sorted(soonest.items())),
            highlight=False,
        )
    if r.tokens is not None:
        out.print(
            "bootstrap tokens: " + (", ".join(f"{t.id} ({t.ttl})" for t in r.tokens) or "none"),
            highlight=False,
        )
    if r.nodes is not None:
        out.print(
            "nodes: " + ", ".join(f"{n} {s}" for n, s in sorted(r.nodes.items())), highlight=False
        )
    for n in r.notes:
        out.print(f"[dim]{n}[/]", highlight=False)
    for w in r.warnings:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)
    for p in r.problems:
        out.print(f"[red]problem:[/] {p}", highlight=False)
    verdict = "[green]healthy[/]" if r.healthy else f"[red]degraded ({len(r.problems)})[/]"
    out.print(f"{verdict} in {r.seconds:.2f} s", highlight=False)


def join_command(
    file: FileOpt = Path("cluster.yaml"),
    control_plane: Annotated[
        bool, typer.Option("--control-plane", help="Also a certificate key (valid 2 h).")
    ] = False,
    ttl: Annotated[str, typer.Option(help="Token lifetime (Go duration; 0: never).")] = "2h",
    output: OutputOpt = Output.TEXT,
) -> None:
    """Print a `kubeadm join` command: new token, CA hash checked with openssl, cert key."""
    from hakube.workflows.credentials import run_join_command

    op = partial(run_join_command, control_plane=control_plane, ttl=ttl)
    run_reported(file, output, op, _print_join)


def _print_join(r: JoinResult) -> None:
    for n in r.notes:
        err.print(f"[dim]note: {n}[/]", highlight=False)
    # stdout carries the command alone, so that it can be piped or captured.
    out.print(str(r.command), highlight=False, soft_wrap=True)


def token_list(file: FileOpt = Path("cluster.yaml"), output: OutputOpt = Output.TEXT) -> None:
    """Bootstrap tokens (ids only: the secret half is never printed), TTL and expiry."""
    from dataclasses import asdict

    from hakube.workflows.credentials import run_list_tokens

    rows = [t.public() for t in run_op(file, output, run_list_tokens)]
    if json_out(output, {"tokens": [asdict(r) for r in rows]}):
        return
    t = table("bootstrap tokens", "id", "ttl", "expires", "usages", "description")
    for r in rows:
        t.add_row(r.id, r.ttl, r.expires or "never", ",".join(r.usages),
                  r.description or "")  # fmt: skip
    out.print(t)


def _print_revoked(r: Revoked) -> None:
    out.print(f"revoked bootstrap token {r.token_id}", highlight=False)


def token_revoke(
    token: Annotated[str, typer.Argument(help="Token id (as `token list` shows) or token.")],
    file: FileOpt = Path("cluster.yaml"),
    output: OutputOpt = Output.TEXT,
) -> None:
    """Delete a bootstrap token (kubeadm token delete)."""
    from hakube.workflows.credentials import run_revoke_token

    run_reported(file, output, partial(run_revoke_token, token=token), _print_revoked)


def kubeconfig(
    file: FileOpt = Path("cluster.yaml"),
    merge: MergeOpt = False,
    out_file: KubeconfigOutOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Write the admin kubeconfig pointing at the HA endpoint (0600), or merge it."""
    from hakube.workflows.kubeconfig import DEFAULT_KUBECONFIG, write_kubeconfig

    if merge and out_file is not None:
        fail("--merge and --out exclude each other (--merge writes ~/.kube/config)", 2)
    merge_into = DEFAULT_KUBECONFIG if merge else None
    r = run_op(
        file, output, lambda c, s: write_kubeconfig(c, s, out=out_file, merge_into=merge_into)
    )
    if json_out(output, r.as_dict()):
        return
    if r.note:
        err.print(f"[yellow]note:[/] {r.note}", highlight=False)
    verb = f"merged context {r.context!r} into" if r.merged else "wrote"
    out.print(f"{verb} {r.path} (server {r.server}, mode 0600)", highlight=False)


def snapshot_save(
    file: FileOpt = Path("cluster.yaml"),
    out_file: SnapshotOutOpt = None,
    keep: Annotated[int, typer.Option(help="Snapshots kept in the state dir.")] = 10,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Take a snapshot from a healthy etcd member (checksum and revision recorded, 0600)."""
    from hakube.workflows.snapshot import run_save

    run_reported(file, output, partial(run_save, out=out_file, keep=keep), _print_snapshot)


def _print_snapshot(info: SnapshotInfo) -> None:
    out.print(
        f"snapshot of revision {info.revision} ({info.total_keys} keys, {info.size} bytes) "
        f"from {info.member}: {info.path}\nsha256 {info.sha256}",
        highlight=False,
    )


def snapshot_restore(
    path: Annotated[Path, typer.Argument(help="Snapshot file (from `etcd snapshot save`).")],
    file: FileOpt = Path("cluster.yaml"),
    yes: YesOpt = False,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Restore every etcd member from a snapshot, apiservers stopped around it (the file is
    checked before anything stops)."""
    from hakube.workflows.ops import OpsError
    from hakube.workflows.snapshot import read_snapshot, run_restore

    cluster = console.load_or_exit(file, output).cluster
    try:
        _, info = read_snapshot(path)
    except OpsError as e:
        raise ops_failed(e) from None
    hosts = ", ".join(h.name for h in cluster.etcd_hosts or cluster.control_planes)
    question = (
        f"Stop the kube-apiservers and etcd on {hosts} and replace etcd's data with {path} "
        f"(revision {info.revision or 'unknown'})? Everything written after the snapshot is lost"
    )
    run_reported(cluster, output, partial(run_restore, path=path), _print_restored, question, yes)


def _print_restored(r: RestoreResult) -> None:
    out.print(
        f"[green]restored[/] {', '.join(r.members)} at revision {r.revision} in "
        f"{r.seconds:.1f} s"
        + "".join(f"\n  {h}: old data dir kept in {d}" for h, d in r.old_data_dirs.items())
        + "".join(
            f"\n  {h}: kube-apiserver ({kind}) stopped during the restore, ready again"
            for h, kind in r.apiservers.items()
            if kind != "none"
        ),
        highlight=False,
    )


def certs_check(file: FileOpt = Path("cluster.yaml"), output: OutputOpt = Output.TEXT) -> None:
    """Every certificate hakube or kubeadm manages, with its expiry (exit 1: one expired)."""
    from hakube.workflows.certs import check
    from hakube.workflows.status import CERT_WARN_DAYS

    r = run_op(file, output, check)
    if not json_out(output, r.as_dict()):
        t = table("certificates", "host", "path", "subject", "expires", "days left")
        for c in r.certs:
            days = "unreadable" if c.days_left is None else f"{c.days_left:.0f}"
            ok = c.days_left is not None and c.days_left >= CERT_WARN_DAYS
            t.add_row(c.host, c.path, c.subject, (c.expires or "")[:16], _colour(ok, days))
        out.print(t)
        for host, msg in r.unreachable.items():
            err.print(f"[red]{host}: not reachable[/] ({msg})", highlight=False)
    if r.expired or r.unreachable:
        raise typer.Exit(1)


def certs_renew(
    file: FileOpt = Path("cluster.yaml"),
    etcd: Annotated[bool, typer.Option(help="Renew hakube's external etcd certificates.")] = True,
    kubeadm: Annotated[bool, typer.Option(help="Renew kubeadm's (certs renew all).")] = True,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Renew certificates one host at a time, keeping etcd quorum and the API serving."""
    from hakube.workflows.certs import renew

    run_reported(file, output, partial(renew, etcd=etcd, kubeadm=kubeadm), _print_renewed)


def _print_renewed(r: RenewResult) -> None:
    for line in r.renewed:
        out.print(f"[green]renewed[/] {line}", highlight=False)
    for line in r.skipped:
        out.print(f"[dim]skipped {line}[/]", highlight=False)


def reset(
    file: FileOpt = Path("cluster.yaml"),
    host: Annotated[
        str | None, typer.Option("--host", help="Only this host (it leaves etcd first).")
    ] = None,
    yes: YesOpt = False,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Tear down what hakube and kubeadm installed; the state directory is archived."""
    from hakube.workflows.reset import ROLE_PACKAGES
    from hakube.workflows.reset import reset as run_reset

    cluster = console.load_or_exit(file, output).cluster
    if host is not None and host not in {h.name for h in cluster.hosts}:
        fail(f"--host {host!r} is not in {file} (hosts: "
             f"{', '.join(h.name for h in cluster.hosts)}). Nothing was changed.", 2)  # fmt: skip
    names = host or ", ".join(h.name for h in cluster.hosts)
    question = (
        f"Reset {names}: kubeadm reset, stop hakube's units, purge "
        f"{', '.join(ROLE_PACKAGES)} where installed, remove hakube's files and etcd data?"
    )
    run_reported(cluster, output, partial(run_reset, host=host), _print_reset, question, yes)


def _print_reset(r: ResetResult) -> None:
    out.print(f"[green]reset[/] {', '.join(h.host for h in r.hosts)}", highlight=False)
    if r.archived_state:
        out.print(f"state directory archived to {r.archived_state}", highlight=False)
    for n in r.not_undone:
        out.print(f"[dim]not undone: {n}[/]", highlight=False)


def progress(output: Output) -> EventSink:
    """Host-prefixed progress on stderr; with --output json, JSON lines on stderr, so that
    stdout carries the one result document."""
    if output is Output.TEXT:
        return console.Progress(output)

    def to_stderr(e: Event) -> None:
        sys.stderr.write(json.dumps(e.as_dict()) + "\n")

    return to_stderr


def json_out(output: Output, data: object) -> bool:
    """With --output json, print `data` as the one result document and say so."""
    if output is Output.JSON:
        console.print_json(data)
        return True
    return False


def run_op(file: Path, output: Output, op: Callable[[Cluster, StateDir], Awaitable[T]]) -> T:
    """Load the cluster file (bad input: exit 2), run one day-2 operation, map its failures."""
    cluster = console.load_or_exit(file, output).cluster
    return run_loaded(cluster, op)


def run_reported(
    source: Path | Cluster,
    output: Output,
    op: Reporting[R],
    print_text: Callable[[R], None],
    confirm: str = "",
    yes: bool = False,
) -> None:
    """The shape of every day-2 command that reports progress: load the cluster file (unless
    loaded already), ask `confirm` on stderr unless `yes` (a no aborts, nothing changed), run the
    operation with progress for `output`, then print its result as the one JSON document or as
    text."""
    cluster = console.load_or_exit(source, output).cluster if isinstance(source, Path) else source
    if confirm and not yes:
        typer.confirm(confirm, abort=True, err=True)
    emit = progress(output)
    r = run_loaded(cluster, lambda c, s: op(c, s, emit=emit))
    if not json_out(output, r.as_dict()):
        print_text(r)


def run_loaded(cluster: Cluster, op: Callable[[Cluster, StateDir], Awaitable[T]]) -> T:
    import asyncio

    from hakube.state import StateDir
    from hakube.workflows.ops import FAILURES

    async def go() -> T:
        return await op(cluster, StateDir(cluster.name))

    try:
        return asyncio.run(go())
    except FAILURES as e:
        raise ops_failed(e) from None


def ops_failed(e: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    from hakube.workflows.ops import OpsInputError

    if isinstance(e, OpsInputError):
        err.print("Nothing was changed.")
        return typer.Exit(2)
    return typer.Exit(1)
