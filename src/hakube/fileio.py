"""Files written whole or not at all, with their mode set before anyone can read them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


def as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp opens with O_EXCL and mode 0600, so the content is never readable by others, not
    # even for an instant; os.replace then swaps it in whole, so readers never see a torn file.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # fchmod on the descriptor sets the exact mode whatever the umask did to it.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # Make the rename itself durable: a crash must not bring back an old CA key.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_secret_file(path: Path | str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 from the moment the file exists."""
    atomic_write(Path(path), as_bytes(data), SECRET_FILE_MODE)


def write_public_file(path: Path | str, data: bytes | str) -> None:
    """Write a non-secret file (certificate, public key) atomically with mode 0644."""
    atomic_write(Path(path), as_bytes(data), PUBLIC_FILE_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Create or replace a file with mode 0600 atomically, in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret_file(path, data)


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold an flock on `path` (created 0600) for the block; raise `busy()` at once if another
    process holds it. The kernel releases it if we die."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        yield
    finally:
        os.close(fd)
