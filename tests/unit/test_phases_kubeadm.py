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
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from hakube.facts.host import FileState, HostFacts
from hakube.phases.base import PhaseError, gather_hosts
from hakube.phases.context import Context, RunData
from hakube.phases.kubeadm import (
    ADMIN_CONF,
    KUBELET_CONF,
    JoinControlPlanes,
    KubeadmInit,
    KubePackages,
)
from hakube.render.host import APT_KEYRING, APT_KUBERNETES_LIST, kubernetes_key_url
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
VALIDATE = re.compile(r"if kubeadm config validate --config \S+ >/tmp/\.hakube-validate .*", re.S)
TOKEN_ENSURE = re.compile(
    r"kubeadm token list \| grep -q \^[a-z0-9]{6} \|\| kubeadm token create .*"
)
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


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir("lab", root=tmp_path)


def debian_facts(name: str) -> HostFacts:
    return HostFacts(os_id="debian", os_version="12", hostname=name, cpus=2, mem_mb=3933)


def make_ctx(
    cluster: Cluster, state: StateDir, transports: dict[str, ScriptedTransport], phase: str
) -> Context:
    given: dict[str, Transport] = dict(transports)
    ctx = Context.create(RunData(cluster, state.secrets(), state), given)
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
    return t


def test_init_uploads_the_shared_pki_then_runs_kubeadm_and_fetches_admin_conf(
    cluster: Cluster, state: StateDir
) -> None:
    t = init_transport(transcript(state, cluster))
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    run(KubeadmInit().run(ctx, cluster.host("cp1")))

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


def test_init_on_an_initialised_host_only_fetches_admin_conf(
    cluster: Cluster, state: StateDir
) -> None:
    t = ScriptedTransport("cp1", files={ADMIN_CONF: ADMIN_CONF_BODY})
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/init")
    ctx.facts["cp1"].files[ADMIN_CONF] = FileState("0" * 64, 0o600)
    run(KubeadmInit().run(ctx, cluster.host("cp1")))
    assert [(c.kind, c.target) for c in t.calls] == [("get", ADMIN_CONF)]
    assert ctx.do.changes == []
    assert (state.path / "admin.conf").read_bytes() == ADMIN_CONF_BODY


# --- kubeadm/packages ----------------------------------------------------------------------------

MADISON = re.compile(r"apt-get update -q >/dev/null 2>&1; apt-cache madison kubeadm")


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
    assert not [c for c in t.commands if "apt-get install" in c]
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
            (re.compile(r"export DEBIAN_FRONTEND=noninteractive; apt-mark unhold .*"), Reply()),
            ("systemctl enable -q kubelet", Reply()),
        ],
    )
    ctx = make_ctx(cluster, state, {"cp1": t}, "kubeadm/packages")
    run(KubePackages().run(ctx, cluster.host("cp1")))
    install = t.commands[2]
    for p in ("kubelet", "kubeadm", "kubectl"):
        assert f"{p}={version}-*" in install
    assert install.endswith("apt-mark hold kubelet kubeadm kubectl")
    assert t.commands[-1] == "systemctl enable -q kubelet"


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
    cluster: Cluster, state: StateDir, join_reply: Callable[[str], Reply]
) -> tuple[Context, dict[str, SharedLogTransport], list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []
    ts = {h.name: SharedLogTransport(h.name, log) for h in cluster.hosts}
    ts["cp1"].on(TOKEN_ENSURE, Reply())
    for name in ("cp2", "cp3"):
        # A small delay makes every command an await point, so parallel hosts would interleave.
        ts[name].on(VALIDATE, Reply(delay=0.001))
        ts[name].on(JOIN_CMD, join_reply(name))
    ctx = make_ctx(cluster, state, dict(ts), "kubeadm/join-control-planes")
    return ctx, ts, log


def run_phase(ctx: Context, serial: bool) -> dict[str, BaseException]:
    phase = JoinControlPlanes()
    body = functools.partial(phase.run, ctx)
    return asyncio.run(gather_hosts(phase.targets(ctx.run.cluster), body, serial=serial))


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
        assert ts[name].commands[-1] == JOIN_CMD
    assert len([c for c in ts["cp1"].commands if TOKEN_ENSURE.fullmatch(c)]) == 2


def test_the_shared_log_would_show_parallel_joins(cluster: Cluster, state: StateDir) -> None:
    """Control for the test above: without `serial` the two hosts' operations interleave."""
    ctx, _ts, log = join_setup(cluster, state, lambda _n: Reply(delay=0.001))
    assert run_phase(ctx, serial=False) == {}
    hosts = [h for h, _ in log if h in ("cp2", "cp3")]
    assert hosts != sorted(hosts)


def test_join_uses_join_yaml_with_the_real_ca_hash(cluster: Cluster, state: StateDir) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply())
    assert run_phase(ctx, serial=True) == {}
    ca_hash = state.cluster_pki().ca_cert_hash
    for name in ("cp2", "cp3"):
        puts = {c.target: c for c in ts[name].calls if c.kind == "put"}
        join = puts[f"{JOIN_CONFIG}.hakube-new"]
        assert join.mode == 0o600
        assert join.content is not None
        text = join.content.decode()
        assert ca_hash in text
        assert CA_HASH_PLACEHOLDER not in text
        assert ctx.run.secrets.bootstrap_token in text
        assert ctx.run.secrets.certificate_key in text  # a control-plane join fetches the certs
        assert ts[name].commands.count(JOIN_CMD) == 1
        # The shared CA went up too, before the join.
        assert puts["/etc/kubernetes/pki/ca.key"].mode == 0o600
        ops = [c.target for c in ts[name].calls]
        assert ops.index("/etc/kubernetes/pki/ca.key") < ops.index(JOIN_CMD)


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


def test_join_skips_a_host_that_already_has_a_kubelet_conf(
    cluster: Cluster, state: StateDir
) -> None:
    ctx, ts, _log = join_setup(cluster, state, lambda _n: Reply())
    ctx.facts["cp2"].files[KUBELET_CONF] = FileState("0" * 64, 0o600)
    assert run_phase(ctx, serial=True) == {}
    assert ts["cp2"].calls == []
    assert ts["cp3"].commands[-1] == JOIN_CMD
