"""YAML cluster file → validated `Cluster`, or every problem at once."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hakube.spec.checks import Problem, Severity, check_cluster
from hakube.spec.model import API_VERSION, Cluster


class SpecError(Exception):
    """The file is not a valid cluster; `problems` lists every error and warning found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        errors = [p for p in problems if p.severity is Severity.ERROR]
        super().__init__(
            f"{source}: {len(errors)} problem(s)\n" + "\n".join(str(p) for p in problems)
        )


@dataclass
class Loaded:
    cluster: Cluster
    warnings: list[Problem] = field(default_factory=list)
    source: str = "<string>"


def load_cluster_file(path: str | Path) -> Loaded:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(str(p), [Problem("", f"cannot read the file: {e.strerror}")]) from e
    return load_cluster_text(text, source=str(p))


def load_cluster_text(text: str, *, source: str = "<string>") -> Loaded:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(
            source,
            [
                Problem(
                    "", f"not valid YAML: {getattr(e, 'problem', e)}", "fix the syntax", line=line
                )
            ],
        ) from e
    lines = _line_map(node)
    if not isinstance(data, dict):
        raise SpecError(
            source,
            [
                Problem(
                    "",
                    "the file must be a mapping with apiVersion, kind, name and hosts",
                    f"start from examples/tutorial.yaml (apiVersion: {API_VERSION}, kind: Cluster)",
                )
            ],
        )
    return load_cluster_data(data, source=source, lines=lines)


def load_cluster_data(
    data: Mapping[str, Any], *, source: str = "<data>", lines: dict[str, int] | None = None
) -> Loaded:
    lines = lines or {}
    context: dict[str, Any] = {"warnings": []}
    try:
        cluster = Cluster.model_validate(dict(data), context=context)
    except ValidationError as e:
        problems = [_from_pydantic(err, lines) for err in e.errors()]
        problems += _warnings(context, lines)
        raise SpecError(source, problems) from None
    found = [_with_line(p, lines) for p in check_cluster(cluster)] + _warnings(context, lines)
    if any(p.severity is Severity.ERROR for p in found):
        raise SpecError(source, found)
    return Loaded(cluster, found, source)


def dump_cluster(cluster: Cluster) -> dict[str, Any]:
    """The cluster as plain data, defaults included, in the file's own key names."""
    out: dict[str, Any] = json.loads(cluster.model_dump_json(by_alias=True))
    return out


def _warnings(context: dict[str, Any], lines: dict[str, int]) -> list[Problem]:
    return [
        _with_line(Problem(path, msg, severity=Severity.WARNING), lines)
        for path, msg in context["warnings"]
    ]


def _with_line(p: Problem, lines: dict[str, int]) -> Problem:
    if p.line is not None:
        return p
    path = p.path
    while path:
        if path in lines:
            return Problem(p.path, p.message, p.hint, p.severity, lines[path])
        path = path.rpartition(".")[0] if "." in path else ""
    return p


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Walk the model classes along a location, to suggest the keys that exist there."""
    model: Any = Cluster
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        f = None
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                f = info
        if f is None:
            return None
        model = _inner_model(f.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _from_pydantic(err: Any, lines: dict[str, int]) -> Problem:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    path = _path(loc)
    kind = err["type"]
    msg = str(err["msg"])
    hint = ""
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = _model_at(loc[:-1])
        known = _known_keys(parent) if parent else []
        close = difflib.get_close_matches(key, known, n=1)
        msg = f"unknown key {key!r}"
        hint = (f"did you mean {close[0]!r}? " if close else "") + (
            f"keys allowed here: {', '.join(known)}" if known else "remove it"
        )
    elif kind == "missing":
        msg = "is required"
        hint = "add it (see examples/tutorial.yaml)"
    elif kind.startswith("literal_error") or kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        msg = f"{err.get('input')!r} is not allowed"
        hint = f"use {expected}"
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    else:
        msg = f"{msg} (got {err.get('input')!r})"
    return _with_line(Problem(path, msg, hint), lines)


def _line_map(node: yaml.Node | None) -> dict[str, int]:
    """Dotted path (as `_path` writes it) → 1-based line of that key or item."""
    out: dict[str, int] = {}

    def walk(n: yaml.Node, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode):
                    p = f"{prefix}.{k.value}" if prefix else str(k.value)
                    out[p] = k.start_mark.line + 1
                    walk(v, p)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                p = f"{prefix}[{i}]"
                out[p] = item.start_mark.line + 1
                walk(item, p)

    if node is not None:
        walk(node, "")
    return out
