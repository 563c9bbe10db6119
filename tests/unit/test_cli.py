"""The CLI is a thin shell: exit codes, JSON output, and nothing written on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hakube.cli import app
from hakube.state import StateDir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAKUBE_STATE_DIR", str(tmp_path / "state"))


def two_masters(tmp_path: Path) -> Path:
    doc = yaml.safe_load((EXAMPLES / "tutorial.yaml").read_text())
    doc["hosts"] = doc["hosts"][:2]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_validate_accepts_the_examples_and_shows_the_host_bits_warning() -> None:
    res = runner.invoke(app, ["validate", "-f", str(EXAMPLES / "tutorial.yaml")])
    assert res.exit_code == 0, res.output
    assert "valid" in res.stdout
    assert "host bits" in res.stderr


def test_two_masters_exit_2_with_split_brain_explanation(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", "-f", str(two_masters(tmp_path))])
    assert res.exit_code == 2
    assert "split-brain" in res.stderr
    assert "Nothing was changed" in res.stderr


def test_validate_json_lists_problems_with_path_and_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", "-f", str(two_masters(tmp_path)), "--output", "json"])
    assert res.exit_code == 2
    data = json.loads(res.stdout)
    assert data["valid"] is False
    (p,) = [p for p in data["problems"] if p["severity"] == "error"]
    assert p["path"] == "hosts"
    assert p["line"] is not None
    assert "odd number" in p["hint"]


def test_bad_input_writes_no_state(tmp_path: Path) -> None:
    runner.invoke(app, ["render", "-f", str(two_masters(tmp_path)), "-d", str(tmp_path / "o")])
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "o").exists()


def test_plan_json_lists_phases_and_files_per_host() -> None:
    res = runner.invoke(app, ["plan", "-f", str(EXAMPLES / "tutorial.yaml"), "--output", "json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["endpoint"] == "vip:16443"
    first = plan["hosts"][0]
    phases = [p["name"] for p in first["phases"]]
    assert phases[:3] == ["preflight", "prepare", "packages"]
    assert "kubeadm/init" in phases
    files = {f["path"]: f for p in first["phases"] for f in p["files"]}
    assert files["/etc/keepalived/keepalived.conf"]["mode"] == "0600"
    assert files["/etc/hakube/kubeadm/init.yaml"]["secret"] is True
    assert not (Path.cwd() / "render-out").exists()


def test_plan_lists_every_secret_file_that_leaves_the_workstation_per_host() -> None:
    # local-lb: external etcd on the three control-plane nodes, three workers.
    res = runner.invoke(app, ["plan", "-f", str(EXAMPLES / "local-lb.yaml"), "-o", "json"])
    assert res.exit_code == 0, res.output
    sent = {h["host"]: set(h["secrets_sent"]) for h in json.loads(res.stdout)["hosts"]}
    pki = "/etc/kubernetes/pki/"
    cp_keys = {f"{pki}ca.key", f"{pki}front-proxy-ca.key", f"{pki}sa.key"}
    etcd_keys = {f"/etc/etcd/pki/{s}.key" for s in ("server", "peer", "healthcheck-client")}
    for host in ("cp1", "cp2", "cp3"):
        assert cp_keys | etcd_keys | {f"{pki}apiserver-etcd-client.key"} <= sent[host], host
    for host in ("worker1", "worker2", "worker3"):
        assert not sent[host] & (cp_keys | etcd_keys), host
        assert "/etc/hakube/kubeadm/join.yaml" in sent[host]  # carries the bootstrap token
    # kubeadm writes the kubeconfigs on the host: they never leave this machine.
    assert not any(
        f.startswith("/etc/kubernetes/") and f.endswith(".conf")
        for f in set().union(*sent.values())
    )
    text = runner.invoke(app, ["plan", "-f", str(EXAMPLES / "local-lb.yaml")]).stdout
    assert "secret files sent to cp1:" in text


def test_plan_text_shows_every_host() -> None:
    res = runner.invoke(app, ["plan", "-f", str(EXAMPLES / "local-lb.yaml")])
    assert res.exit_code == 0, res.output
    for name in ("cp1", "cp2", "cp3", "worker1", "worker2", "worker3"):
        assert name in res.stdout


def tree(root: Path) -> dict[str, tuple[bytes, float]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_render_with_the_clusters_secrets_writes_every_file_0600_and_changes_no_state(
    tmp_path: Path,
) -> None:
    state = StateDir("tutorial")
    secrets = state.secrets()
    ca_hash = state.cluster_pki().ca_cert_hash
    before = tree(state.path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["render", "-f", str(EXAMPLES / "tutorial.yaml"), "-d", str(out)])
    assert res.exit_code == 0, res.output
    assert "withheld" not in res.stdout
    conf = out / "server7-master/etc/keepalived/keepalived.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    join = (out / "server8-node1/etc/hakube/kubeadm/join.yaml").read_text()
    assert ca_hash in join
    assert "<filled-in-at-join>" not in join
    init = out / "server7-master/etc/hakube/kubeadm/init.yaml"
    assert init.stat().st_mode & 0o777 == 0o600
    assert secrets.bootstrap_token in init.read_text()
    assert tree(state.path) == before


def test_render_before_the_first_apply_creates_no_state_and_withholds_the_secret_files(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["render", "-f", str(EXAMPLES / "tutorial.yaml"), "-d", str(out)])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "state").exists()
    said = " ".join(res.stdout.split())
    assert "the first `hakube apply` generates them; render never does" in said
    for withheld in (
        "server7-master:/etc/hakube/kubeadm/init.yaml",
        "server8-node1:/etc/hakube/kubeadm/join.yaml",
        "server9-node2:/etc/hakube/kubeadm/join.yaml",
    ):
        assert f"  {withheld}" in res.stdout
        host, path = withheld.split(":")
        assert not (out / host / path.lstrip("/")).exists()
    # What is written is what apply writes, whatever the secrets turn out to be.
    written = tree(out)
    assert "server7-master/etc/haproxy/haproxy.cfg" in written
    assert "server7-master/etc/keepalived/keepalived.conf" in written  # VRRPv3: no password
    later = tmp_path / "later"
    StateDir("tutorial").secrets()
    StateDir("tutorial").cluster_pki()
    again = runner.invoke(app, ["render", "-f", str(EXAMPLES / "tutorial.yaml"), "-d", str(later)])
    assert again.exit_code == 0, again.output
    full = tree(later)
    assert {k: v[0] for k, v in written.items()} == {k: full[k][0] for k in written}
    assert len(full) == len(written) + res.stdout.count("\n  ")


def test_schema_is_json_schema_of_the_cluster() -> None:
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0
    schema = json.loads(res.stdout)
    assert schema["title"] == "Cluster"
    assert "apiVersion" in schema["properties"]
    assert "endpoint" in schema["properties"]


def test_apply_refuses_unknown_phase_selector() -> None:
    res = runner.invoke(
        app, ["apply", "-f", str(EXAMPLES / "tutorial.yaml"), "--skip-phases", "kubeam"]
    )
    assert res.exit_code == 2
    assert "unknown phase 'kubeam'" in res.stderr


def test_apply_refuses_a_missing_ssh_key_before_creating_anything(tmp_path: Path) -> None:
    doc = yaml.safe_load((EXAMPLES / "tutorial.yaml").read_text())
    doc["ssh"]["key_file"] = str(tmp_path / "no-such-key")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    valid = runner.invoke(app, ["validate", "-f", str(path)])
    assert valid.exit_code == 0, valid.output
    assert "no-such-key does not exist" in "".join(valid.stderr.split("\n"))
    res = runner.invoke(app, ["apply", "-f", str(path)])
    assert res.exit_code == 2, res.output
    said = " ".join(res.stderr.split())
    assert "ssh.key_file" in said
    assert "nothing was changed" in said
    assert not (tmp_path / "state").exists()


def test_render_into_an_unwritable_path_fails_cleanly_before_creating_state(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    res = runner.invoke(
        app, ["render", "-f", str(EXAMPLES / "tutorial.yaml"), "-d", str(blocker / "out")]
    )
    assert res.exit_code == 2, res.output
    assert "cannot write into" in " ".join(res.stderr.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "state").exists()


def test_render_json_reports_the_files_written(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["render", "-f", str(EXAMPLES / "local-lb.yaml"), "-d", str(tmp_path / "o"), "-o", "json"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["files"] == sum(1 for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert "cp1:/etc/hakube/kubeadm/init.yaml" in data["withheld"]


@pytest.mark.parametrize("command", ["validate", "plan", "render", "apply"])
@pytest.mark.parametrize("kind", ["missing", "binary", "directory", "utf16"])
def test_output_json_is_one_document_for_unreadable_files(
    tmp_path: Path, command: str, kind: str
) -> None:
    path = tmp_path / "c.yaml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)))
    elif kind == "directory":
        path.mkdir()
    elif kind == "utf16":
        path.write_bytes((EXAMPLES / "tutorial.yaml").read_text().encode("utf-16"))
    res = runner.invoke(app, [command, "-f", str(path), "-o", "json"])
    assert res.exit_code == 2, res.output
    data = json.loads(res.stdout)  # exactly one JSON document
    assert data["valid"] is False
    (p,) = data["problems"]
    assert p["path"] == "(file)"
    assert p["hint"]
    assert not (tmp_path / "state").exists()


def test_apply_refusal_is_one_json_document_with_output_json() -> None:
    res = runner.invoke(
        app, ["apply", "-f", str(EXAMPLES / "tutorial.yaml"), "--only", "kubeam", "-o", "json"]
    )
    assert res.exit_code == 2
    data = json.loads(res.stdout)
    assert data["ok"] is False
    assert "unknown phase 'kubeam'" in data["error"]
