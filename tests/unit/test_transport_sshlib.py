"""asyncssh is imported without find_library's ldconfig/gcc/ld subprocesses (transport.sshlib)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hakube.transport.sshlib import find_library_in, linker_dirs

# Counts every process the import starts; asyncssh is not imported before this runs.
NO_SUBPROCESS = """
import ctypes.util, subprocess
started = []
real_init = subprocess.Popen.__init__
def record(self, *args, **kwargs):
    started.append(args[0] if args else kwargs.get("args"))
    real_init(self, *args, **kwargs)
subprocess.Popen.__init__ = record
before = ctypes.util.find_library
import hakube.transport.sshlib
import asyncssh
assert not started, started
assert ctypes.util.find_library is before, "find_library left patched"
assert hakube.transport.sshlib.asyncssh is asyncssh
"""


def test_importing_asyncssh_from_sshlib_starts_no_process_and_restores_find_library() -> None:
    done = subprocess.run([sys.executable, "-c", NO_SUBPROCESS], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_library_in_a_linker_directory_is_found_by_its_lib_name(tmp_path: Path) -> None:
    (tmp_path / "liboqs.so.7").write_bytes(b"")
    (tmp_path / "libother.so").write_bytes(b"")
    find = find_library_in([tmp_path / "missing", tmp_path])
    assert find("oqs") == str(tmp_path / "liboqs.so.7")
    assert find("liboqs") is None  # like ctypes: the name is what follows "lib"
    assert find("absent") is None


def test_linker_dirs_follow_ld_library_path_then_ld_so_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "ld.so.conf.d"
    conf.mkdir()
    (conf / "a.conf").write_text("# a comment\n/opt/a/lib\ninclude /etc/other/*.conf\n")
    (conf / "b.conf").write_text("/opt/b/lib  # trailing comment\n")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/opt/env/lib::{tmp_path}")
    dirs = linker_dirs(conf)
    assert dirs[:4] == [Path("/opt/env/lib"), tmp_path, Path("/opt/a/lib"), Path("/opt/b/lib")]
    assert Path("/usr/lib") in dirs
    assert len(dirs) == len(set(dirs))
