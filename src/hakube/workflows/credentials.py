"""Join credentials: a fresh join command, bootstrap token list and revoke.

The CA hash comes from the cluster CA hakube generated (state dir) and is cross-checked against
the tutorial's openssl pipeline run on a control-plane node, so a node whose
/etc/kubernetes/pki/ca.crt is not the cluster's is caught before anyone joins with it.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hakube.facts.kubeadm import (
    BootstrapTokenInfo,
    JoinCommand,
    KubeadmOutputError,
    parse_join_command,
    parse_token_create,
    parse_token_list,
    parse_upload_certs_output,
)
from hakube.phases.context import Context, Timeout
from hakube.pki.certs import ca_cert_hash
from hakube.pki.cluster import ClusterPKI
from hakube.render.kubeadm import INIT_CONFIG
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.workflows.ops import (
    OpsError,
    OpsInputError,
    in_session,
    known_cluster,
    require_reachable,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from hakube.workflows.ops import Reach

CLUSTER_CA = "/etc/kubernetes/pki/ca.crt"
#: kubeadm deletes the kubeadm-certs Secret (and so the key's use) after this long.
CERTIFICATE_KEY_HOURS = 2
_TTL_RE = re.compile(r"^(0|(\d+h)?(\d+m)?(\d+s)?)$")
_TOKEN_ID_RE = re.compile(r"^[a-z0-9]{6}$")


def openssl_ca_hash_command(path: str = CLUSTER_CA) -> str:
    """The tutorial's pipeline, with `openssl pkey` so that it works for EC CAs too.

    The tutorial pipes through `openssl rsa -pubin`, which only reads RSA keys; `pkey -pubin`
    prints the same DER SubjectPublicKeyInfo for RSA and for EC.
    """
    p = shlex.quote(path)
    return (
        f"set -o pipefail; openssl x509 -pubkey -noout -in {p} | openssl pkey -pubin -outform der "
        "2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //'"
    )


def validate_ttl(ttl: str) -> str:
    """kubeadm's duration flag (Go duration): 2h, 30m, 1h30m, 0 for never; else OpsInputError."""
    if not ttl or not _TTL_RE.fullmatch(ttl):
        raise OpsInputError(
            f"--ttl {ttl!r} is not a duration like 2h, 30m or 1h30m (0 never expires)"
        )
    return ttl


@dataclass
class JoinResult:
    command: JoinCommand
    token_ttl: str
    ca_hash_checked_on: str
    certificate_key_hours: int | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        c = self.command
        return {
            "command": str(c),
            "endpoint": c.endpoint,
            "token": c.token,
            "token_ttl": self.token_ttl,
            "ca_cert_hash": c.ca_cert_hash,
            "ca_hash_checked_on": self.ca_hash_checked_on,
            "control_plane": c.control_plane,
            "certificate_key": c.certificate_key,
            "certificate_key_valid_hours": self.certificate_key_hours,
            "notes": self.notes,
        }


def _control_plane(ctx: Context, errors: dict[str, str]) -> Host:
    """The init host if reachable, else any reachable control-plane node."""
    view = known_cluster(ctx.run.cluster, ctx.run.state)
    for h in [view.init_host, *ctx.run.cluster.control_planes]:
        if h.name not in errors:
            return h
    require_reachable(errors, ctx.run.cluster.control_planes)
    raise AssertionError("unreachable")  # pragma: no cover - require_reachable raised


def local_ca_hash(state: StateDir) -> str | None:
    d = state.pki_dir / "kubernetes"
    return ClusterPKI.load(d).ca_cert_hash if (d / "ca.crt").exists() else None


async def checked_ca_hash(ctx: Context, host: Host) -> str:
    """hakube's hash of the cluster CA, equal to the openssl pipeline's on `host` (or an error)."""
    res = await ctx.facts.read(host, openssl_ca_hash_command(), check=False)
    remote = res.stdout.strip()
    if not res.ok or not re.fullmatch(r"[0-9a-f]{64}", remote):
        raise OpsError(
            f"{host.name}: the openssl CA hash pipeline failed on {CLUSTER_CA} "
            f"(exit {res.exit_status}): {res.stderr_tail(3) or remote or 'no output'}"
        )
    ours = local_ca_hash(ctx.run.state)
    if ours is None:
        # No state dir here: hakube hashes the host's CA itself, in Python, as a second opinion.
        ours = ca_cert_hash(await ctx.facts.get(host, CLUSTER_CA))
    if ours != f"sha256:{remote}":
        raise OpsError(
            f"{host.name}: {CLUSTER_CA} hashes to sha256:{remote}, but the cluster CA in "
            f"{ctx.run.state.pki_dir / 'kubernetes'} hashes to {ours}: this node does not carry "
            "the cluster's CA (was it set up by another hakube state dir?). Nothing was created."
        )
    return ours


async def join_command(
    ctx: Context, errors: dict[str, str], *, control_plane: bool, ttl: str
) -> JoinResult:
    validate_ttl(ttl)
    host = _control_plane(ctx, errors)
    ca_hash = await checked_ca_hash(ctx, host)
    out: dict[str, str] = {}

    async def create_token(t: Transport) -> None:
        res = await t.run(
            f"kubeadm token create --ttl {shlex.quote(ttl)}", check=False, timeout=Timeout.READ
        )
        if not res.ok:
            raise OpsError(f"{host.name}: kubeadm token create failed: {res.stderr_tail(5)}")
        out["token"] = parse_token_create(res.stdout)
        ctx.report.redactor.register(out["token"])

    await ctx.do.change(host, f"create a bootstrap token (ttl {ttl})", create_token)
    key = None
    if control_plane:

        async def upload_certs(t: Transport) -> None:
            res = await t.run(
                f"kubeadm init phase upload-certs --upload-certs --config {INIT_CONFIG}",
                check=False,
                timeout=120,
            )
            if not res.ok:
                raise OpsError(
                    f"{host.name}: kubeadm init phase upload-certs failed: "
                    f"{ctx.report.redactor.redact(res.stderr_tail(5))}"
                )
            out["key"] = parse_upload_certs_output(res.stdout + "\n" + res.stderr)
            ctx.report.redactor.register(out["key"])

        await ctx.do.change(
            host,
            f"re-upload the control-plane certificates (key valid {CERTIFICATE_KEY_HOURS} h)",
            upload_certs,
        )
        key = out.get("key")
    cmd = JoinCommand(
        endpoint=ctx.run.cluster.control_plane_endpoint,
        token=out["token"],
        ca_cert_hashes=(ca_hash,),
        control_plane=control_plane,
        certificate_key=key,
    )
    # The printed line must read back as what kubeadm itself would print.
    try:
        same = parse_join_command(str(cmd)) == cmd
    except KubeadmOutputError:
        same = False
    if not same:  # pragma: no cover - a bug in JoinCommand
        raise OpsError("built a join command that does not read back as kubeadm's own")
    result = JoinResult(cmd, ttl, host.name)
    if control_plane:
        result.certificate_key_hours = CERTIFICATE_KEY_HOURS
        result.notes.append(
            f"the certificate key works for {CERTIFICATE_KEY_HOURS} h (kubeadm then deletes "
            "the kubeadm-certs Secret); run join-command --control-plane again after that"
        )
    result.notes.append(
        f"{ctx.run.cluster.api_name} must resolve to the API endpoint on the joining node "
        "(apply writes it into /etc/hosts of the cluster's hosts)"
    )
    return result


async def list_tokens(ctx: Context, errors: dict[str, str]) -> list[BootstrapTokenInfo]:
    host = _control_plane(ctx, errors)
    res = await ctx.facts.read(host, "kubeadm token list", check=False)
    if not res.ok:
        raise OpsError(f"{host.name}: kubeadm token list failed: {res.stderr_tail(5)}")
    tokens = parse_token_list(res.stdout)
    for tok in tokens:
        ctx.report.redactor.register(tok.token)
    return tokens


async def revoke_token(ctx: Context, errors: dict[str, str], token: str) -> str:
    token_id = token.split(".", 1)[0]
    if not _TOKEN_ID_RE.fullmatch(token_id):
        raise OpsInputError(
            "give the token's id (6 characters a-z0-9, as `hakube token list` shows it) "
            "or the whole token"
        )
    tokens = await list_tokens(ctx, errors)
    if token_id not in {t.token_id for t in tokens}:
        known = ", ".join(t.token_id for t in tokens) or "none"
        raise OpsInputError(f"no bootstrap token with id {token_id!r} (tokens: {known})")
    host = _control_plane(ctx, errors)
    await ctx.do.sh(host, f"delete bootstrap token {token_id}", f"kubeadm token delete {token_id}")
    return token_id


async def run_join_command(
    cluster: Cluster, state: StateDir, *, control_plane: bool, ttl: str, **reach: Unpack[Reach]
) -> JoinResult:
    validate_ttl(ttl)
    join = functools.partial(join_command, control_plane=control_plane, ttl=ttl)
    return await in_session(cluster, state, "join", join, **reach)


async def run_list_tokens(
    cluster: Cluster, state: StateDir, **reach: Unpack[Reach]
) -> list[BootstrapTokenInfo]:
    return await in_session(cluster, state, "token", list_tokens, **reach)


@dataclass(frozen=True)
class Revoked:
    """The id of a deleted bootstrap token (never its secret half)."""

    token_id: str

    def as_dict(self) -> dict[str, str]:
        return {"revoked": self.token_id}


async def run_revoke_token(
    cluster: Cluster, state: StateDir, token: str, **reach: Unpack[Reach]
) -> Revoked:
    revoke = functools.partial(revoke_token, token=token)
    return Revoked(await in_session(cluster, state, "token", revoke, **reach))
