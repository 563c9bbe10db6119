"""What every renderer returns, and the one Jinja2 environment they share."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import jinja2


@dataclass(frozen=True)
class RenderedFile:
    """One file for one host. Renderers are pure: this is all they produce.

    `validate` is a shell command run on the host against the new file (``{path}`` is replaced
    by the candidate's path) before it replaces the live one; `reload` names the systemd unit
    to reload or restart when the content changed.
    """

    path: str
    content: str
    mode: int = 0o644
    secret: bool = False
    validate: str | None = None
    reload: str | None = None
    owner: str = "root"

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"rendered path must be absolute: {self.path}")
        if self.secret and self.mode & 0o077:
            raise ValueError(f"secret file {self.path} must not be readable by others")


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hakube.render", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
    )


def render_template(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
