"""asyncssh, imported without its subprocess search for liboqs. Import it from here.

When it is imported, asyncssh looks for liboqs (the sntrup761 key exchange) with
`ctypes.util.find_library`, which on Linux runs `ldconfig -p` and then gcc and ld as
subprocesses when the library is not there: 0.1-0.3 s on an idle 2-core machine, on every hakube
command that connects anywhere (more than `hakube status` spends talking to five hosts). Here the
same `lib<name>.so*` files are looked for in the dynamic linker's own directories instead, so an
installed liboqs is still found and used.
"""

from __future__ import annotations

import ctypes.util
import os
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LD_SO_CONF_DIR = Path("/etc/ld.so.conf.d")


def linker_dirs(conf_dir: Path = LD_SO_CONF_DIR) -> list[Path]:
    """Where the dynamic linker looks: LD_LIBRARY_PATH, ld.so.conf.d's directories, then the
    default and multiarch directories."""
    dirs = [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    try:
        confs = sorted(conf_dir.glob("*.conf"))
    except OSError:
        confs = []
    for conf in confs:
        try:
            text = conf.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry and not entry.startswith("include"):
                dirs.append(Path(entry))
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for base in ("/lib", "/usr/lib", "/usr/local/lib"):
        dirs += [Path(base, arch), Path(base)] if arch else [Path(base)]
    dirs += [Path("/lib64"), Path("/usr/lib64")]
    return list(dict.fromkeys(dirs))


def find_library_in(dirs: list[Path]) -> Callable[[str], str | None]:
    """A `ctypes.util.find_library` that only looks for `lib<name>.so*` in `dirs`."""

    def find(name: str) -> str | None:
        for d in dirs:
            try:
                hits = sorted(d.glob(f"lib{name}.so*"))
            except OSError:
                continue
            if hits:
                return str(hits[0])
        return None

    return find


@contextmanager
def find_library_without_subprocesses() -> Iterator[None]:
    real = ctypes.util.find_library
    setattr(ctypes.util, "find_library", find_library_in(linker_dirs()))  # noqa: B010
    try:
        yield
    finally:
        setattr(ctypes.util, "find_library", real)  # noqa: B010


with find_library_without_subprocesses():
    import asyncssh

__all__ = ["asyncssh"]
