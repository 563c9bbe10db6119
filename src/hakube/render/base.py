"""What every renderer returns, and the one Jinja2 environment they share."""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2


@dataclass(frozen=True)
class Validation:
    """How the host checks a candidate file before it replaces the live one.

    Either a program run on the candidate (`program` + the candidate's path + `args`), or
    refusal of a candidate that still holds `placeholder` (its content is not complete yet).
    """

    program: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    placeholder: str | None = None

    def __post_init__(self) -> None:
        if bool(self.program) == (self.placeholder is not None):
            raise ValueError("a validation is either a program or a placeholder refusal")

    @classmethod
    def run(cls, *program: str, then: tuple[str, ...] = ()) -> Validation:
        return cls(program=program, args=then)

    @classmethod
    def refuse(cls, placeholder: str) -> Validation:
        return cls(placeholder=placeholder)

    def command(self, candidate: str) -> str:
        """The shell command that exits 0 only for a good candidate at `candidate`."""
        if self.placeholder is not None:
            return f"! grep -qF {shlex.quote(self.placeholder)} {shlex.quote(candidate)}"
        return shlex.join([*self.program, candidate, *self.args])

    def __str__(self) -> str:
        # For messages and golden files: the command with the candidate written as {path}.
        if self.placeholder is not None:
            return f"! grep -qF '{self.placeholder}' {{path}}"
        return " ".join([*self.program, "{path}", *self.args])


@dataclass(frozen=True)
class RenderedFile:
    """One file for one host. Renderers are pure: this is all they produce.

    `validate` checks the new file on the host before it replaces the live one. What a change
    needs afterwards is data: `reload` names the systemd unit to reload or restart,
    `daemon_reload` marks a unit file or drop-in (systemd re-reads units first), and
    `package_source` a package repository (the package lists are refreshed).
    """

    path: str
    # Keys, tokens and passwords stay out of logs and assertion messages.
    content: str = field(repr=False)
    mode: int = 0o644
    secret: bool = False
    validate: Validation | None = None
    reload: str | None = None
    daemon_reload: bool = False
    package_source: bool = False
    owner: str = "root"

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"rendered path must be absolute: {self.path}")
        if self.secret and self.mode & 0o077:
            raise ValueError(f"secret file {self.path} must not be readable by others")


@cache
def environment(package: str = "hakube.render") -> jinja2.Environment:
    """The templates of `package` (its `templates/` directory), rendered strictly."""
    # Imported on first render: commands that only read hosts (status, the day-2 reads)
    # import this module for `RenderedFile` and should not pay for Jinja2 before connecting.
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
    )


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiling the templates is most of a first render (about 0.08 s of CPU for a 5-host
    status). Jinja2 keeps the compiled code, keyed by the template's source, in a directory
    of the user's own (mode 0700, checked) under the temporary directory. A cache that cannot
    be used or written only costs that time again: it never fails a render."""
    import jinja2

    class QuietCache(jinja2.FileSystemBytecodeCache):
        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            with contextlib.suppress(OSError):
                super().dump_bytecode(bucket)

    try:
        return QuietCache()
    except (OSError, RuntimeError):  # RuntimeError: no safe directory of the user's own
        return None


def render_template(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
