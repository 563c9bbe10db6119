"""Kubernetes phases driven through kubeadm: packages, init, joins.

hakube pre-generates the cluster CA (so the discovery CA hash is known before init), the
bootstrap token and the certificate key; kubeadm's output is still parsed and checked against
them, so a kubeadm that did something else is caught rather than trusted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import shlex
import time
from pathlib import Path

from hakube.facts.kubeadm import (
    KubeadmOutputError,
    parse_init_output,
    parse_token_create,
    parse_upload_certs_output,
)
from hakube.fileio import write_private
from hakube.phases.base import Phase, PhaseError, RenderInput
from hakube.phases.context import APT_GET, Context, Timeout
from hakube.phases.lb import mark_initialised
from hakube.pki.etcd import etcd_members
from hakube.pki.layout import KUBERNETES_PKI_DIR
from hakube.record import KUBE_PACKAGES, ClusterRecord, upstream_version, version_problems
from hakube.render.base import RenderedFile
from hakube.render.host import (
    APT_KEYRING,
    kubernetes_key_url,
    package_manager,
    render_kubernetes_repo,
)
from hakube.render.kubeadm import INIT_CONFIG, JOIN_CONFIG, first_control_plane, kubeadm_file
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, EtcdTopology, Host, Role
from hakube.transport.base import Transport

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
#: Written by `kubeadm join` before the kubelet's TLS bootstrap; left behind when that fails.
BOOTSTRAP_KUBELET_CONF = "/etc/kubernetes/bootstrap-kubelet.conf"
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"


class KubePackages(Phase):
    """Kubernetes repository; kubelet, kubeadm, kubectl at exactly kubernetes.version, held
    (another installed version is refused: no upgrades yet)"""

    name = "kubeadm/packages"
    needs = ("packages",)

    def targets(self, cluster: Cluster) -> list[Host]:
        return cluster.nodes

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return render_kubernetes_repo(on.cluster, on.host, on.facts.os.id if on.facts else None)

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [(APT_KEYRING, 0o644)]

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.run.cluster
        f = ctx.facts[host]
        version = c.kubernetes.version
        installed = {p: upstream_version(f.packages[p]) for p in KUBE_PACKAGES if p in f.packages}
        other = {p: v for p, v in installed.items() if v != version}
        if other:
            # Never install a newer (or older) kubelet under a running node.
            raise PhaseError(
                "; ".join(version_problems(version, {p: f.packages[p] for p in other}))
            )
        if len(installed) == len(KUBE_PACKAGES):
            if not set(KUBE_PACKAGES) <= f.held:
                held = " ".join(KUBE_PACKAGES)
                await ctx.do.sh(host, "hold kubelet/kubeadm/kubectl", f"apt-mark hold {held}")
                f.held.update(KUBE_PACKAGES)
            return
        repo_files = self.files_for(ctx, host)
        await ctx.do.ensure_files(host, repo_files)
        manager = package_manager(c, f.os.id)
        key_url = kubernetes_key_url(c, manager)
        if key_url and APT_KEYRING not in f.files:
            # The repository file says signed-by=APT_KEYRING: without the key apt ignores it.
            # The key is data (dearmored into a keyring), never something that is executed.
            await ctx.do.sh(
                host,
                "fetch the Kubernetes repository signing key",
                f"mkdir -p {shlex.quote(str(Path(APT_KEYRING).parent))} && curl -fsSL --retry 3 "
                f"--max-time 60 {shlex.quote(key_url)} | gpg --dearmor --yes -o "
                f"{shlex.quote(APT_KEYRING)}",
            )
        repo = repo_files[0].content.strip().splitlines()[-1] if repo_files else "?"
        pins = " ".join(f"{p}={version}-*" for p in KUBE_PACKAGES)
        names = " ".join(KUBE_PACKAGES)
        cmd = (
            f"export DEBIAN_FRONTEND=noninteractive; {APT_GET} install -y -q {pins} && "
            f"apt-mark hold {names} >/dev/null && "
            f"dpkg-query -W -f='${{Package}} ${{Version}}\\n' {names}"
        )

        async def install(t: Transport) -> None:
            # Probing the repository needs the key and the list in place: part of the action.
            probe = f"{APT_GET} update -q >/dev/null 2>&1; apt-cache madison kubeadm"
            res = await t.run(probe, check=False, timeout=Timeout.INSTALL)
            # madison prints "kubeadm | 1.30.1-1.1 | <repo>": match the upstream version exactly.
            offered = {upstream_version(line.split("|")[1].strip()) for line in
                       res.stdout.splitlines() if line.count("|") >= 2}  # fmt: skip
            if version not in offered:
                raise PhaseError(
                    f"kubeadm {version} is not available on {host.name} from the Kubernetes "
                    f"repository ({repo}). This host cannot install kubelet/kubeadm/kubectl: "
                    "point packages.kubernetes_repository at a mirror it reaches; to build the "
                    "rest of the cluster without Kubernetes, run with --skip-phases kubeadm,cni"
                )
            out = await t.run(cmd, timeout=Timeout.INSTALL)
            versions = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
            ctx.run.remember(lambda r: r.installed(host.name, versions))

        await ctx.do.change(
            host, f"install kubelet/kubeadm/kubectl {version} and hold them", install
        )
        await ctx.do.sh(host, "enable kubelet", "systemctl enable -q kubelet")


def shared_pki_paths(cluster: Cluster) -> list[tuple[str, int]]:
    """Where `_shared_pki` puts the CA material on a control-plane node (for facts and plan)."""
    root = KUBERNETES_PKI_DIR
    out = [(str(root / "ca.crt"), 0o644), (str(root / "ca.key"), 0o600)]
    out += [(str(root / "front-proxy-ca.crt"), 0o644), (str(root / "front-proxy-ca.key"), 0o600)]
    out += [(str(root / "sa.key"), 0o600), (str(root / "sa.pub"), 0o644)]
    if cluster.etcd.topology is EtcdTopology.EXTERNAL:
        out += [(str(root / "etcd" / "ca.crt"), 0o644)]
        out += [(str(root / "apiserver-etcd-client.crt"), 0o644)]
        out += [(str(root / "apiserver-etcd-client.key"), 0o600)]
    return out


def _shared_pki(ctx: Context) -> list[RenderedFile]:
    files = ctx.run.cluster_pki().control_plane_files()
    if ctx.run.cluster.etcd.topology is EtcdTopology.EXTERNAL:
        files += ctx.run.state.etcd_pki(etcd_members(ctx.run.cluster)).control_plane_files()
    return files


#: kubeadm deletes the kubeadm-certs Secret 2 h after it was uploaded; re-upload before a
#: control-plane join when the last upload may be older than this.
CERTS_FRESH_FOR = 2 * 3600 - 15 * 60
#: Lifetime of the bootstrap token a join phase creates for itself (deleted when it ends).
JOIN_TTL = "1h"
#: Files a failed `kubeadm init` or `join` leaves behind, which the next attempt trips over.
HALF_DONE = (APISERVER_MANIFEST, KUBELET_CONF, BOOTSTRAP_KUBELET_CONF)


def clock() -> float:
    """Wall-clock seconds (a function, so tests can move time past the 2-hour certs window)."""
    return time.time()


def init_host(ctx: Context) -> Host:
    """The host that ran kubeadm init in this run's cluster (see `recorded_init_host`)."""
    return recorded_init_host(ctx.run.cluster, ctx.run.record, ctx.run.state.path)


def recorded_init_host(cluster: Cluster, record: ClusterRecord | None, state: Path) -> Host:
    """The host that ran kubeadm init: the recorded one (or the survivor it was handed to),
    else (before init) the first control plane. Reordering or inserting hosts in the file never
    makes another host init."""
    recorded = record.init_host if record else None
    if recorded is None:
        return first_control_plane(cluster)
    for h in cluster.control_planes:
        if h.name == recorded:
            return h
    raise PhaseError(
        f"{recorded} ran kubeadm init (recorded in {state}) but is not a "
        "control-plane host in the cluster file any more: `hakube apply --prune` (or `hakube "
        "node remove`) hands its role to a joined control plane and removes it; or put it back"
    )


async def _api_answers(ctx: Context, host: Host) -> str | None:
    """The HTTP status the cluster endpoint answers with from `host`, None if nothing answers.

    Any HTTP answer (even 401/403) means an API server is there; HAProxy alone with every
    backend down closes the connection instead.
    """
    url = f"https://{ctx.run.cluster.control_plane_endpoint}/version"
    res = await ctx.facts.read(
        host,
        f"curl -sk --max-time 5 -o /dev/null -w '%{{http_code}}' {shlex.quote(url)}",
        check=False,
    )
    code = res.stdout.strip()
    return code if code.isdigit() and code != "000" else None


async def _serves(ctx: Context, host: Host) -> bool:
    """The API server behind `host`'s admin.conf answers and kubeadm-config exists."""
    res = await ctx.facts.read(
        host, f"{KUBECTL} -n kube-system get configmap kubeadm-config -o name", check=False
    )
    return res.ok


async def _half_done(ctx: Context, host: Host) -> list[str]:
    q = " ".join(shlex.quote(p) for p in HALF_DONE)
    res = await ctx.facts.read(host, f"ls -d {q} 2>/dev/null", check=False)
    return [line for line in res.stdout.split() if line]


def _reset_hint(host: Host) -> str:
    return f"`kubeadm reset -f` on {host.name} (it only resets that node), then re-apply"


class KubeadmInit(Phase):
    """kubeadm init, once per cluster (recorded), on the first control-plane node with the shared
    CA; fetch admin.conf"""

    name = "kubeadm/init"
    needs = ("prepare", "runtime", "kubeadm/packages", "lb/haproxy", "lb/vip", "etcd")
    made_on_host = (ADMIN_CONF,)

    def targets(self, cluster: Cluster) -> list[Host]:
        return [first_control_plane(cluster)]

    def hosts(self, ctx: Context) -> list[Host]:
        return [init_host(ctx)]

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return [kubeadm_file(on.cluster, on.host, on.secrets, None, init=True)]

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        return [*shared_pki_paths(cluster), (ADMIN_CONF, 0o600)]

    async def run(self, ctx: Context, host: Host) -> None:
        c = ctx.run.cluster
        rec = ctx.run.record
        recorded = rec is not None and rec.init_host == host.name
        if ADMIN_CONF in ctx.facts[host].files:
            if not recorded and not ctx.run.dry_run:
                # Initialised by an older hakube or by a run that died before recording it:
                # trust it only once it serves.
                if not await _serves(ctx, host):
                    raise PhaseError(
                        f"{host.name} has {ADMIN_CONF} but its API server does not answer: a "
                        "kubeadm init that failed half-way, or a control plane that is down. If "
                        f"this node never served a cluster, run {_reset_hint(host)}; otherwise "
                        "start it again (`journalctl -u kubelet` there says why it is down)"
                    )
                ctx.run.remember(lambda r: r.initialised(host.name, c, at=None))
                for lb in c.lb_hosts:
                    await mark_initialised(ctx, lb)
            await _fetch_admin_conf(ctx, host)
            return
        if recorded:
            raise PhaseError(
                f"{host.name} ran kubeadm init (recorded) but {ADMIN_CONF} is gone: the node was "
                "reset or rebuilt. hakube never runs kubeadm init twice for one cluster; restore "
                "the node, or start over with a new cluster (new name and state directory)"
            )
        if not ctx.run.dry_run:
            code = await _api_answers(ctx, host)
            if code is not None:
                raise PhaseError(
                    f"{c.control_plane_endpoint} already answers (HTTP {code}) but "
                    f"{ctx.run.state.path} records no kubeadm init: a cluster this state directory "
                    "does not know is behind that endpoint. Use that cluster's state directory, "
                    "or another endpoint name"
                )
            leftovers = await _half_done(ctx, host)
            if leftovers:
                # Nothing was recorded and nothing answers: these come from an init that
                # failed before it served, so resetting this one node loses nothing.
                await ctx.do.sh(
                    host,
                    f"kubeadm reset -f (a failed init left {', '.join(leftovers)})",
                    "kubeadm reset -f",
                    timeout=Timeout.KUBEADM,
                )
        await ctx.do.ensure_files(host, _shared_pki(ctx))
        await ctx.do.ensure_files(host, self.files(RenderInput(c, host, ctx.run.secrets)))
        await ctx.do.change(
            host, "kubeadm init --upload-certs", functools.partial(self._init, ctx, host)
        )

    async def _init(self, ctx: Context, host: Host, t: Transport) -> None:
        res = await t.run(
            f"kubeadm init --config {INIT_CONFIG} --upload-certs",
            check=False,
            timeout=Timeout.KUBEADM,
        )
        text = res.stdout + "\n" + res.stderr
        try:
            result = parse_init_output(text)
        except KubeadmOutputError as e:
            raise PhaseError(
                f"kubeadm init failed (exit {res.exit_status}): {e}. The next apply resets "
                f"{host.name} (nothing was recorded) and tries again"
            ) from None
        expected = ctx.run.state.cluster_pki().ca_cert_hash
        if result.ca_cert_hash != expected or result.token != ctx.run.secrets.bootstrap_token:
            raise PhaseError(
                "kubeadm init printed a CA hash or token other than the ones hakube provided: "
                f"the host had an older /etc/kubernetes; run {_reset_hint(host)}"
            )
        if not await _serves(ctx, host):
            raise PhaseError(
                f"kubeadm init reported success but kubeadm-config cannot be read through "
                f"{ADMIN_CONF}; see `journalctl -u kubelet` on {host.name}"
            )
        now = clock()
        ctx.run.remember(lambda r: r.initialised(host.name, ctx.run.cluster, at=now))
        # The token in init.yaml served kubeadm's own bootstrap; joins bring their own.
        token_id = ctx.run.secrets.bootstrap_token.split(".")[0]
        await t.run(
            f"kubeadm token delete {token_id} >/dev/null", check=False, timeout=Timeout.READ
        )
        for lb in ctx.run.cluster.lb_hosts:
            await mark_initialised(ctx, lb)
        await _fetch_admin_conf(ctx, host)


async def _fetch_admin_conf(ctx: Context, host: Host) -> None:
    if ctx.run.dry_run:
        return
    data = await ctx.facts.get(host, ADMIN_CONF)
    target = ctx.run.state.path / "admin.conf"
    if not target.exists() or target.read_bytes() != data:
        write_private(target, data)


async def node_lookup(ctx: Context, via: Host, name: str) -> bool | None:
    """Whether the Node object exists; None when the API server could not say (down,
    unreachable, no admin.conf): only a definite NotFound may lead to resetting a node."""
    res = await ctx.facts.read(via, f"{KUBECTL} get node {shlex.quote(name)} -o name", check=False)
    if res.ok:
        return True
    return False if "(NotFound)" in res.stderr else None


async def _node_exists(ctx: Context, via: Host, name: str, *, wait: float = 0) -> bool:
    """The Node object exists, looked up through the init host's admin.conf."""
    cmd = f"{KUBECTL} get node {shlex.quote(name)} -o name"
    if wait:
        tries = max(1, int(wait / 2))
        cmd = f"for i in $(seq {tries}); do {cmd} && exit 0; sleep 2; done; exit 1"
    res = await ctx.facts.read(via, cmd, check=False, timeout=Timeout.READ + wait)
    return res.ok


class _Join(Phase):
    control_plane: bool
    made_on_host = (KUBELET_CONF,)

    def __init__(self) -> None:
        # One token and one certificate upload per phase, shared by its hosts (parallel worker
        # joins must not race on `kubeadm token create`).
        self._once = asyncio.Lock()
        self._token: str | None = None
        self._certs_uploaded = False

    def members(self, cluster: Cluster) -> list[Host]:
        """Every host this phase joins, the init host included (it is filtered out)."""
        if self.control_plane:
            return list(cluster.control_planes)
        return [h for h in cluster.workers if not h.has(Role.CONTROL_PLANE)]

    def targets(self, cluster: Cluster) -> list[Host]:
        first = first_control_plane(cluster)
        return [h for h in self.members(cluster) if h.name != first.name]

    def hosts(self, ctx: Context) -> list[Host]:
        first = init_host(ctx)
        return [h for h in self.members(ctx.run.cluster) if h.name != first.name]

    def files(self, on: RenderInput) -> list[RenderedFile]:
        return [kubeadm_file(on.cluster, on.host, on.secrets, None, init=False)]

    def extra_paths(self, cluster: Cluster, host: Host) -> list[tuple[str, int]]:
        pki = shared_pki_paths(cluster) if self.control_plane else []
        return [*pki, (KUBELET_CONF, 0o600)]

    async def run(self, ctx: Context, host: Host) -> None:
        first = init_host(ctx)
        rec = ctx.run.record
        if KUBELET_CONF in ctx.facts[host].files:
            if (rec is not None and host.name in rec.nodes) or ctx.run.dry_run:
                return
            # Joined before this hakube recorded joins, or a run died before recording it.
            if await self._joined_or_reset(ctx, host, first, [KUBELET_CONF]):
                ctx.run.remember(lambda r: r.joined(host.name, self._role))
                return
        else:
            leftovers = [] if ctx.run.dry_run else await _half_done(ctx, host)
            if leftovers and await self._joined_or_reset(ctx, host, first, leftovers):
                raise PhaseError(
                    f"{host.name} has {', '.join(leftovers)} but no {KUBELET_CONF}, and the "
                    f"cluster has a Node {host.name}: another host by that name, or this one "
                    f"joined and lost its kubelet credentials. Run {_reset_hint(host)} once "
                    f"`kubectl delete node {host.name}` is right for that Node"
                )
        secrets = await self._credentials(ctx, first)
        pki = ctx.run.state.cluster_pki()
        if self.control_plane:
            await ctx.do.ensure_files(host, _shared_pki(ctx))
        join = kubeadm_file(ctx.run.cluster, host, secrets, pki.ca_cert_hash, init=False)
        await ctx.do.ensure_files(host, [join])
        what = "kubeadm join" + (" --control-plane" if self.control_plane else "")
        await ctx.do.change(host, what, functools.partial(self._join, ctx, host, first))

    async def _joined_or_reset(
        self, ctx: Context, host: Host, first: Host, leftovers: list[str]
    ) -> bool:
        """True when `host` is a Node of the cluster already. Otherwise a join failed half-way:
        a worker is reset here and False returned (the caller joins it again with this run's
        fresh token); a control plane stops with the command to run."""
        found = await node_lookup(ctx, first, host.name)
        if found:
            return True
        left = ", ".join(leftovers)
        if found is None:
            raise PhaseError(
                f"{host.name} has {left} but whether the cluster has a Node {host.name} cannot "
                f"be read through {first.name}'s {ADMIN_CONF} (is the API server up?); nothing "
                "was changed on it. Re-apply once the API server answers"
            )
        # Only a worker is repaired unattended: `kubeadm reset` there touches that node alone.
        # A control-plane join that failed half-way may already count as an etcd member
        # (stacked etcd: kubeadm adds the member before that member's etcd runs), and reset
        # removes it through etcd: whether that keeps quorum depends on the other members,
        # which an operator must look at (`etcdctl member list`) before resetting. A worker
        # carrying an apiserver manifest was a control plane once: the same care applies.
        if self.control_plane or APISERVER_MANIFEST in leftovers:
            raise PhaseError(
                f"{host.name} has {left} but the cluster has no Node {host.name}: a join that "
                f"failed half-way. Run {_reset_hint(host)}"
            )
        await ctx.do.sh(
            host,
            f"kubeadm reset -f (a join that failed half-way left {left}; no Node {host.name})",
            "kubeadm reset -f",
            timeout=Timeout.KUBEADM,
        )
        for path in leftovers:
            ctx.facts[host].files.pop(path, None)
        return False

    @property
    def _role(self) -> str:
        return "control-plane" if self.control_plane else "worker"

    async def _join(self, ctx: Context, host: Host, first: Host, t: Transport) -> None:
        await t.run(f"kubeadm join --config {JOIN_CONFIG}", timeout=Timeout.KUBEADM)
        # The token in join.yaml must not outlive the join on the node.
        await t.run(f"rm -f {JOIN_CONFIG}", timeout=Timeout.READ)
        ctx.facts[host].files.pop(JOIN_CONFIG, None)
        if not await _node_exists(ctx, first, host.name, wait=60):
            raise PhaseError(
                f"kubeadm join succeeded on {host.name} but no Node {host.name} appeared "
                f"within 60 s; see `journalctl -u kubelet` on {host.name}"
            )
        ctx.run.remember(lambda r: r.joined(host.name, self._role))

    async def _credentials(self, ctx: Context, first: Host) -> Secrets:
        """The phase's own fresh token (and, for control planes, certificates uploaded within
        the last 2 hours), made once for every host of the phase."""
        async with self._once:
            if ctx.run.dry_run:
                return ctx.run.secrets
            if self.control_plane and not self._certs_uploaded:
                await self._upload_certs(ctx, first)
            if self._token is None:
                await ctx.do.change(
                    first, f"create a {JOIN_TTL} join token for {self.name}", self._create_token
                )
                ctx.report.redactor.register(self._token or "")
            assert self._token is not None
            return dataclasses.replace(ctx.run.secrets, bootstrap_token=self._token)

    async def _create_token(self, t: Transport) -> None:
        res = await t.run(
            f"kubeadm token create --ttl {JOIN_TTL} "
            f"--description {shlex.quote('hakube ' + self.name)}",
            timeout=Timeout.READ,
        )
        try:
            self._token = parse_token_create(res.stdout)
        except KubeadmOutputError as e:
            raise PhaseError(f"kubeadm token create on {t.host}: {e}") from None

    async def _upload_certs(self, ctx: Context, first: Host) -> None:
        at = ctx.run.record.init_at if ctx.run.record else None
        if at is not None and clock() - at < CERTS_FRESH_FOR:
            self._certs_uploaded = True
            return
        key = ctx.run.secrets.certificate_key

        async def upload(t: Transport) -> None:
            res = await t.run(
                f"kubeadm init phase upload-certs --upload-certs --config {INIT_CONFIG} "
                f"--certificate-key {shlex.quote(key)}",
                timeout=Timeout.KUBEADM,
            )
            try:
                printed = parse_upload_certs_output(res.stdout + "\n" + res.stderr)
            except KubeadmOutputError as e:
                raise PhaseError(f"kubeadm upload-certs on {first.name}: {e}") from None
            if printed != key:
                raise PhaseError(
                    f"kubeadm upload-certs on {first.name} used another certificate key than "
                    "the one hakube gave it"
                )

        await ctx.do.change(
            first, "re-upload the control-plane certificates (kubeadm-certs, 2 h)", upload
        )
        self._certs_uploaded = True

    async def finish(self, ctx: Context) -> None:
        if self._token is None or ctx.run.dry_run:
            return
        token_id = self._token.split(".")[0]
        first = init_host(ctx)
        await ctx.do.sh(
            first, "delete this run's join token", f"kubeadm token delete {token_id} >/dev/null"
        )
        self._token = None


class JoinControlPlanes(_Join):
    """join the other control-plane nodes, one at a time (etcd/quorum safe)"""

    name = "kubeadm/join-control-planes"
    needs = ("prepare", "runtime", "kubeadm/packages", "kubeadm/init")
    serial = True
    control_plane = True


class JoinWorkers(_Join):
    """join the workers in parallel"""

    name = "kubeadm/join-workers"
    needs = ("prepare", "runtime", "kubeadm/packages", "kubeadm/init")
    control_plane = False
