"""Bytes of a cluster file → plain data with line numbers, in bounded time and memory.

The file is read once and parsed once, with libyaml's event stream where available. Data is
built from the events here instead of by a YAML constructor so that the hostile cases are caught
before they cost anything: aliases (the "billion laughs" expansion) are refused outright, nesting
is capped, a key written twice in one mapping is an error naming both lines (PyYAML would keep the
last one silently), and keys stay the text that was written (`on:` is not `True`).
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from hakube.spec.checks import FILE, Problem

#: Above any real cluster file (1000 hosts take about 100 KiB), below what costs a second to read.
MAX_BYTES = 256 << 10
#: Problems worded in full; past this many (a generated or hostile file) the rest are counted.
MAX_WORDED = 1000
#: A cluster file nests six levels deep at most; this leaves room without allowing a stack bomb.
MAX_DEPTH = 32

_EventLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STANDARD_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
}

_STR = "tag:yaml.org,2002:str"

_UTF16_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class SourceError(Exception):
    """The file cannot be read as a cluster file at all; `problems` says why and where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class Parsed:
    data: Any
    #: Dotted path (`hosts[0].name`) → 1-based line of that key or list item.
    lines: dict[str, int] = field(default_factory=dict)
    #: Plain scalars as written (`1.30`), for messages about what YAML made of them.
    raw: dict[str, str] = field(default_factory=dict)
    #: Problems that still let the rest of the file be checked (duplicate keys).
    problems: list[Problem] = field(default_factory=list)
    #: Further duplicate keys, past `MAX_WORDED`: only counted.
    unworded: int = 0


def _refuse(message: str, hint: str, line: int | None = None) -> SourceError:
    return SourceError([Problem(FILE, message, hint, line=line)])


def read_text(path: Path) -> str:
    """The file as text: size checked before reading, then `decode`."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                _too_big(size)
            data = f.read(MAX_BYTES + 1)  # a pipe or device has no size: read one byte over
    except IsADirectoryError:
        raise _refuse("is a directory, not a file", "point -f at the cluster file itself") from None
    except OSError as e:
        raise _refuse(
            f"cannot read the file: {e.strerror}", "check the path given with -f"
        ) from None
    return decode(data)


def decode(data: bytes) -> str:
    """UTF-8 text (a UTF-8 byte order mark is dropped), or a `SourceError` naming the bad byte."""
    if len(data) > MAX_BYTES:
        _too_big(len(data))
    for bom, name in _UTF16_32_BOMS:
        if data.startswith(bom):
            raise _refuse(
                f"the file is {name} (it starts with a {name} byte order mark), not UTF-8",
                "save it as UTF-8 (in most editors: 'Save with encoding' → UTF-8)",
            )
    data = data.removeprefix(codecs.BOM_UTF8)
    nul = data.find(b"\0")
    if nul >= 0:
        raise _refuse(
            f"the file holds binary data (a NUL byte at offset {nul}); it is not a YAML text file",
            "point -f at the cluster file (YAML text, e.g. examples/tutorial.yaml)",
            line=data.count(b"\n", 0, nul) + 1,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        start = data.rfind(b"\n", 0, e.start) + 1
        column = e.start - start + 1
        raise _refuse(
            f"byte 0x{data[e.start]:02x} at line {line}, column {column} is not UTF-8 "
            "(the file looks like Latin-1 or another legacy encoding)",
            "save the file as UTF-8, or replace that character",
            line=line,
        ) from None


def _too_big(size: int) -> NoReturn:
    raise _refuse(
        f"the file is larger than {MAX_BYTES >> 10} KiB (at least {size:,} bytes); a cluster "
        "file is far smaller, so this is not one",
        "point -f at the cluster file (YAML, e.g. examples/tutorial.yaml)",
    )


def parse(text: str) -> Parsed:
    """One YAML document as plain data, or `SourceError` for anything not safely readable."""
    if len(text) > MAX_BYTES:
        _too_big(len(text))
    text = text.removeprefix("\ufeff")
    try:
        return _Builder().run(yaml.parse(text, Loader=_EventLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if "nesting depth" in str(e.problem):  # libyaml's own limit, far beyond ours
            raise _too_deep(mark.line + 1 if mark is not None else None) from None
        raise _refuse(
            f"not valid YAML: {e.problem or e.context}",
            "fix the syntax at that line (indentation, a missing ':' or an unclosed bracket)",
            line=mark.line + 1 if mark is not None else None,
        ) from None
    except yaml.YAMLError as e:
        raise _refuse(f"not valid YAML: {e}", "fix the syntax") from None


def _too_deep(line: int | None) -> SourceError:
    return _refuse(
        f"the file nests more than {MAX_DEPTH} levels deep; a cluster file needs six",
        "this is not a cluster file: point -f at one (e.g. examples/tutorial.yaml)",
        line=line,
    )


class _Builder:
    """Plain data from YAML events, with a stack instead of recursion."""

    def __init__(self) -> None:
        self.out = Parsed(None)
        self.resolver = Resolver()
        self.implicit_first = frozenset(k for k in Resolver.yaml_implicit_resolvers if k)
        self.constructor = SafeConstructor()
        # Each frame: [container, path, pending key or None, line of the pending key].
        self.stack: list[list[Any]] = []
        # Per mapping frame: key → line where it was first written.
        self.seen: list[dict[str, int | None]] = []
        self.documents = 0

    def run(self, events: Any) -> Parsed:
        for ev in events:
            self.event(ev)
        if self.documents == 0:
            raise _refuse(
                "the file is empty",
                "start from examples/tutorial.yaml (apiVersion, kind, name, hosts)",
            )
        return self.out

    def event(self, ev: yaml.Event) -> None:
        kind = type(ev)
        line = ev.start_mark.line + 1 if ev.start_mark is not None else None
        if kind is yaml.ScalarEvent:
            self.add(self.scalar(ev, line), line, ev)  # type: ignore[arg-type]
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            self.check_tag(ev.tag, line)  # type: ignore[attr-defined]
            container: Any = {} if kind is yaml.MappingStartEvent else []
            path = self.add(container, line, ev)  # type: ignore[arg-type]
            if len(self.stack) >= MAX_DEPTH:
                raise _too_deep(line)
            self.stack.append([container, path, None, None])
            self.seen.append({})
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            self.stack.pop()
            self.seen.pop()
        elif kind is yaml.AliasEvent:
            raise _refuse(
                f"YAML aliases (*{ev.anchor}) are not allowed in a cluster file, so that a small "  # type: ignore[attr-defined]
                "file cannot expand into a huge one",
                "write the value out in full where the alias (or a `<<:` merge) stands",
                line=line,
            )
        elif kind is yaml.DocumentStartEvent:
            self.documents += 1
            if self.documents > 1:
                raise _refuse(
                    "the file holds more than one YAML document ('---' starts a second one)",
                    "keep one cluster per file: remove the second document",
                    line=line,
                )

    def check_tag(self, tag: str | None, line: int | None) -> None:
        if tag is None or tag == "!":
            return
        if tag not in _STANDARD_TAGS:
            raise _refuse(
                f"the YAML tag {tag!r} is not allowed in a cluster file",
                "remove the tag: values are plain text, numbers, true/false, lists and mappings",
                line=line,
            )

    def scalar(self, ev: yaml.ScalarEvent, line: int | None) -> Any:
        tag = ev.tag
        value = ev.value
        if tag is None or tag == "!":
            if ev.style:  # quoted or block text is text
                return value
            if value and value[0] not in self.implicit_first:
                return value  # no implicit type (int, bool, ...) starts with this character
            resolve: Any = self.resolver.resolve
            tag = str(resolve(yaml.ScalarNode, value, ev.implicit))
        else:
            self.check_tag(tag, line)
        if tag == _STR or tag not in _STANDARD_TAGS:  # an implicit timestamp stays text
            return value
        node = yaml.ScalarNode(tag, value, style=ev.style)
        try:
            return self.constructor.construct_object(node)
        except (ConstructorError, ValueError) as e:
            raise _refuse(
                f"{value!r} cannot be read as {tag.rpartition(':')[2]}: {e}",
                "write a plain value without the tag",
                line=line,
            ) from None

    def add(self, value: Any, line: int | None, ev: yaml.NodeEvent) -> str:
        """Place a value in the current container; returns its path."""
        if not self.stack:
            self.out.data = value
            return ""
        frame = self.stack[-1]
        container = frame[0]
        parent: str = frame[1]
        if isinstance(container, list):
            path = f"{parent}[{len(container)}]"
            container.append(value)
            self.note(path, line, ev, value)
            return path
        if frame[2] is None:  # this value is a key
            if not isinstance(ev, yaml.ScalarEvent):
                raise _refuse(
                    "a mapping key is itself a list or mapping",
                    "keys are plain names such as `name:` or `hosts:`",
                    line=line,
                )
            frame[2], frame[3] = ev.value, line
            return parent
        key: str = frame[2]
        key_line: int | None = frame[3]
        frame[2] = frame[3] = None
        path = f"{parent}.{key}" if parent else key
        first = self.seen[-1].get(key)
        if first is not None and len(self.out.problems) >= MAX_WORDED:
            self.out.unworded += 1
        elif first is not None:
            self.out.problems.append(
                Problem(
                    path,
                    f"{key!r} is written twice in this mapping (lines {first} and {key_line}); "
                    "YAML would silently keep only the second",
                    f"keep one of the two {key!r} entries",
                    line=key_line,
                )
            )
        else:
            self.seen[-1][key] = key_line
        container[key] = value
        self.note(path, key_line, ev, value)
        return path

    def note(self, path: str, line: int | None, ev: yaml.NodeEvent, value: Any) -> None:
        if line is not None:
            self.out.lines.setdefault(path, line)
        if isinstance(value, bool | int | float):  # YAML typed it: keep what was written
            self.out.raw[path] = ev.value  # type: ignore[attr-defined]
