"""The cluster file `hakube lab up` writes must load with the real spec loader."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from hakube.spec.load import load_cluster_file
from hakube_lab.addressing import plan_lab
from hakube_lab.clusterfile import cluster_document, render_cluster_file
from hakube_lab.image import parse_sources, recipe_hash
from hakube_lab.mirror import parse_print_uris
from hakube_lab.statefile import read_plan, shape_data


def test_cluster_file_loads_and_matches_the_plan(tmp_path: Path) -> None:
    plan = plan_lab("demo", 3, 2, "10.123.0.0/24")
    state = Path("/var/lib/hakube/lab/demo")
    path = tmp_path / "cluster.yaml"
    path.write_text(render_cluster_file(plan, state))
    cluster = load_cluster_file(path).cluster
    assert [h.name for h in cluster.control_planes] == ["cp1", "cp2", "cp3"]
    assert [str(h.address) for h in cluster.workers] == ["10.123.0.21", "10.123.0.22"]
    assert str(cluster.endpoint.vip) == "10.123.0.100"
    assert cluster.endpoint.interface == "host0"
    assert cluster.endpoint.port == 8443
    assert cluster.ssh.key_file == state / "id_ed25519"
    assert cluster.ssh.known_hosts == state / "known_hosts"
    assert cluster.packages.repository == "http://10.123.0.1:8080/ ./"


def test_cluster_document_round_trips_through_yaml() -> None:
    plan = plan_lab("x", 1, 0, "10.9.0.0/24")
    doc = cluster_document(plan, Path("/s"))
    assert yaml.safe_load(render_cluster_file(plan, Path("/s"))) == doc
    assert doc["hosts"] == [{"name": "cp1", "address": "10.9.0.11", "roles": ["control-plane"]}]


def test_sources_are_read_from_both_formats() -> None:
    texts = {
        "/etc/apt/sources.list.d/debian.sources": (
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
            "Components: main\n\nTypes: deb-src\nURIs: http://x/\nSuites: bookworm\n"
        ),
        "/etc/apt/sources.list": "deb [arch=amd64] http://mirror.local/debian/ bookworm main\n",
    }
    got = {(s.uri, s.suite) for s in parse_sources(texts)}
    assert got == {
        ("http://deb.debian.org/debian", "bookworm"),
        ("http://deb.debian.org/debian", "bookworm-updates"),
        ("http://mirror.local/debian", "bookworm"),
    }


def test_print_uris_are_parsed_with_epochs() -> None:
    out = (
        "'http://deb.debian.org/debian/pool/main/k/keepalived/keepalived_1%3a2.2.7-1%2bb2_amd64.deb'"
        " keepalived_1%3a2.2.7-1+b2_amd64.deb 512000 SHA256:ab\n"
        "'http://deb.debian.org/debian/pool/main/s/socat/socat_1.7.4.4-2_amd64.deb'"
        " socat_1.7.4.4-2_amd64.deb 1 SHA256:cd\n"
    )
    assert parse_print_uris(out) == [("keepalived", "1:2.2.7-1+b2"), ("socat", "1.7.4.4-2")]


def test_recipe_hash_is_stable() -> None:
    assert recipe_hash() == recipe_hash()
    assert len(recipe_hash()) == 16


def test_spare_hosts_run_in_the_lab_but_stay_out_of_its_cluster_file(tmp_path: Path) -> None:
    plan = plan_lab("t", 3, 1, "10.123.225.0/24", spares=2)
    spares = [(h.name, str(h.address)) for h in plan.hosts if h.role == "spare"]
    assert spares == [("s1", "10.123.225.111"), ("s2", "10.123.225.112")]
    names = [h["name"] for h in cluster_document(plan, tmp_path)["hosts"]]
    assert names == ["cp1", "cp2", "cp3", "w1"]


def test_the_lab_shape_counts_spares_apart_and_old_state_files_have_none(tmp_path: Path) -> None:
    plan = plan_lab("t", 3, 1, "10.123.225.0/24", spares=2)
    data = shape_data(plan)
    assert (data["control_planes"], data["workers"], data["spares"]) == (3, 1, 2)
    (tmp_path / "t").mkdir()
    old = {k: v for k, v in data.items() if k != "spares"}
    (tmp_path / "t" / "state.json").write_text(json.dumps(old))
    assert [h.name for h in read_plan("t", tmp_path).hosts] == ["cp1", "cp2", "cp3", "w1"]
