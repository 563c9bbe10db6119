"""kubeadm is not installable on this machine: these tests drive the phases against transcripts
of real kubeadm output through a scripted transport.

The transcripts come from tests/data/kubeadm (see its README: the 1.31 init transcript is
reconstructed from kubeadm's own templates); the cluster's real token, CA hash and certificate
key are substituted into them, as kubeadm would print them for the configuration hakube wrote.
"""

from __future__ import annotations

import asyncio
import functools
import re
import stat
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from fakes import TRANSCRIPTS

from hakube.facts.host import FileState, HostFacts, OSRelease
from hakube.phases.base import Event, EventKind, PhaseError, gather_hosts
from hakube.phases.context import Context, RunData
from hakube.phases.kubeadm import (
    ADMIN_CONF,
    KUBELET_CONF,
    JoinControlPlanes,
    JoinWorkers,
    KubeadmInit,
    KubePackages,
)
from hakube.record import KUBE_PACKAGES, version_problems
from hakube.render.host import APT_KEYRING, APT_KUBERNETES_LIST, kubernetes_key_url
from hakube.render.keepalived import INIT_MARKER
from hakube.render.kubeadm import CA_HASH_PLACEHOLDER, INIT_CONFIG, JOIN_CONFIG
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster, PackageManager
from hakube.state import StateDir
from hakube.transport.base import CommandResult, Transport
from hakube.transport.scripted import Call, FakeFile, Reply, ScriptedTransport

DATA = Path(__file__).resolve().parent.parent / "data" / "kubeadm"
INIT_TRANSCRIPT = DATA / "init-1.31-external-etcd.reconstructed.txt"
PREFLIGHT_FAIL = DATA / "preflight-fail-ports-1.30.reconstructed.txt"
# The fake secrets printed in the reconstructed transcript, replaced by the cluster's own.
TRANSCRIPT_TOKEN = "7vlrcm.15zgylcrusgbp5ds"
TRANSCRIPT_HASH = "sha256:7118167b47bd42b1acce79fc004c02b18ab39d3cf67ab6465a0063365e79e26e"
TRANSCRIPT_KEY = "bb0b14f125f1e6270fd8112de03deb43dda1d258db6536bdb6376945d8f364b8"
TRANSCRIPT_ENDPOINT = "k8s-api.lab.internal:8443"

INIT_CMD = f"kubeadm init --config {INIT_CONFIG} --upload-certs"
JOIN_CMD = f"kubeadm join --config {JOIN_CONFIG}"
VALIDATE = re.compile(r'.*; if kubeadm config validate --config \S+ >"\$out" .*', re.S)
TOKEN_CREATE = re.compile(r"kubeadm token create --ttl 1h --description 'hakube kubeadm/join-.*'")
TOKEN_DELETE = re.compile(r"kubeadm token delete [a-z0-9]{6} >/dev/null")
API_PROBE = re.compile(
    r"curl -sk --max-time 5 -o /dev/null -w '%\{http_code\}' https://\S+/version"
)
LEFTOVERS = re.compile(r"ls -d /etc/kubernetes/manifests/kube-apiserver.yaml .*")
KUBEADM_CONFIG = re.compile(r"kubectl .* -n kube-system get configmap kubeadm-config -o name")
NODE_GET = re.compile(r"(for i in .*)?kubectl --kubeconfig \S+ get node [a-z0-9-]+ -o name.*")
UPLOAD_CERTS = re.compile(
    r"kubeadm init phase upload-certs --upload-certs --config \S+ --certificate-key [0-9a-f]{64}"
)
RM_JOIN = f"rm -f {JOIN_CONFIG}"
#: Real kubeadm output (read from ../shared; tests that need it skip when it is absent).
SHARED = TRANSCRIPTS
JOIN_TOKEN = (DATA / "token-create-1.30.reconstructed.txt").read_text().strip()
ADMIN_CONF_BODY = (
    b"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
    b"    server: https://api.lab.hakube.internal:8443\n  name: lab\n"
)

CLUSTER_DATA: dict[str, Any] = {
    "apiVersion": "hakube/v1alpha1",
    "kind": "Cluster",
    "name": "lab",
    "hosts": [
        {"name": "cp1", "address": "10.88.0.11", "roles": ["control-plane"]},
        {"name": "cp2", "address": "10.88.0.12", "roles": ["control-plane"]},
        {"name": "cp3", "address": "10.88.0.13", "roles": ["control-plane"]},
        {"name": "w1", "address": "10.88.0.21", "roles": ["worker"]},
    ],
    "endpoint": {"mode": "vip", "vip": "10.88.0.10", "port": 8443, "interface": "eth0"},
    "etcd": {"topology": "external"},
    "packages": {"manager": "apt"},
}


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster_data(CLUSTER_DATA).cluster


def with_version(version: str) -> Cluster:
    return load_cluster_data({**CLUSTER_DATA, "kubernetes": {"version": version}}).cluster


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir("lab", root=tmp_path)


def debian_facts(name: str) -> HostFacts:
    return HostFacts(os=OSRelease(id="debian", version="12"), hostname=name, cpus=2, mem_mb=3933)


def make_ctx(
    cluster: Cluster,
    state: StateDir,
    transports: dict[str, ScriptedTransport],
    phase: str,
    *,
    dry_run: bool = False,
    emit: Callable[[Event], None] = lambda _e: None,
) -> Context:
    given: dict[str, Transport] = dict(transports)
    for h in cluster.hosts:  # hosts a test does not script accept puts and nothing else
        given.setdefault(h.name, ScriptedTransport(h.name))
    run_data = RunData(cluster, state.secrets(), state, dry_run=dry_run, record=state.record())
    ctx = Context.create(run_data, given, emit=emit)
    for h in cluster.hosts:
        ctx.facts.set(h, debian_facts(h.name))
    ctx.report.phase = phase
    return ctx


def transcript(state: StateDir, cluster: Cluster, *, token: str | None = None) -> str:
    secrets = state.secrets()
    text = INIT_TRANSCRIPT.read_text()
    assert TRANSCRIPT_TOKEN in text
    assert TRANSCRIPT_HASH in text
    return (
        text.replace(TRANSCRIPT_TOKEN, token or secrets.bootstrap_token)
        .replace(TRANSCRIPT_HASH, state.cluster_pki().ca_cert_hash)
        .replace(TRANSCRIPT_KEY, secrets.certificate_key)
        .replace(TRANSCRIPT_ENDPOINT, cluster.control_plane_endpoint)
    )


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


# --- kubeadm/init --------------------------------------------------------------------------------


def init_transport(output: str, *, exit_status: int = 0) -> ScriptedTransport:
    t = ScriptedTransport("cp1")

    def kubeadm_init(call: Call) -> Reply:
        if exit_status == 0:  # kubeadm writes the kubeconfigs as it goes
            t.files[ADMIN_CONF] = FakeFile(ADMIN_CONF_BODY, 0o600, "root")
        return Reply(stdout=output, exit_status=exit_status)

    t.on(VALIDATE, Reply())
    t.on(INIT_CMD, kubeadm_init)
    t.on(API_PROBE, Reply(stdout="000", exit_status=7))  # nothing answers yet
    t.on(LEFTOVERS, Reply(exit_status=2))  # no half-done files
    t.on(KUBEADM_CONFIG, Reply(stdout="configmap/kubeadm-config\n"))
    t.on(TOKEN_DELETE, Reply())
    return t


def test_init_uploads_the_shared_pki_then_runs_kubeadm_and_fetches_admin_conf(
    cluster: Cluster, state: StateDir
) -> None:
    t = init_transport(transcript(state, cluster))
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    before = time.time()
    run(KubeadmInit().run(ctx, cluster.host("cp1")))

    # Recorded only after kubeadm-config was read back, with the settings fixed at init.
    rec = state.record()
    assert rec.init_host == "cp1"
    assert rec.init_at is not None
    assert rec.init_at >= before
    assert rec.fixed["control-plane endpoint"] == cluster.control_plane_endpoint
    order = t.commands
    assert order.index(INIT_CMD) < next(i for i, c in enumerate(order) if KUBEADM_CONFIG.match(c))
    # kubeadm's own bootstrap token (in init.yaml) is deleted: joins create their own.
    assert TOKEN_DELETE.fullmatch(order[-1])
    assert ctx.run.secrets.bootstrap_token.split(".")[0] in order[-1]
    # From now on every LB host's health check fails when all API servers are DOWN.
    for name in ("cp1", "cp2", "cp3"):
        marker = asyncio.run(ctx.facts.get(cluster.host(name), INIT_MARKER))
        assert marker.startswith(rec.cluster_id.encode()), name
    pki = state.cluster_pki()
    puts = {c.target: c for c in t.calls if c.kind == "put"}
    assert puts["/etc/kubernetes/pki/ca.crt"].content == pki.ca.cert_pem
    assert puts["/etc/kubernetes/pki/ca.crt"].mode == 0o644
    for key in ("ca.key", "front-proxy-ca.key", "sa.key", "apiserver-etcd-client.key"):
        assert puts[f"/etc/kubernetes/pki/{key}"].mode == 0o600, key
    for crt in ("front-proxy-ca.crt", "sa.pub", "etcd/ca.crt", "apiserver-etcd-client.crt"):
        assert f"/etc/kubernetes/pki/{crt}" in puts, crt
    # init.yaml goes up as a 0600 candidate and is validated before kubeadm reads it.
    assert puts[f"{INIT_CONFIG}.hakube-new"].mode == 0o600
    init_yaml = puts[f"{INIT_CONFIG}.hakube-new"].content
    assert init_yaml is not None
    assert ctx.run.secrets.bootstrap_token.encode() in init_yaml
    order = [c.target for c in t.calls]
    validate_at = next(i for i, c in enumerate(order) if VALIDATE.fullmatch(c))
    assert order.index("/etc/kubernetes/pki/ca.key") < order.index(INIT_CMD)
    assert validate_at < order.index(INIT_CMD) < order.index(ADMIN_CONF)
    assert [c.timeout for c in t.calls if c.target == INIT_CMD] == [900]

    admin = state.path / "admin.conf"
    assert admin.read_bytes() == ADMIN_CONF_BODY
    assert stat.S_IMODE(admin.stat().st_mode) == 0o600
    assert ("kubeadm/init", "cp1", "kubeadm init --upload-certs") in [
        (c.phase, c.host, c.description) for c in ctx.do.changes
    ]


def test_init_with_a_foreign_token_raises_and_fetches_nothing(
    cluster: Cluster, state: StateDir
) -> None:
    foreign = "abcdef.0123456789abcdef"
    assert foreign != state.secrets().bootstrap_token
    t = init_transport(transcript(state, cluster, token=foreign))
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    with pytest.raises(PhaseError, match="CA hash or token other than the ones hakube provided"):
        run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert not (state.path / "admin.conf").exists()
    assert state.record().init_host is None  # a failed init is not "done"
    assert [c for c in t.calls if c.kind == "get"] == []


def test_init_that_fails_preflight_says_which_checks(cluster: Cluster, state: StateDir) -> None:
    t = init_transport(PREFLIGHT_FAIL.read_text(), exit_status=1)
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    with pytest.raises(PhaseError) as caught:
        run(KubeadmInit().run(ctx, cluster.host("cp1")))
    msg = str(caught.value)
    assert msg.startswith("kubeadm init failed (exit 1): kubeadm init failed preflight: ")
    assert "Port-6443" in msg
    assert "DirAvailable--var-lib-etcd" in msg
    assert state.record().init_host is None


def test_init_on_a_recorded_init_host_only_fetches_admin_conf(
    cluster: Cluster, state: StateDir
) -> None:
    state.record().initialised("cp1", cluster, at=time.time())
    t = ScriptedTransport("cp1", files={ADMIN_CONF: ADMIN_CONF_BODY})
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    ctx.facts["cp1"].files[ADMIN_CONF] = FileState("0" * 64, 0o600)
    run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert [(c.kind, c.target) for c in t.calls] == [("get", ADMIN_CONF)]
    assert ctx.do.changes == []
    assert (state.path / "admin.conf").read_bytes() == ADMIN_CONF_BODY


def test_an_unrecorded_initialised_host_is_adopted_once_it_serves(
    cluster: Cluster, state: StateDir
) -> None:
    """A cluster made by an older hakube (no record) is recorded, not initialised again."""
    t = ScriptedTransport("cp1", [(KUBEADM_CONFIG, Reply())], files={ADMIN_CONF: ADMIN_CONF_BODY})
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    ctx.facts["cp1"].files[ADMIN_CONF] = FileState("0" * 64, 0o600)
    run(KubeadmInit().run(ctx, cluster.host("cp1")))
    # Only the LB hosts' markers: the health check's pre-init exception ends.
    assert {(c.host, c.description.split(" (")[0]) for c in ctx.do.changes} == {
        (n, f"write {INIT_MARKER}") for n in ("cp1", "cp2", "cp3")
    }
    assert not [c for c in t.commands if c.startswith("kubeadm")]
    rec = StateDir("lab", root=state.path.parent).record()  # as saved on disk
    assert (rec.init_host, rec.init_at) == ("cp1", None)
    assert rec.fixed["pod subnet"] == str(cluster.network.pod_subnet)


def test_an_unrecorded_admin_conf_whose_api_is_down_stops_with_the_reset_command(
    cluster: Cluster, state: StateDir
) -> None:
    t = ScriptedTransport("cp1", [(KUBEADM_CONFIG, Reply(exit_status=1))])
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    ctx.facts["cp1"].files[ADMIN_CONF] = FileState("0" * 64, 0o600)
    with pytest.raises(PhaseError) as caught:
        run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert "`kubeadm reset -f` on cp1" in str(caught.value)
    assert state.record().init_host is None
    assert not [c for c in t.commands if c.startswith("kubeadm")]


def test_a_recorded_init_host_that_lost_admin_conf_is_never_initialised_again(
    cluster: Cluster, state: StateDir
) -> None:
    state.record().initialised("cp1", cluster, at=time.time())
    t = ScriptedTransport("cp1")  # no rule: any command fails the test
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    with pytest.raises(PhaseError, match="never runs kubeadm init twice"):
        run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert t.calls == []


def test_init_is_refused_when_the_endpoint_already_answers(
    cluster: Cluster, state: StateDir
) -> None:
    t = init_transport(transcript(state, cluster))
    t.rules.insert(0, (API_PROBE, Reply(stdout="403")))
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    with pytest.raises(PhaseError, match=r"already answers \(HTTP 403\)"):
        run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert INIT_CMD not in t.commands
    assert not [c for c in t.calls if c.kind == "put"]


def test_a_half_initialised_init_host_is_reset_then_initialised(
    cluster: Cluster, state: StateDir
) -> None:
    t = init_transport(transcript(state, cluster))
    t.rules.insert(0, (LEFTOVERS, Reply(stdout="/etc/kubernetes/manifests/kube-apiserver.yaml\n")))
    t.on("kubeadm reset -f", Reply())
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert t.commands.index("kubeadm reset -f") < t.commands.index(INIT_CMD)
    said = [c.description for c in ctx.do.changes]
    assert (
        "kubeadm reset -f (a failed init left /etc/kubernetes/manifests/kube-apiserver.yaml)"
        in said
    )
    assert state.record().init_host == "cp1"


def test_reordering_hosts_never_moves_kubeadm_init(cluster: Cluster, state: StateDir) -> None:
    state.record().initialised("cp1", cluster, at=time.time())
    data = {**CLUSTER_DATA, "hosts": [CLUSTER_DATA["hosts"][i] for i in (2, 1, 0, 3)]}
    moved = load_cluster_data(data).cluster
    ctx = make_ctx(moved, state, {}, "kubeadm/init")
    assert [h.name for h in KubeadmInit().hosts(ctx)] == ["cp1"]
    assert [h.name for h in JoinControlPlanes().hosts(ctx)] == ["cp3", "cp2"]
    # Before anything is recorded, the first control plane in the file is the one.
    fresh = make_ctx(moved, StateDir("other", root=state.path.parent), {}, "kubeadm/init")
    assert [h.name for h in KubeadmInit().hosts(fresh)] == ["cp3"]


def test_init_in_a_dry_run_goes_through_the_gate_and_runs_nothing(
    cluster: Cluster, state: StateDir
) -> None:
    t = ScriptedTransport("cp1")
    events: list[Event] = []
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init", dry_run=True, emit=events.append)
    run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert t.calls == []
    assert ("kubeadm/init", "cp1", "kubeadm init --upload-certs") in [
        (e.phase, e.host, e.message) for e in events if e.kind is EventKind.CHANGE
    ]


# --- kubeadm/packages ----------------------------------------------------------------------------

MADISON = re.compile(
    r"apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null 2>&1; apt-cache madison kubeadm"
)


KEY_FETCH = re.compile(r"mkdir -p /etc/apt/keyrings && curl -fsSL .*Release\.key.*gpg --dearmor.*")


def test_packages_unavailable_fail_with_the_skip_phases_hint(
    cluster: Cluster, state: StateDir
) -> None:
    t = ScriptedTransport("cp1", [(MADISON, Reply(stdout="")), (KEY_FETCH, Reply())])
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/packages")
    with pytest.raises(PhaseError) as caught:
        run(KubePackages().run(ctx, cluster.host("cp1")))
    msg = str(caught.value)
    version = cluster.kubernetes.version
    assert msg.startswith(f"kubeadm {version} is not available on cp1 from the Kubernetes ")
    assert "https://pkgs.k8s.io/core:/stable:/v1.30/deb/" in msg
    assert msg.endswith("run with --skip-phases kubeadm,cni")
    assert not [c for c in t.commands if " install " in c]
    assert [c.target for c in t.calls if c.kind == "put"] == [APT_KUBERNETES_LIST]


def test_packages_available_are_installed_pinned_and_held(
    cluster: Cluster, state: StateDir
) -> None:
    version = cluster.kubernetes.version
    madison = (
        f"   kubeadm | {version}-1.1 | https://pkgs.k8s.io/core:/stable:/v1.30/deb  Packages\n"
    )
    t = ScriptedTransport(
        "cp1",
        [
            (MADISON, madison),
            (KEY_FETCH, Reply()),
            (
                re.compile(r"export DEBIAN_FRONTEND=noninteractive; apt-get .* install .*"),
                Reply(stdout="".join(f"{p} {version}-1.1\n" for p in KUBE_PACKAGES)),
            ),
            ("systemctl enable -q kubelet", Reply()),
        ],
    )
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/packages")
    run(KubePackages().run(ctx, cluster.host("cp1")))
    install = t.commands[2]
    for p in ("kubelet", "kubeadm", "kubectl"):
        assert f"{p}={version}-*" in install
    assert "&& apt-mark hold kubelet kubeadm kubectl" in install
    assert t.commands[-1] == "systemctl enable -q kubelet"
    # What the package manager reported is recorded as installed on that host.
    assert state.record().versions["cp1"] == dict.fromkeys(KUBE_PACKAGES, f"{version}-1.1")


def test_packages_match_the_version_exactly_not_as_a_prefix(
    cluster: Cluster, state: StateDir
) -> None:
    """1.30.1 is not 1.30.10: a repository offering only 1.30.10 does not have 1.30.1."""
    c = with_version("1.30.1")
    madison = "   kubeadm | 1.30.10-1.1 | https://pkgs.k8s.io/core:/stable:/v1.30/deb  Packages\n"
    t = ScriptedTransport("cp1", [(MADISON, madison), (KEY_FETCH, Reply())])
    ctx = make_ctx(c, state, {"cp1": t}, "kubeadm/packages")
    with pytest.raises(PhaseError, match=r"kubeadm 1\.30\.1 is not available"):
        run(KubePackages().run(ctx, c.host("cp1")))
    assert not [cmd for cmd in t.commands if " install " in cmd]


@pytest.mark.parametrize("installed", ["1.30.10-1.1", "1.29.4-1.1"])
def test_another_installed_version_is_refused_and_nothing_is_installed(
    cluster: Cluster, state: StateDir, installed: str
) -> None:
    c = with_version("1.30.1")
    t = ScriptedTransport("cp1")  # no rule: any command would fail the test
    ctx = make_ctx(c, state, {"cp1": t}, "kubeadm/packages")
    ctx.facts["cp1"].packages |= dict.fromkeys(KUBE_PACKAGES, installed)
    with pytest.raises(PhaseError) as caught:
        run(KubePackages().run(ctx, c.host("cp1")))
    shown = installed.split("-", maxsplit=1)[0]
    assert f"kubeadm {shown} is installed but kubernetes.version is 1.30.1" in str(caught.value)
    assert "upgrade is not supported yet" in str(caught.value)
    assert t.calls == []
    # Preflight says the same before anything runs.
    problems = version_problems("1.30.1", ctx.facts["cp1"].packages)
    assert len(problems) == 3


def test_the_installed_version_matching_exactly_needs_no_install(
    cluster: Cluster, state: StateDir
) -> None:
    version = cluster.kubernetes.version
    t = ScriptedTransport("cp1")
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/packages")
    ctx.facts["cp1"].packages |= dict.fromkeys(KUBE_PACKAGES, f"{version}-1.1")
    ctx.facts["cp1"].held |= set(KUBE_PACKAGES)
    run(KubePackages().run(ctx, cluster.host("cp1")))
    assert t.calls == []


def test_packages_fetch_the_repository_key_before_probing(
    cluster: Cluster, state: StateDir
) -> None:
    assert cluster.packages.gpg_check
    key_url = kubernetes_key_url(cluster, PackageManager.APT)
    assert key_url is not None
    t = ScriptedTransport(
        "cp1", [(MADISON, Reply(stdout="")), (re.compile(r".*Release\.key.*"), Reply())]
    )
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/packages")
    with pytest.raises(PhaseError):
        run(KubePackages().run(ctx, cluster.host("cp1")))
    before_probe = t.commands[: next(i for i, c in enumerate(t.commands) if MADISON.fullmatch(c))]
    assert [c for c in before_probe if key_url in c and APT_KEYRING in c]


# --- kubeadm/join-control-planes -----------------------------------------------------------------


class SharedLogTransport(ScriptedTransport):
    """Records every operation of every host in one list, in the order they happen."""

    def __init__(self, host: str, log: list[tuple[str, str]]) -> None:
        super().__init__(host)
        self.log = log

    async def run(
        self,
        command: str,
        *,
        check: bool = True,
        timeout: float | None = None,
        stdin: str | bytes | None = None,
    ) -> CommandResult:
        self.log.append((self.host, command))
        return await super().run(command, check=check, timeout=timeout, stdin=stdin)

    async def put(
        self, path: str, content: bytes, *, mode: int = 0o644, owner: str | None = None
    ) -> None:
        self.log.append((self.host, path))
        await super().put(path, content, mode=mode, owner=owner)


def join_setup(
    cluster: Cluster,
    state: StateDir,
    join_reply: Callable[[str], Reply],
    *,
    phase: str = "kubeadm/join-control-planes",
    init_at: float | None = None,
) -> tuple[Context, dict[str, SharedLogTransport], list[tuple[str, str]]]:
    """cp1 ran kubeadm init (recorded `init_at`, default: just now); the others join."""
    state.record().initialised("cp1", cluster, at=time.time() if init_at is None else init_at)
    log: list[tuple[str, str]] = []
    ts = {h.name: SharedLogTransport(h.name, log) for h in cluster.hosts}
    ts["cp1"].on(TOKEN_CREATE, Reply(stdout=JOIN_TOKEN + "\n", delay=0.001))
    ts["cp1"].on(TOKEN_DELETE, Reply())
    ts["cp1"].on(NODE_GET, Reply(stdout="node/x\n"))
    for name in ("cp2", "cp3", "w1"):
        # A small delay makes every command an await point, so parallel hosts would interleave.
        ts[name].on(LEFTOVERS, Reply(exit_status=2, delay=0.001))
        ts[name].on(VALIDATE, Reply(delay=0.001))
        ts[name].on(JOIN_CMD, join_reply(name))
        ts[name].on(RM_JOIN, Reply())
    ctx = make_ctx(cluster, state, dict(ts), phase)
    return ctx, ts, log


def run_phase(
    ctx: Context, serial: bool, phase: JoinControlPlanes | JoinWorkers | None = None
) -> dict[str, BaseException]:
    phase = phase or JoinControlPlanes()
    body = functools.partial(phase.run, ctx)
    failures = asyncio.run(gather_hosts(phase.hosts(ctx), body, serial=serial))
    if not failures:
        asyncio.run(phase.finish(ctx))
    return failures


def test_join_control_planes_runs_one_host_at_a_time(cluster: Cluster, state: StateDir) -> None:
    phase = JoinControlPlanes()
    assert phase.serial is True
    assert [h.name for h in phase.targets(cluster)] == ["cp2", "cp3"]
    ctx, ts, log = join_setup(cluster, state, lambda _n: Reply(delay=0.001))
    assert run_phase(ctx, serial=phase.serial) == {}
    hosts = [h for h, _ in log if h in ("cp2", "cp3")]
    first_cp3 = hosts.index("cp3")
    assert set(hosts[:first_cp3]) == {"cp2"}
    assert set(hosts[first_cp3:]) == {"cp3"}
    # cp2 had finished its join before cp3 did anything.
    assert log.index(("cp2", JOIN_CMD)) < log.index(next(e for e in log if e[0] == "cp3"))
    for name in ("cp2", "cp3"):
        assert ts[name].commands[-2:] == [JOIN_CMD, RM_JOIN]


def test_the_shared_log_would_show_parallel_joins(cluster: Cluster, state: StateDir) -> None:
    """Control for the test above: without `serial` the two hosts' operations interleave."""
    ctx, _ts, log = join_setup(cluster, state, lambda _n: Reply(delay=0.001))
    assert run_phase(ctx, serial=False) == {}
    hosts = [h for h, _ in log if h in ("cp2", "cp3")]
    assert hosts != sorted(hosts)


def test_join_uses_a_fresh_token_made_once_per_phase_and_deleted_after(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply())
    assert run_phase(ctx, serial=False) == {}  # parallel: still one `token create`
    creates = [c for c in ts["cp1"].commands if TOKEN_CREATE.fullmatch(c)]
    assert len(creates) == 1
    assert ts["cp1"].commands[-1] == f"kubeadm token delete {JOIN_TOKEN.split('.')[0]} >/dev/null"
    ca_hash = state.cluster_pki().ca_cert_hash
    for name in ("cp2", "cp3"):
        puts = {c.target: c for c in ts[name].calls if c.kind == "put"}
        join = puts[f"{JOIN_CONFIG}.hakube-new"]
        assert join.mode == 0o600
        assert join.content is not None
        text = join.content.decode()
        assert ca_hash in text
        assert CA_HASH_PLACEHOLDER not in text
        assert JOIN_TOKEN in text
        assert ctx.run.secrets.bootstrap_token not in text  # init's token was deleted after init
        assert ctx.run.secrets.certificate_key in text  # a control-plane join fetches the certs
        assert ts[name].commands.count(JOIN_CMD) == 1
        # The shared CA went up too, before the join; join.yaml is removed right after it.
        assert puts["/etc/kubernetes/pki/ca.key"].mode == 0o600
        ops = [c.target for c in ts[name].calls]
        assert ops.index("/etc/kubernetes/pki/ca.key") < ops.index(JOIN_CMD) < ops.index(RM_JOIN)
        assert JOIN_CONFIG not in ts[name].files
    # Recorded only once the Node object was seen.
    assert state.record().nodes == {"cp2": "control-plane", "cp3": "control-plane"}
    assert ctx.report.redactor.redact(JOIN_TOKEN) == "***"  # never in logs or events


def test_parallel_worker_joins_share_one_token(cluster: Cluster, state: StateDir) -> None:
    data = {**CLUSTER_DATA, "hosts": [*CLUSTER_DATA["hosts"]]}
    data["hosts"].append({"name": "w2", "address": "10.88.0.22", "roles": ["worker"]})
    big = load_cluster_data(data).cluster
    ctx, ts, _log = join_setup(big, state, lambda _n: Reply(), phase="kubeadm/join-workers")
    ts["w2"].on(LEFTOVERS, Reply(exit_status=2, delay=0.001)).on(VALIDATE, Reply())
    ts["w2"].on(JOIN_CMD, Reply()).on(RM_JOIN, Reply())
    assert run_phase(ctx, serial=False, phase=JoinWorkers()) == {}
    assert len([c for c in ts["cp1"].commands if TOKEN_CREATE.fullmatch(c)]) == 1
    assert state.record().nodes == {"w1": "worker", "w2": "worker"}


def test_a_control_plane_join_two_hours_after_init_reuploads_the_certificates_first(
    cluster: Cluster, state: StateDir
) -> None:
    """The kubeadm-certs Secret is gone 2 h after init: upload it again before joining."""
    real = SHARED / "1.32-upload-certs-1.txt"
    if not real.exists():
        pytest.skip(f"{real} is absent")
    key = state.secrets().certificate_key
    output = real.read_text().replace(
        "7531149107ebc3caf4990f94d19824aecf39d93b84ee1b9c86aee84c04e76656", key
    )
    three_hours_ago = time.time() - 3 * 3600
    ctx, ts, log = join_setup(cluster, state, lambda _n: Reply(), init_at=three_hours_ago)
    ts["cp1"].on(UPLOAD_CERTS, Reply(stdout=output))
    assert run_phase(ctx, serial=True) == {}
    uploads = [i for i, (h, c) in enumerate(log) if h == "cp1" and UPLOAD_CERTS.fullmatch(c)]
    assert len(uploads) == 1  # once for the phase, not per host
    assert uploads[0] < log.index(("cp2", JOIN_CMD))
    assert "re-upload the control-plane certificates (kubeadm-certs, 2 h)" in [
        c.description for c in ctx.do.changes
    ]


def test_a_control_plane_join_soon_after_init_uploads_nothing(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply(), init_at=time.time() - 600)
    assert run_phase(ctx, serial=True) == {}
    assert not [c for c in ts["cp1"].commands if "upload-certs" in c]


def test_an_upload_with_another_key_fails_before_any_join(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply(), init_at=time.time() - 3 * 3600)
    other = "[upload-certs] Using certificate key:\n" + "0" * 64 + "\n"
    ts["cp1"].on(UPLOAD_CERTS, Reply(stdout=other))
    failures = run_phase(ctx, serial=True)
    assert "another certificate key" in str(failures["cp2"])
    assert JOIN_CMD not in ts["cp2"].commands


def test_a_failed_join_stops_before_the_next_control_plane(
    cluster: Cluster, state: StateDir
) -> None:
    def reply(name: str) -> Reply:
        if name == "cp2":
            return Reply(stderr="error execution phase preflight: ...\n", exit_status=1)
        return Reply()

    ctx, ts, _log = join_setup(cluster, state, reply)
    failures = run_phase(ctx, serial=True)
    assert list(failures) == ["cp2"]
    assert ts["cp3"].calls == []
    assert state.record().nodes == {}  # a failed join is not "done"


def test_a_recorded_node_with_a_kubelet_conf_is_skipped(cluster: Cluster, state: StateDir) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply())
    state.record().joined("cp2", "control-plane")
    ctx.facts["cp2"].files[KUBELET_CONF] = FileState("0" * 64, 0o600)
    assert run_phase(ctx, serial=True) == {}
    assert ts["cp2"].calls == []
    assert ts["cp3"].commands[-2:] == [JOIN_CMD, RM_JOIN]


def test_an_unrecorded_joined_node_is_recorded_once_its_node_object_is_seen(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply())
    ctx.facts["cp2"].files[KUBELET_CONF] = FileState("0" * 64, 0o600)
    assert run_phase(ctx, serial=True) == {}
    assert ts["cp2"].calls == []
    assert state.record().nodes["cp2"] == "control-plane"


NOT_FOUND = 'Error from server (NotFound): nodes "{}" not found\n'
RESET = "kubeadm reset -f"


def node_get(*, absent: str) -> Callable[[Call], Reply]:
    """The init host's `kubectl get node`: `absent` is NotFound until it has joined (the
    waiting lookup after `kubeadm join` finds it)."""

    def reply(call: Call) -> Reply:
        if call.target.startswith("for i in") or f" node {absent} " not in call.target:
            return Reply(stdout="node/x\n")
        return Reply(stderr=NOT_FOUND.format(absent), exit_status=1)

    return reply


def test_a_half_joined_control_plane_stops_with_the_reset_command(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply())
    ts["cp1"].rules.insert(0, (NODE_GET, node_get(absent="cp2")))
    ctx.facts["cp2"].files[KUBELET_CONF] = FileState("0" * 64, 0o600)
    failures = run_phase(ctx, serial=True)
    assert "a join that failed half-way. Run `kubeadm reset -f` on cp2" in str(failures["cp2"])
    assert RESET not in ts["cp2"].commands
    assert "cp2" not in state.record().nodes


def worker_join_output() -> str:
    real = SHARED / "1.33-join-worker-1.txt"
    if not real.exists():
        pytest.skip(f"{real} is absent")
    return real.read_text()


def test_a_half_joined_worker_is_reset_and_joined_again_with_a_fresh_token(
    cluster: Cluster, state: StateDir
) -> None:
    """kubelet.conf on w1, no Node w1, nothing recorded: a join that died after the TLS
    bootstrap started. The next run resets w1 through the gate and joins it again."""
    output = worker_join_output()
    ctx, ts, _log = join_setup(
        cluster, state, lambda _n: Reply(stdout=output), phase="kubeadm/join-workers"
    )
    ts["cp1"].rules.insert(0, (NODE_GET, node_get(absent="w1")))
    ts["w1"].on(RESET, Reply())
    ctx.facts["w1"].files[KUBELET_CONF] = FileState("0" * 64, 0o600)
    assert run_phase(ctx, serial=False, phase=JoinWorkers()) == {}
    ops = ts["w1"].commands
    assert ops.index(RESET) < ops.index(JOIN_CMD) < ops.index(RM_JOIN)
    assert next(c.description for c in ctx.do.changes if c.host == "w1") == (
        "kubeadm reset -f (a join that failed half-way left /etc/kubernetes/kubelet.conf; "
        "no Node w1)"
    )
    join = next(c for c in ts["w1"].calls if c.target == f"{JOIN_CONFIG}.hakube-new")
    assert join.content is not None
    assert JOIN_TOKEN in join.content.decode()  # this run's token, not init's
    assert ctx.run.secrets.bootstrap_token not in join.content.decode()
    assert state.record().nodes == {"w1": "worker"}


def test_a_worker_left_with_only_its_bootstrap_kubeconfig_is_reset_and_joined(
    cluster: Cluster, state: StateDir
) -> None:
    """The TLS bootstrap never finished: no kubelet.conf, but kubeadm's leftovers would fail
    the next join's preflight."""
    output = worker_join_output()
    ctx, ts, _log = join_setup(
        cluster, state, lambda _n: Reply(stdout=output), phase="kubeadm/join-workers"
    )
    ts["cp1"].rules.insert(0, (NODE_GET, node_get(absent="w1")))
    ts["w1"].rules.insert(0, (LEFTOVERS, Reply(stdout="/etc/kubernetes/bootstrap-kubelet.conf\n")))
    ts["w1"].on(RESET, Reply())
    assert run_phase(ctx, serial=False, phase=JoinWorkers()) == {}
    ops = ts["w1"].commands
    assert ops.index(RESET) < ops.index(JOIN_CMD)
    assert state.record().nodes == {"w1": "worker"}


def test_a_worker_is_never_reset_when_the_api_server_cannot_say_whether_it_joined(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply(), phase="kubeadm/join-workers")
    refused = "The connection to the server 10.88.0.10:8443 was refused - did you specify the "
    ts["cp1"].rules.insert(
        0, (NODE_GET, Reply(stderr=refused + "right host or port?\n", exit_status=1))
    )
    ctx.facts["w1"].files[KUBELET_CONF] = FileState("0" * 64, 0o600)
    failures = run_phase(ctx, serial=False, phase=JoinWorkers())
    assert "cannot be read through cp1's /etc/kubernetes/admin.conf" in str(failures["w1"])
    assert "nothing was changed" in str(failures["w1"])
    assert ts["w1"].calls == []
    assert ctx.do.changes == []


def test_a_worker_with_an_apiserver_manifest_is_not_reset(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply(), phase="kubeadm/join-workers")
    ts["cp1"].rules.insert(0, (NODE_GET, node_get(absent="w1")))
    manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml\n"
    ts["w1"].rules.insert(0, (LEFTOVERS, Reply(stdout=manifest)))
    failures = run_phase(ctx, serial=False, phase=JoinWorkers())
    assert "Run `kubeadm reset -f` on w1" in str(failures["w1"])
    assert RESET not in ts["w1"].commands
    assert JOIN_CMD not in ts["w1"].commands
