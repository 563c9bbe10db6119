"""Compiled templates are kept between processes (Jinja2's bytecode cache), and a cache that
cannot be kept never fails a render."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import ROOT, SECRETS

from hakube.render.base import environment
from hakube.render.haproxy import render_haproxy
from hakube.spec.load import load_cluster_file


@pytest.fixture
def fresh_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A Jinja2 environment made anew, under the temporary directory each test sets."""
    environment.cache_clear()
    yield
    monkeypatch.undo()
    environment.cache_clear()


def haproxy_cfg() -> str:
    c = load_cluster_file(ROOT / "examples/tutorial.yaml").cluster
    return render_haproxy(c, c.hosts[0], SECRETS)[0].content


def test_the_compiled_templates_are_kept_for_the_next_process_in_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_environment: None
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = haproxy_cfg()
    cache = tmp_path / f"_jinja2-cache-{os.getuid()}"
    kept = list(cache.iterdir())
    assert kept, "nothing was cached"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in kept)
    environment.cache_clear()  # as a new process: the templates come from the cache
    assert haproxy_cfg() == first


def test_a_render_does_not_fail_where_no_cache_can_be_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_environment: None
) -> None:
    expected = haproxy_cfg()
    environment.cache_clear()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_dir))
    assert haproxy_cfg() == expected


def test_a_cache_that_cannot_be_written_costs_only_the_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_environment: None
) -> None:
    def full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Jinja2 writes its cache through a temporary file next to the cache entry.
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", full)
    assert "frontend" in haproxy_cfg()
    assert not list((tmp_path / f"_jinja2-cache-{os.getuid()}").iterdir())
