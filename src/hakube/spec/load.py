"""Cluster file → validated `Cluster`, or every problem at once.

Reading and YAML live in `source.py` (bounded, aliases refused, duplicate keys found); this module
turns pydantic's errors into problems with a field path, a line and a fix, and runs the cross-field
checks even when some fields are wrong, on a copy of the data with the wrong values left out.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hakube.spec.checks import FILE, Problem, Severity, check_cluster
from hakube.spec.model import API_VERSION, Cluster
from hakube.spec.source import MAX_WORDED, Parsed, SourceError, parse, read_text

#: Problems shown for one file; the rest are counted ("and N more").
MAX_SHOWN = 50


class SpecError(Exception):
    """The file is not a valid cluster; `problems` lists every error and warning found.

    `shown` is what to print (errors first, in file order, at most `MAX_SHOWN`); `more` counts the
    problems left out of it.
    """

    def __init__(self, source: str, problems: list[Problem], unworded: int = 0) -> None:
        self.source = source
        self.problems = sorted(
            problems,
            key=lambda p: (p.severity is not Severity.ERROR, p.line or math.inf),
        )
        self.shown = self.problems[:MAX_SHOWN]
        self.more = len(self.problems) - len(self.shown) + unworded
        self.error_count = unworded + sum(p.severity is Severity.ERROR for p in problems)
        tail = f"\nand {self.more} more" if self.more else ""
        super().__init__(
            f"{source}: {self.error_count} problem(s)\n"
            + "\n".join(str(p) for p in self.shown)
            + tail
        )


@dataclass
class Loaded:
    cluster: Cluster
    warnings: list[Problem] = field(default_factory=list)
    source: str = "<string>"


def load_cluster_file(path: str | Path) -> Loaded:
    try:
        text = read_text(Path(path))
    except SourceError as e:
        raise SpecError(str(path), e.problems) from None
    return load_cluster_text(text, source=str(path))


def load_cluster_text(text: str, *, source: str = "<string>") -> Loaded:
    try:
        parsed = parse(text)
    except SourceError as e:
        raise SpecError(source, e.problems) from None
    if not isinstance(parsed.data, dict):
        raise SpecError(
            source,
            [
                Problem(
                    FILE,
                    "the file must be a mapping with apiVersion, kind, name and hosts "
                    f"(it holds {_kind_of(parsed.data)})",
                    f"start from examples/tutorial.yaml (apiVersion: {API_VERSION}, kind: Cluster)",
                    line=1,
                )
            ],
        )
    known = set(_known_keys(Cluster))
    if parsed.data and not known & set(parsed.data):
        # Some other YAML file (or /etc/passwd-like text): one problem, and none of its content
        # echoed back as "unknown keys".
        raise SpecError(
            source,
            [
                Problem(
                    FILE,
                    f"this is not a hakube cluster file: none of its {len(parsed.data)} top-level "
                    "keys is one of a cluster file's (apiVersion, kind, name, hosts, ...)",
                    f"point -f at a cluster file; start from examples/tutorial.yaml "
                    f"(apiVersion: {API_VERSION}, kind: Cluster)",
                    line=1,
                )
            ],
        )
    return load_cluster_data(parsed.data, source=source, parsed=parsed)


def load_cluster_data(
    data: Mapping[str, Any], *, source: str = "<data>", parsed: Parsed | None = None
) -> Loaded:
    parsed = parsed or Parsed(data)
    lines = parsed.lines
    context: dict[str, Any] = {"warnings": []}
    problems = [_with_line(p, lines) for p in parsed.problems]
    try:
        cluster = Cluster.model_validate(dict(data), context=context)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        unworded = parsed.unworded + max(0, len(errors) - MAX_WORDED)
        if unworded:
            errors.sort(key=lambda err: _line_of(_path(tuple(err["loc"])), lines) or math.inf)
        problems += [_from_pydantic(err, parsed) for err in errors[:MAX_WORDED]]
        if len(errors) <= MAX_SHOWN:  # beyond a screenful of field errors, they come first
            problems += _cross_field_despite(dict(data), errors, lines)
        problems += _warnings(context, lines)
        raise SpecError(source, problems, unworded) from None
    found = problems + [_with_line(p, lines) for p in check_cluster(cluster)]
    found += _warnings(context, lines)
    if any(p.severity is Severity.ERROR for p in found):
        raise SpecError(source, found, parsed.unworded)
    return Loaded(cluster, found, source)


def dump_cluster(cluster: Cluster) -> dict[str, Any]:
    """The cluster as plain data, defaults included, in the file's own key names."""
    out: dict[str, Any] = json.loads(cluster.model_dump_json(by_alias=True))
    return out


# Cross-field checks on a file with field errors ------------------------------------------------

#: Required fields and a stand-in value that lets the rest be checked.
_PLACEHOLDERS: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Cluster", "name": "unnamed"}
#: Host fields that decide roles and placement: a host without a valid one is left out.
_HOST_REQUIRED = ("address", "roles")


def _cross_field_despite(
    data: dict[str, Any], errors: list[Any], lines: dict[str, int]
) -> list[Problem]:
    """Cross-field problems of the file with every invalid value removed (defaults take their
    place). A bad router id must not hide that there are two control planes. Problems about a
    removed value, or about the set of hosts when a host had to be left out, are not reported:
    they would be about the stand-in, not the file."""
    pruned = copy.deepcopy(data)
    removed: list[str] = []
    hosts_complete = True
    drop_hosts: set[int] = set()
    names: dict[str, str] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if not loc:
            return []
        head = loc[0]
        if head in _PLACEHOLDERS:
            pruned[str(head)] = _PLACEHOLDERS[str(head)]
            continue
        if head == "hosts":
            if len(loc) < 2 or not isinstance(loc[1], int):
                return []
            host = pruned["hosts"][loc[1]] if len(loc) > 2 else None
            if loc[2:3] == ("name",) and isinstance(host, dict):
                stand_in = f"unnamed-{loc[1]}"  # a name changes no count or address
                names[stand_in] = str(host.get("name"))
                host["name"] = stand_in
                removed.append(_path(loc))
                continue
            if len(loc) == 2 or loc[2] in _HOST_REQUIRED:
                drop_hosts.add(loc[1])
                hosts_complete = False
                continue
        if not _remove(pruned, loc):
            return []
        removed.append(_path(loc))
    _compact(pruned)
    if drop_hosts and isinstance(pruned.get("hosts"), list):
        pruned["hosts"] = [h for i, h in enumerate(pruned["hosts"]) if i not in drop_hosts]
        if not pruned["hosts"]:
            return []
    try:
        cluster = Cluster.model_validate(pruned, context={"warnings": []})
    except ValidationError:
        return []
    out = []
    for p in check_cluster(cluster, hosts_complete=hosts_complete):
        if any(p.path == r or p.path.startswith((r + ".", r + "[")) for r in removed):
            continue
        message, hint = p.message, p.hint
        for stand_in, original in names.items():
            # A message may name the host by its invalid name; a fix never suggests it.
            message = message.replace(stand_in, original)
            hint = re.sub(rf"(, )?\b{stand_in}\b(, )?", lambda m: (m[1] and m[2]) or "", hint)
        out.append(_with_line(Problem(p.path, message, hint, p.severity), lines))
    return out


def _remove(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Delete the value at `loc` (dict key or list item); False if the path is not there."""
    parent = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = loc[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        parent[last] = _Gone  # indexes of the other errors stay valid until `_compact`
        return True
    return False


class _Gone:
    pass


def _compact(data: Any) -> None:
    if isinstance(data, dict):
        for v in data.values():
            _compact(v)
    elif isinstance(data, list):
        data[:] = [v for v in data if v is not _Gone]
        for v in data:
            _compact(v)


# pydantic's errors as problems ---------------------------------------------------------------


def _warnings(context: dict[str, Any], lines: dict[str, int]) -> list[Problem]:
    return [
        _with_line(Problem(path, msg, severity=Severity.WARNING), lines)
        for path, msg in context["warnings"]
    ]


def _with_line(p: Problem, lines: dict[str, int]) -> Problem:
    if p.line is not None:
        return p
    line = _line_of(p.path, lines)
    return p if line is None else Problem(p.path, p.message, p.hint, p.severity, line)


def _line_of(path: str, lines: dict[str, int]) -> int | None:
    """The line of the path's key, or of the nearest enclosing one the file has."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


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


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"the single value {_shown(value)}"


#: Fields checked by a pattern: what the value should look like.
_PATTERN_HINTS = {
    "tunnel_timeout": "a number and a unit, such as 1h, 30m or 90s",
    "stats_bind": "address:port, such as 127.0.0.1:9000",
    "data_dir": "an absolute path without spaces, such as /var/lib/etcd",
}


def _from_pydantic(err: Any, parsed: Parsed) -> Problem:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    path = _path(loc) or FILE
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    msg = str(err["msg"])
    hint = "see `hakube schema` for what this field takes"
    if kind == "hakube":
        msg, hint = str(ctx["message"]), str(ctx["fix"])
    elif kind == "extra_forbidden":
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
        msg = f"{_shown(value)} is not allowed"
        hint = f"use {ctx.get('expected', '')}"
    elif kind == "string_type" and isinstance(value, bool | int | float):
        msg, hint = _not_text(path, value, parsed.raw.get(path))
    elif kind in ("string_type", "str_type"):
        msg = f"must be text (got {_kind_of(value)})"
        hint = "write a single value here, quoted if in doubt"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        msg = f"must be a whole number (got {_shown(value)})"
        hint = "write digits only, without quotes or units"
    elif kind in ("float_type", "float_parsing"):
        msg = f"must be a number (got {_shown(value)})"
        hint = "write a number such as 0.5, without quotes or units"
    elif kind in ("bool_type", "bool_parsing"):
        msg = f"must be true or false (got {_shown(value)})"
        hint = "write true or false"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()), "")
        words = {
            "greater_than_equal": ("too small: it must be greater than or equal to", "at least"),
            "greater_than": ("too small: it must be greater than", "above"),
            "less_than_equal": ("too large: it must be less than or equal to", "at most"),
            "less_than": ("too large: it must be less than", "below"),
        }[kind]
        msg = f"{_shown(value)} is {words[0]} {bound}"
        hint = f"use a value {words[1]} {bound}"
    elif kind == "too_short":
        msg = f"must list at least {ctx.get('min_length', 1)} item(s) (the list is empty)"
        hint = "add the items (see examples/tutorial.yaml)"
    elif kind == "list_type":
        msg = f"must be a list (got {_kind_of(value)})"
        hint = "write it as a YAML list: one `- item` per line, or [a, b]"
    elif kind in ("dict_type", "model_type", "model_attributes_type", "model_fields_type"):
        model = _model_at(loc)
        keys = ", ".join(_known_keys(model)) if model else ""
        msg = f"must be a mapping of keys (got {_kind_of(value)})"
        hint = "write `key: value` lines below it" + (
            f"; keys allowed here: {keys}" if keys else ""
        )
    elif kind == "ip_v4_address":
        msg = f"{_shown(value)} is not an IPv4 address"
        hint = "write four numbers from 0 to 255, such as 10.0.0.11"
    elif kind in ("ip_v4_network", "ip_v4_interface"):
        msg = f"{_shown(value)} is not an IPv4 subnet"
        hint = "write address/prefix, such as 10.244.0.0/16"
    elif kind == "string_pattern_mismatch":
        msg = f"{_shown(value)} does not have the right form"
        hint = "write " + _PATTERN_HINTS.get(str(loc[-1]), "a value of the documented form")
    elif kind == "path_type":
        msg = f"must be a file path (got {_kind_of(value)})"
        hint = "write the path as text, such as ~/.ssh/id_ed25519"
    else:
        msg = f"{msg.replace('Input should be', 'must be')} (got {_shown(value)})"
    if kind == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
    return _with_line(Problem(path, msg, hint), parsed.lines)


def _not_text(path: str, value: bool | float, raw: str | None) -> tuple[str, str]:
    """YAML turned something unquoted into a number or a boolean: say so, and how to quote it."""
    written = raw if raw is not None else str(value)
    what = "a boolean" if isinstance(value, bool) else "the number"
    msg = f"YAML reads the unquoted {written} as {what} {_shown(value)}, not as text"
    quoted = written
    if path == "kubernetes.version" and written.count(".") == 1:
        quoted = f"{written}.x"  # `1.30` lost its zero; a patch release is needed anyway
    return msg, f'quote it: "{quoted}"'
