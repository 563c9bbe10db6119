"""plan and apply agree on who writes what: every rendered file has exactly one owning phase."""

from __future__ import annotations

from pathlib import Path

import pytest

from hakube.render import render_host
from hakube.secrets import Secrets
from hakube.spec import load_cluster_file
from hakube.workflows.apply import apply_phases
from hakube.workflows.plan import build_plan

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_rendered_file_is_written_by_exactly_one_phase(path: Path) -> None:
    cluster = load_cluster_file(path).cluster
    secrets = Secrets.generate()
    plan = build_plan(cluster, secrets)
    for host, hp in zip(cluster.hosts, plan.hosts, strict=True):
        planned = [f.path for p in hp.phases for f in p.files]
        rendered = [f.path for f in render_host(cluster, host, secrets)]
        assert sorted(set(rendered) - set(planned)) == [], f"{host.name}: files nobody writes"
        dupes = {p for p in planned if planned.count(p) > 1}
        assert dupes == set(), f"{host.name}: written by two phases"


def test_plan_skips_phases_no_host_needs() -> None:
    aliyun = load_cluster_file(Path(EXAMPLES[0]).with_name("aliyun.yaml")).cluster
    plan = build_plan(aliyun)
    assert "lb/keepalived" in plan.skipped
    assert "lb/haproxy" in plan.skipped
    assert "etcd" in plan.skipped
    assert {p.name for p in apply_phases()} >= set(plan.skipped)
