"""join-command and token list/revoke, SCRIPTED: kubeadm cannot run here, so its replies are real
kubeadm transcripts from ../shared/reference/kubeadm-transcripts (skipped when absent).

The openssl CA-hash pipeline is not faked: the scripted host answers it by running the very
command hakube sends, with the local openssl, against the cluster CA.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from fakes import TRANSCRIPTS
from typer.testing import CliRunner

from hakube.cli import app
from hakube.facts.kubeadm import parse_join_command
from hakube.phases.base import Event
from hakube.render.kubeadm import INIT_CONFIG
from hakube.spec.load import load_cluster_data
from hakube.spec.model import Cluster
from hakube.state import StateDir
from hakube.transport.scripted import Call, Reply, ScriptedTransport
from hakube.workflows.credentials import (
    CLUSTER_CA,
    openssl_ca_hash_command,
    run_join_command,
    run_list_tokens,
    run_revoke_token,
)
from hakube.workflows.ops import OpsError, OpsInputError

needs_transcripts = pytest.mark.skipif(
    not TRANSCRIPTS.is_dir(), reason="kubeadm transcripts (../shared) not available"
)

CLUSTER: dict[str, Any] = {
    "apiVersion": "hakube/v1alpha1",
    "kind": "Cluster",
    "name": "ops",
    "hosts": [
        {"name": "cp1", "address": "10.88.0.11", "roles": ["control-plane"]},
        {"name": "cp2", "address": "10.88.0.12", "roles": ["control-plane"]},
        {"name": "cp3", "address": "10.88.0.13", "roles": ["control-plane"]},
    ],
    "endpoint": {"mode": "vip", "vip": "10.88.0.10", "port": 8443},
    "etcd": {"topology": "external"},
}


def transcript(name: str) -> str:
    return (TRANSCRIPTS / name).read_text()


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster_data(CLUSTER).cluster


@pytest.fixture
def state(tmp_path: Path, cluster: Cluster) -> StateDir:
    s = StateDir(cluster.name, root=tmp_path / "state")
    s.secrets()
    s.cluster_pki()
    return s


def real_openssl(ca_pem: bytes, tmp: Path) -> Any:
    """Answer the pipeline by running it for real against a local copy of the CA."""
    local = tmp / "ca.crt"
    local.write_bytes(ca_pem)

    def answer(call: Call) -> Reply:
        cmd = call.target.replace(CLUSTER_CA, str(local))
        res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=False)
        return Reply(res.stdout, res.stderr, res.returncode)

    return answer


def cp1(state: StateDir, tmp: Path, *rules: Any) -> ScriptedTransport:
    ca = state.cluster_pki().ca.cert_pem
    t = ScriptedTransport("cp1", [(openssl_ca_hash_command(), real_openssl(ca, tmp))])
    for pattern, reply in rules:
        t.on(pattern, reply)
    return t


@needs_transcripts
def test_control_plane_join_command_has_fresh_token_checked_hash_and_key(
    cluster: Cluster, state: StateDir, tmp_path: Path
) -> None:
    t = cp1(
        state,
        tmp_path,
        ("kubeadm token create --ttl 2h", transcript("1.14-token-create-1.txt")),
        (
            f"kubeadm init phase upload-certs --upload-certs --config {INIT_CONFIG}",
            Reply(stderr=transcript("1.32-upload-certs-1.txt")),
        ),
    )
    events: list[Event] = []
    r = asyncio.run(
        run_join_command(cluster, state, control_plane=True, ttl="2h",
                         transports={"cp1": t}, emit=events.append)
    )  # fmt: skip
    key = "7531149107ebc3caf4990f94d19824aecf39d93b84ee1b9c86aee84c04e76656"
    pki_hash = state.cluster_pki().ca_cert_hash
    assert str(r.command) == (
        "kubeadm join api.ops.hakube.internal:8443 --token wo512h.oqpo4lrad31sst8v "
        f"--discovery-token-ca-cert-hash {pki_hash} --control-plane --certificate-key {key}"
    )
    assert parse_join_command(str(r.command)) == r.command
    assert r.certificate_key_hours == 2
    assert any("2 h" in n for n in r.notes)
    assert r.ca_hash_checked_on == "cp1"
    # Progress shows what was created, never the secrets themselves.
    shown = " ".join(e.message for e in events)
    assert "create a bootstrap token (ttl 2h)" in shown
    assert "wo512h.oqpo4lrad31sst8v" not in shown
    assert key not in shown


@needs_transcripts
def test_worker_join_command_needs_no_certificate_upload(
    cluster: Cluster, state: StateDir, tmp_path: Path
) -> None:
    t = cp1(state, tmp_path, ("kubeadm token create --ttl 30m", "wo512h.oqpo4lrad31sst8v\n"))
    r = asyncio.run(
        run_join_command(cluster, state, control_plane=False, ttl="30m", transports={"cp1": t})
    )
    assert r.command.certificate_key is None
    assert not r.command.control_plane
    assert not any("upload-certs" in c for c in t.commands)


def test_a_node_with_another_ca_is_refused_before_any_token_is_made(
    cluster: Cluster, state: StateDir, tmp_path: Path
) -> None:
    other = StateDir("other", root=tmp_path / "other").cluster_pki().ca.cert_pem
    t = ScriptedTransport("cp1", [(openssl_ca_hash_command(), real_openssl(other, tmp_path))])
    with pytest.raises(OpsError, match="does not carry the cluster's CA"):
        asyncio.run(
            run_join_command(cluster, state, control_plane=False, ttl="2h", transports={"cp1": t})
        )
    assert not any("kubeadm" in c for c in t.commands)


def test_failing_openssl_pipeline_is_reported(
    cluster: Cluster, state: StateDir, tmp_path: Path
) -> None:
    t = ScriptedTransport(
        "cp1", [(openssl_ca_hash_command(), Reply(stderr="Could not open file", exit_status=1))]
    )
    with pytest.raises(OpsError, match="openssl CA hash pipeline failed"):
        asyncio.run(
            run_join_command(cluster, state, control_plane=False, ttl="2h", transports={"cp1": t})
        )


@pytest.mark.parametrize("ttl", ["2 hours", "", "-1h", "2d"])
def test_bad_ttl_is_bad_input_before_any_host_is_contacted(
    cluster: Cluster, state: StateDir, ttl: str
) -> None:
    t = ScriptedTransport("cp1")
    with pytest.raises(OpsInputError, match="--ttl"):
        asyncio.run(
            run_join_command(cluster, state, control_plane=False, ttl=ttl, transports={"cp1": t})
        )
    assert t.calls == []


@needs_transcripts
@pytest.mark.parametrize(
    ("name", "ids"),
    [
        ("1.27-token-list-1.txt", ["4iwa6j"]),
        ("1.14-token-list-1.txt", None),
        ("unk-token-list-tz-custom-1.txt", None),
    ],
)
def test_token_list_shows_ids_and_never_the_secret_half(
    cluster: Cluster, state: StateDir, name: str, ids: list[str] | None
) -> None:
    text = transcript(name)
    t = ScriptedTransport("cp1", [("kubeadm token list", text)])
    tokens = asyncio.run(run_list_tokens(cluster, state, transports={"cp1": t}))
    rows = [asdict(tok.public()) for tok in tokens]
    assert rows
    if ids is not None:
        assert [r["id"] for r in rows] == ids
    secrets = re.findall(r"\b[a-z0-9]{6}\.([a-z0-9]{16})\b", text)
    assert secrets
    assert not [s for s in secrets if s in repr(rows)]


@needs_transcripts
def test_revoke_deletes_a_listed_token_by_id_or_whole_token(
    cluster: Cluster, state: StateDir
) -> None:
    t = ScriptedTransport(
        "cp1",
        [("kubeadm token list", transcript("1.27-token-list-1.txt")),
         ("kubeadm token delete 4iwa6j", "bootstrap token \"4iwa6j\" deleted\n")],
    )  # fmt: skip
    events: list[Event] = []
    got = asyncio.run(
        run_revoke_token(cluster, state, "4iwa6j.ejrsfqm26jpcshz2", transports={"cp1": t},
                         emit=events.append)
    )  # fmt: skip
    assert got.token_id == "4iwa6j"
    assert got.as_dict() == {"revoked": "4iwa6j"}
    assert t.commands[-1] == "kubeadm token delete 4iwa6j"
    assert "ejrsfqm26jpcshz2" not in " ".join(e.message for e in events)


@needs_transcripts
def test_revoking_an_unknown_token_is_bad_input_and_deletes_nothing(
    cluster: Cluster, state: StateDir
) -> None:
    t = ScriptedTransport("cp1", [("kubeadm token list", transcript("1.27-token-list-1.txt"))])
    with pytest.raises(OpsInputError, match=r"no bootstrap token with id 'zzzzzz'.*4iwa6j"):
        asyncio.run(run_revoke_token(cluster, state, "zzzzzz", transports={"cp1": t}))
    with pytest.raises(OpsInputError, match="6 characters"):
        asyncio.run(run_revoke_token(cluster, state, "NOPE!", transports={"cp1": t}))
    assert not any("delete" in c for c in t.commands)


def test_cli_join_command_with_a_bad_ttl_exits_2(tmp_path: Path, monkeypatch: Any) -> None:
    import yaml

    monkeypatch.setenv("HAKUBE_STATE_DIR", str(tmp_path / "state"))
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(CLUSTER))
    res = CliRunner().invoke(app, ["join-command", "-f", str(f), "--ttl", "forever"])
    assert res.exit_code == 2, res.output
    assert "--ttl" in res.stderr
    assert "Nothing was changed" in res.stderr
