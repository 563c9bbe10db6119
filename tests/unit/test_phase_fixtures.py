"""Phases as data (pyinfra's way): facts in, changes and commands out.

Each YAML file under tests/data/phases describes one case: a cluster file, the host, what the
host looks like (its facts), what the read-only commands print, and what the phase must do:
the changes it reports, the files it writes and the commands it runs, in order. The host is a
`ScriptedTransport` (a FAKE): read-only commands get the replies the case gives, every other
command succeeds, and everything is recorded.

`current` lists files the host already has exactly as hakube renders them (`etcd-pki` stands
for the etcd member's certificates from the state dir, which are generated per test).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import ROOT, SECRETS

from hakube.facts.host import FileState, HostFacts, OSRelease, Unit
from hakube.phases.base import Phase, RenderInput
from hakube.phases.context import Context, RunData, owner_of, sha256
from hakube.pki.etcd import etcd_members
from hakube.spec.load import load_cluster_file
from hakube.state import StateDir
from hakube.transport.base import Transport
from hakube.transport.scripted import Reply, ScriptedTransport
from hakube.workflows.apply import apply_phases

CASES = sorted((ROOT / "tests" / "data" / "phases").glob("*.yaml"))


def host_facts(doc: dict[str, Any]) -> HostFacts:
    """HostFacts from the case's `facts` mapping (lists and mappings in YAML's shapes)."""
    data = dict(doc)
    units = {
        name: Unit(name, True, state[0], state[1]) for name, state in data.pop("units", {}).items()
    }
    files = {
        p: FileState(v["sha256"], v["mode"], v.get("owner", "root:root"))
        for p, v in data.pop("files", {}).items()
    }
    for key in ("modules", "listening", "held"):
        if key in data:
            data[key] = set(data[key])
    # The fixtures write /etc/os-release's fields flat, as os_id, os_like, os_codename, ...
    osr = {k.removeprefix("os_"): data.pop(k) for k in list(data) if k.startswith("os_")}
    if "like" in osr:
        osr["like"] = tuple(osr["like"])
    return HostFacts(os=OSRelease(**osr), units=units, files=files, **data)


def transport(host: str, replies: list[dict[str, Any]]) -> ScriptedTransport:
    t = ScriptedTransport(host)
    for r in replies:
        t.on(
            re.compile(r["match"], re.S),
            Reply(stdout=r.get("stdout", ""), exit_status=r.get("exit", 0)),
        )
    # Everything else is a mutation (or a read the case did not need to answer): it succeeds.
    t.on(re.compile(".*", re.S), Reply())
    return t


def phase_named(name: str) -> Phase:
    return next(p for p in apply_phases() if p.name == name)


def run_case(doc: dict[str, Any], tmp_path: Path) -> tuple[Context, ScriptedTransport, Phase]:
    cluster = load_cluster_file(ROOT / doc["spec"]).cluster
    host = cluster.host(doc["host"])
    state = StateDir(cluster.name, root=tmp_path)
    t = transport(host.name, doc.get("replies", []))
    transports: dict[str, Transport] = {host.name: t}
    ctx = Context.create(RunData(cluster, SECRETS, state, frozenset({doc["phase"]})), transports)
    facts = host_facts(doc.get("facts", {}))
    phase = phase_named(doc["phase"])
    current = set(doc.get("current", []))
    rendered = phase.files(RenderInput(cluster, host, SECRETS, facts))
    if "etcd-pki" in current:
        pki = state.etcd_pki(etcd_members(cluster))
        certs = pki.etcd_host_files(host.name)
        current |= {f.path for f in certs}
        rendered += certs
    unknown = current - {"etcd-pki"} - {f.path for f in rendered}
    assert not unknown, f"not files of {phase.name}: {sorted(unknown)}"
    for rf in rendered:
        if rf.path in current:
            facts.files[rf.path] = FileState(sha256(rf.content), rf.mode, owner_of(rf))
    ctx.facts.set(host, facts)
    ctx.report.phase = phase.name
    asyncio.run(phase.run(ctx, host))
    return ctx, t, phase


def outcome(ctx: Context, t: ScriptedTransport, since: int = 0) -> dict[str, list[str]]:
    calls = t.calls[since:]
    return {
        "changes": [c.description for c in ctx.do.changes],
        "writes": [c.target for c in calls if c.kind == "put"],
        "runs": [c.target for c in calls if c.kind == "run"],
    }


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_phase_does_what_its_fixture_says(case: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(case.read_text())
    unknown = set(doc) - {"phase", "spec", "host", "facts", "current", "replies", "expect"}
    assert not unknown, f"{case.name}: unknown keys {sorted(unknown)}"
    ctx, t, _ = run_case(doc, tmp_path)
    want = doc["expect"]
    got = outcome(ctx, t)
    assert set(want) <= set(got), f"{case.name}: expect has unknown keys"
    for key in want:
        assert got[key] == want[key], f"{case.name}: {key}"


def test_there_are_fixtures_for_the_host_lb_and_etcd_phases() -> None:
    phases = {yaml.safe_load(c.read_text())["phase"] for c in CASES}
    assert {"prepare", "packages", "lb/haproxy", "lb/keepalived", "etcd"} <= phases
