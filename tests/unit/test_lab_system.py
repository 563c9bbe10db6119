"""Errors that tell the user what to do: not root, missing Debian packages."""

from __future__ import annotations

import os
import shutil

import pytest

from hakube_lab import system
from hakube_lab.addressing import LabError


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        system.require_root()


def test_missing_tools_name_their_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = {"systemd-nspawn", "debootstrap"}
    monkeypatch.setattr(shutil, "which", lambda t: None if t in absent else f"/usr/bin/{t}")
    with pytest.raises(LabError) as err:
        system.require_tools()
    msg = str(err.value)
    assert "systemd-nspawn" in msg
    assert "apt-get install debootstrap systemd-container" in msg


def test_run_reports_the_failing_command() -> None:
    with pytest.raises(LabError, match=r"command failed \(3\): sh -c"):
        system.run(["sh", "-c", "echo boom >&2; exit 3"])
