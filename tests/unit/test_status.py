"""status judged from real host output: tests/data/ops/status-*.txt were captured from a 5-host
lab (keepalived 2.2.7, HAProxy 2.6, etcd 3.4.23, curl 7.88) by running status's own script on
each host: healthy, then with cp3's etcd stopped (status-cp3-etcd-stopped.txt), then cp2's too
(status-cp2-etcd-stopped.txt, and cp1 left alone without a leader: status-cp1-alone.txt). Other
tests bend one captured answer the way a broken host would print it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import TRANSCRIPTS

from hakube.facts.host import _sections
from hakube.facts.ops import (
    NO_CURL,
    EtcdAnswers,
    EtcdClient,
    OpsQuery,
    etcd_id,
    ops_script,
    parse_etcd,
    parse_keepalived_data,
    parse_ops,
    split_etcd,
)
from hakube.fileio import write_private
from hakube.phases.context import owner_of, sha256
from hakube.phases.etcd_join import bootstrapped
from hakube.render.etcd import ETCD_ENV_FILE
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.base import ConnectError
from hakube.transport.scripted import Reply, ScriptedTransport
from hakube.workflows.status import StatusReport, collect, expected_files

DATA = Path(__file__).resolve().parent.parent / "data" / "ops"
CAPTURED_AT = dt.datetime(2026, 11, 26, 10, 15, tzinfo=dt.UTC)
HOSTS = ("cp1", "cp2", "cp3", "w1", "w2")
SCRIPT = re.compile(r"d=\$\(mktemp -d\).*", re.S)

CLUSTER: dict[str, Any] = {
    "apiVersion": "hakube/v1alpha1",
    "kind": "Cluster",
    "name": "hk11c",
    "endpoint": {"mode": "vip", "vip": "10.123.246.100", "name": "apiserver.hk11c.lab",
                 "port": 8443, "interface": "host0"},
    "hosts": [
        {"name": "cp1", "address": "10.123.246.11", "roles": ["control-plane"]},
        {"name": "cp2", "address": "10.123.246.12", "roles": ["control-plane"]},
        {"name": "cp3", "address": "10.123.246.13", "roles": ["control-plane"]},
        {"name": "w1", "address": "10.123.246.21", "roles": ["worker"]},
        {"name": "w2", "address": "10.123.246.22", "roles": ["worker"]},
    ],
    "etcd": {"topology": "external"},
}  # fmt: skip


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster_data(CLUSTER).cluster


def captured(host: str) -> str:
    return (DATA / f"status-{host}.txt").read_text()


def section(text: str, name: str, body: str) -> str:
    """`text` with the body of one marked section replaced."""
    pattern = re.compile(rf"(@@hakube:{re.escape(name)}\n).*?(?=\n@@hakube:)", re.S)
    assert pattern.search(text), name
    return pattern.sub(lambda m: m.group(1) + body, text, count=1)


def run(
    cluster: Cluster, tmp: Path, outputs: dict[str, str], now: dt.datetime = CAPTURED_AT
) -> StatusReport:
    ts = {h: ScriptedTransport(h, [(SCRIPT, Reply(outputs[h]))]) for h in HOSTS}
    state = StateDir(cluster.name, root=tmp)  # empty: drift is not judged here
    return asyncio.run(collect(cluster, state, transports=dict(ts), now=now))


def healthy_outputs() -> dict[str, str]:
    return {h: captured(h) for h in HOSTS}


def test_captured_lab_is_healthy_with_one_vip_owner_and_a_leader(
    cluster: Cluster, tmp_path: Path
) -> None:
    r = run(cluster, tmp_path, healthy_outputs())
    assert r.problems == []
    assert r.healthy
    assert r.vip_owners == ["cp1"]
    assert [(lb.host, lb.vrrp_state, lb.priority) for lb in r.lbs] == [
        ("cp1", "MASTER", 200), ("cp2", "BACKUP", 190), ("cp3", "BACKUP", 180)
    ]  # fmt: skip
    assert len(r.backends) == 9
    assert sorted(m.name for m in r.etcd) == ["cp1", "cp2", "cp3"]
    assert sum(m.leader for m in r.etcd) == 1
    assert all(m.healthy and m.raft_index > 0 for m in r.etcd)
    # 4 certificates per etcd member (ca, server, peer, healthcheck client) and more from
    # the lab's apiserver stand-in, none near expiry.
    assert {c.host for c in r.certs} == {"cp1", "cp2", "cp3"}
    assert all(c.days_left is not None and c.days_left > 300 for c in r.certs)
    assert any("drift not checked" in n for n in r.notes)


def test_stopped_haproxy_on_one_lb_is_degraded(cluster: Cluster, tmp_path: Path) -> None:
    out = healthy_outputs()
    out["cp2"] = out["cp2"].replace(
        "Id=haproxy.service\nLoadState=loaded\nActiveState=active",
        "Id=haproxy.service\nLoadState=loaded\nActiveState=inactive",
    )
    out["cp2"] = section(out["cp2"], "haproxy", "")
    r = run(cluster, tmp_path, out)
    assert not r.healthy
    assert "cp2: haproxy is inactive" in r.problems


def test_two_vip_owners_and_a_faulted_instance_are_problems(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = healthy_outputs()
    out["cp2"] = section(out["cp2"], "vip", "1")
    out["cp3"] = out["cp3"].replace("State = BACKUP", "State = FAULT")
    r = run(cluster, tmp_path, out)
    assert r.vip_owners == ["cp1", "cp2"]
    assert any("held by 2 hosts" in p for p in r.problems)
    assert any("cp3: VRRP instance VI_51 is in FAULT" in p for p in r.problems)


def test_stopped_etcd_member_is_unhealthy_and_named_with_curls_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = healthy_outputs()
    out["cp3"] = captured("cp3-etcd-stopped")
    r = run(cluster, tmp_path, out)
    refused = "Failed to connect to 127.0.0.1 port 2379 after 0 ms: Couldn't connect to server"
    assert [p for p in r.problems if p.startswith("etcd")] == [f"etcd cp3: unhealthy ({refused})"]
    (cp3,) = [m for m in r.etcd if m.name == "cp3"]
    assert (cp3.healthy, cp3.id, cp3.error) == (False, "", refused)


def test_a_member_left_alone_has_no_leader_and_says_so(cluster: Cluster, tmp_path: Path) -> None:
    out = healthy_outputs()
    out["cp1"] = captured("cp1-alone")
    out["cp2"] = captured("cp2-etcd-stopped")
    out["cp3"] = captured("cp3-etcd-stopped")
    r = run(cluster, tmp_path, out)
    etcd = [p for p in r.problems if p.startswith("etcd")]
    assert "etcd cp1: etcdserver: no leader" in etcd
    assert any(p.startswith("etcd cp1: unhealthy (etcd's /health says false") for p in etcd)
    assert "etcd: no leader" in etcd
    (cp1,) = [m for m in r.etcd if m.name == "cp1"]
    assert (cp1.leader, cp1.raft_term) == (False, 4)


def test_etcd_alarm_is_a_problem(cluster: Cluster, tmp_path: Path) -> None:
    out = healthy_outputs()
    # Every member's status lists the cluster's alarms among its errors (etcd's own words).
    alarm = '"errors":["memberID:17065541088172074084 alarm:NOSPACE "],'
    for h in ("cp1", "cp2", "cp3"):
        out[h] = out[h].replace('"version":', alarm + '"version":', 1)
    r = run(cluster, tmp_path, out)
    (cp1,) = [m for m in r.etcd if m.name == "cp1"]
    assert cp1.alarms == ["NOSPACE"]
    assert [p for p in r.problems if "NOSPACE" in p] == [
        "etcd alarms: memberID:17065541088172074084 alarm:NOSPACE"
    ]


def test_certificates_warn_under_30_days_and_fail_once_expired(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = min(c.days_left or 0 for c in run(cluster, tmp_path, healthy_outputs()).certs)
    soon = CAPTURED_AT + dt.timedelta(days=first - 10)
    r = run(cluster, tmp_path, healthy_outputs(), now=soon)
    assert r.healthy
    assert any("expires in 10 days" in w for w in r.warnings)
    later = CAPTURED_AT + dt.timedelta(days=first + 1)
    r = run(cluster, tmp_path, healthy_outputs(), now=later)
    assert any("EXPIRED" in p for p in r.problems)


def test_an_unreachable_host_is_degraded_not_a_crash(cluster: Cluster, tmp_path: Path) -> None:
    out = healthy_outputs()
    ts = {h: ScriptedTransport(h, [(SCRIPT, Reply(out[h]))]) for h in HOSTS}
    ts["w2"] = ScriptedTransport("w2")  # answers nothing the script expects
    r = asyncio.run(collect(cluster, StateDir("hk11c", root=tmp_path), transports=dict(ts)))
    assert "w2" in r.unreachable
    assert not r.healthy


def test_keepalived_dump_takes_the_instance_state_not_the_interface_state() -> None:
    lines = captured("cp1").split("@@hakube:vrrp\n", 1)[1].split("\n\n@@", 1)[0].splitlines()
    (inst,) = parse_keepalived_data(lines)
    assert (inst.name, inst.state, inst.priority, inst.base_priority) == (
        "VI_51", "MASTER", 200, 200
    )  # fmt: skip


def test_ops_script_asks_only_for_what_the_host_runs() -> None:
    worker = ops_script(OpsQuery(certs=False))
    assert "/v3/maintenance/status" not in worker
    assert "keepalived" not in worker
    assert parse_ops(captured("w1")).etcd is None


def test_only_lb_hosts_ask_systemd_and_only_about_the_units_status_judges(
    cluster: Cluster, tmp_path: Path
) -> None:
    ts = {h: ScriptedTransport(h, [(SCRIPT, Reply(captured(h)))]) for h in HOSTS}
    state = StateDir(cluster.name, root=tmp_path)
    assert asyncio.run(collect(cluster, state, transports=dict(ts), now=CAPTURED_AT)).healthy
    (cp1,) = ts["cp1"].commands
    assert "haproxy.service keepalived.service 2>" in cp1
    assert "docker.service" not in cp1
    for worker in ("w1", "w2"):
        (script,) = ts[worker].commands
        assert "systemctl" not in script


def test_every_certificate_and_kubeconfig_client_certificate_is_read_whatever_their_count(
    tmp_path: Path,
) -> None:
    import base64
    import subprocess

    from hakube.facts.ops import certs_script, parse_certs
    from hakube.pki.certs import cert_to_pem, generate_ca

    pki, sub = tmp_path / "pki", tmp_path / "pki" / "etcd"
    sub.mkdir(parents=True)
    certs = {pki / "ca.crt": "ca", sub / "peer.crt": "peer", pki / "with space.crt": "space"}
    for path, cn in certs.items():
        path.write_bytes(cert_to_pem(generate_ca(cn).cert))
    (pki / "empty.crt").touch()
    (pki / "ca.key").write_text("never read\n")
    admin = tmp_path / "admin.conf"
    data = base64.b64encode(cert_to_pem(generate_ca("kubernetes-admin").cert)).decode()
    admin.write_text(f"users:\n- user:\n    client-certificate-data: {data}\n")
    script = certs_script([str(pki)], [str(tmp_path / "absent.conf"), str(admin)])
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert "never read" not in res.stdout
    found = {
        c.path: (c.subject, c.not_after is not None) for c in parse_certs(res.stdout.splitlines())
    }
    assert found == {
        str(admin): ("CN=kubernetes-admin", True),
        str(pki / "ca.crt"): ("CN=ca", True),
        str(pki / "empty.crt"): ("", False),  # reported unreadable, not missed
        str(sub / "peer.crt"): ("CN=peer", True),
        str(pki / "with space.crt"): ("CN=space", True),
    }
    assert list(found) == sorted(found)


def test_status_cli_bad_input_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hakube.cli import app

    res = CliRunner().invoke(app, ["status", "-f", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2, res.output
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(CLUSTER))
    res = CliRunner().invoke(app, ["status", "-f", str(f), "--watch", "-1"])
    assert res.exit_code == 2, res.output
    assert "--watch" in res.stderr


# Shaped like `kubectl get nodes -o json` (only the fields status reads): Kubernetes does not
# run in the lab, so there is no captured one.
NODES = (
    '{"items": ['
    + ",".join(
        f'{{"metadata": {{"name": "{n}"}}, "status": {{"conditions": '
        f'[{{"type": "Ready", "status": "{"False" if n == "w2" else "True"}"}}]}}}}'
        for n in HOSTS
    )
    + "]}"
)


@pytest.mark.skipif(not TRANSCRIPTS.is_dir(), reason="kubeadm transcripts not available")
def test_with_kubernetes_tokens_show_ids_and_a_node_not_ready_is_a_problem(
    cluster: Cluster, tmp_path: Path
) -> None:
    state = StateDir(cluster.name, root=tmp_path)
    write_private(state.path / "admin.conf", b"apiVersion: v1\n")  # kubeadm init ran
    tokens = (TRANSCRIPTS / "1.27-token-list-1.txt").read_text()
    out = healthy_outputs()
    out["cp1"] = out["cp1"].replace(
        "\n@@hakube:ops-end",
        f"\n@@hakube:tokens\n{tokens}\n@@hakube:nodes\n{NODES}\n@@hakube:ops-end",
    )
    ts = {h: ScriptedTransport(h, [(SCRIPT, Reply(out[h]))]) for h in HOSTS}
    r = asyncio.run(collect(cluster, state, transports=dict(ts), now=CAPTURED_AT))
    script = ts["cp1"].commands[0]
    assert "kubeadm token list" in script
    assert "get nodes -o json" in script
    assert "kubeadm token list" not in ts["cp2"].commands[0]
    assert r.tokens is not None
    assert [t.id for t in r.tokens] == ["4iwa6j"]
    assert "ejrsfqm26jpcshz2" not in repr(r.as_dict())
    assert r.nodes is not None
    assert r.nodes["w2"] == "NotReady"
    assert "nodes not Ready: w2" in r.problems


def test_drift_names_the_file_that_differs_from_what_apply_would_write(
    cluster: Cluster, tmp_path: Path
) -> None:
    state = StateDir(cluster.name, root=tmp_path)
    secrets = state.secrets()
    out = healthy_outputs()
    for h in cluster.hosts:
        lines = [
            f"{sha256(f.content)} {f.mode:o} {owner_of(f)} {f.path}"
            for f in expected_files(cluster, secrets, h)
        ]
        if h.name == "cp2":  # a hand edit, and a file someone deleted
            lines = [ln.replace(ln[:64], "0" * 64) if "haproxy.cfg" in ln else ln for ln in lines]
            lines = [ln for ln in lines if "check_apiserver.sh" not in ln]
        files = "\n".join(lines)
        out[h.name] = section(out[h.name], "files", files)
    ts = {h: ScriptedTransport(h, [(SCRIPT, Reply(out[h]))]) for h in HOSTS}
    r = asyncio.run(collect(cluster, state, transports=dict(ts), now=CAPTURED_AT))
    assert [(d.host, d.path, d.reason) for d in r.drift] == [
        ("cp2", "/etc/haproxy/haproxy.cfg", "differs"),
        ("cp2", "/etc/keepalived/check_apiserver.sh", "is missing"),
    ]
    assert r.healthy  # drift is a warning: the cluster still serves
    assert any("haproxy.cfg differs" in w for w in r.warnings)


def test_a_member_that_joined_a_live_cluster_is_no_drift(cluster: Cluster, tmp_path: Path) -> None:
    """A member added to a running etcd keeps `existing` and the list it joined with, and apply
    keeps them (etcd_join.keep_bootstrap): status reads the file and judges it the same way."""
    state = StateDir(cluster.name, root=tmp_path)
    secrets = state.secrets()
    out = healthy_outputs()
    joined = {"ETCD_INITIAL_CLUSTER_STATE": "existing", "ETCD_INITIAL_CLUSTER": "cp1=x,cp3=y"}
    for h in cluster.hosts:
        files = expected_files(cluster, secrets, h)
        if h.name == "cp3":
            files = bootstrapped(files, joined)
            (env,) = [f.content for f in files if f.path == ETCD_ENV_FILE]
            out[h.name] = out[h.name].replace(
                "\n@@hakube:certs", f"\n@@hakube:etcd-env\n{env}\n@@hakube:certs", 1
            )
        lines = [f"{sha256(f.content)} {f.mode:o} {owner_of(f)} {f.path}" for f in files]
        out[h.name] = section(out[h.name], "files", "\n".join(lines))
    assert run(cluster, tmp_path, out).drift == []
    # Read without its file, the same member is drift (apply would then write `new`).
    out["cp3"] = re.sub(r"\n@@hakube:etcd-env\n.*?(?=\n@@hakube:certs)", "", out["cp3"], flags=re.S)
    drift = run(cluster, tmp_path, out).drift
    assert [(d.host, d.path, d.reason) for d in drift] == [("cp3", ETCD_ENV_FILE, "differs")]


def test_the_status_script_runs_for_real_and_keeps_the_facts_end_marker(tmp_path: Path) -> None:
    import subprocess

    from hakube.facts.host import facts_script, parse_facts
    from hakube.workflows.status import STATUS_FACTS

    probe = tmp_path / "with space.conf"
    probe.write_text("x\n")
    probe.chmod(0o640)
    script = ops_script(OpsQuery(certs=True), facts_script([str(probe)], STATUS_FACTS))
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    facts = parse_facts(res.stdout)  # raises without the end marker
    assert facts.files[str(probe)].mode == 0o640
    assert parse_ops(res.stdout).vrrp == []


class _Pool:
    """What `connect_all` returns, for hosts answered by their captured status output."""

    def __init__(self, names: list[str], down: dict[str, str]) -> None:
        self.transports = {
            n: ScriptedTransport(n, [(SCRIPT, Reply(captured(n)))]) for n in names if n not in down
        }
        self.errors = {n: ConnectError(n, why) for n, why in down.items() if n in names}

    async def close(self) -> None:
        for t in self.transports.values():
            await t.close()


def test_watch_keeps_one_session_and_connects_again_only_to_a_host_that_failed(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hakube.workflows import ops
    from hakube.workflows.status import watch

    state = StateDir(cluster.name, root=tmp_path)
    secret = state.secrets().vrrp_password
    connects: list[list[str]] = []

    async def connect_all(targets: Any, **_kw: Any) -> _Pool:
        names = [t.name for t in targets]
        connects.append(names)
        # w2 refuses the first time, with a secret in the message (a misconfigured banner).
        return _Pool(names, {"w2": f"refused ({secret})"} if len(connects) == 1 else {})

    monkeypatch.setattr(ops, "connect_all", connect_all)
    reports: list[StatusReport] = []
    asyncio.run(watch(cluster, state, 0.0, reports.append, rounds=3))
    # Every host once, then only w2 again; the third round needs no connection at all.
    assert connects == [list(HOSTS), ["w2"]]
    assert list(reports[0].unreachable) == ["w2"]
    assert secret not in repr(reports[0].as_dict())
    assert "w2: refused (" in reports[0].unreachable["w2"]
    assert reports[1].unreachable == {}
    assert reports[2].unreachable == {}


def test_the_gateway_gives_the_facts_etcdctl_gave() -> None:
    """etcdctl's three answers and status's one curl, captured back to back on one lab member
    (tests/data/ops/etcd-cp1-etcdctl-and-gateway.txt): every fact status shows is the same,
    but the raft index, which only moves on."""
    text = (DATA / "etcd-cp1-etcdctl-and-gateway.txt").read_text()
    sec = _sections(text)
    via_ctl = parse_etcd(EtcdAnswers(sec))
    via_gateway = parse_etcd(split_etcd(sec["etcd"]))
    assert via_ctl.healthy
    assert via_ctl.member_id
    assert via_ctl.leader_id
    same = ("endpoint", "member_id", "leader_id", "revision", "raft_term", "db_size", "learner",
            "version", "errors", "healthy", "error")  # fmt: skip
    assert {k: getattr(via_gateway, k) for k in same} == {k: getattr(via_ctl, k) for k in same}
    assert via_ctl.raft_index <= via_gateway.raft_index
    members = json.loads("\n".join(sec["etcd-members"]))["members"]
    assert {etcd_id(m["ID"]): m["name"] for m in members} == {
        etcd_id(m["ID"]): m["name"] for m in parse_ops(text).etcd_members
    }


def test_a_host_without_curl_is_told_so_not_no_answer(tmp_path: Path) -> None:
    import subprocess

    bin_dir = tmp_path / "bin"  # only what the script needs besides curl
    bin_dir.mkdir()
    for tool in ("mktemp", "cat", "rm"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    script = ops_script(OpsQuery(certs=False, etcd=EtcdClient("https://127.0.0.1:2379", "/x")))
    res = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, env={"PATH": str(bin_dir)},
        check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    etcd = parse_ops(res.stdout).etcd
    assert etcd is not None
    assert (etcd.healthy, etcd.error) == (False, NO_CURL)
