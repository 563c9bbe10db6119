"""Ansible inventories as kubespray and kubeasz write them: INI or YAML, groups, vars.

A small, strict reader rather than configparser: Ansible's INI puts `host key=value ...` on one
line, allows `#` comments after a host, and has `[group:vars]` / `[group:children]` sections.
Anything this reader does not understand is an error with the file and line, never skipped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_SECTION_RE = re.compile(r"^\[([^\]:\s]+)(?::(vars|children))?\]\s*(?:[#;].*)?$")
_GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RANGE_RE = re.compile(r"\[[0-9a-z]+:[0-9a-z]+(?::[0-9]+)?\]")
_SIMPLE_TEMPLATE_RE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


class InventoryError(Exception):
    """The inventory cannot be read; names the file, the line when known, and the fix."""

    def __init__(self, source: Path | str, message: str, hint: str = "", line: int | None = None):
        self.source = str(source)
        self.message = message
        self.hint = hint
        self.line = line
        where = f"{self.source}:{line}" if line is not None else self.source
        super().__init__(f"{where}: {message}" + (f"\n  hint: {hint}" if hint else ""))


@dataclass
class Group:
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inventory:
    """Hosts (with their own vars, in order of first appearance) and groups."""

    source: Path
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)

    def group(self, name: str) -> Group:
        return self.groups.setdefault(name, Group())

    def add_host(self, name: str, group: str | None, hostvars: dict[str, Any]) -> None:
        self.hosts.setdefault(name, {}).update(hostvars)
        if group is not None and name not in self.group(group).hosts:
            self.group(group).hosts.append(name)

    def members(self, name: str) -> list[str]:
        """Hosts of a group and of its children (recursively), in inventory order."""
        if name == "all":
            return list(self.hosts)
        found: set[str] = set()
        seen: set[str] = set()

        def walk(g: str, path: tuple[str, ...]) -> None:
            if g in path:
                chain = " -> ".join((*path, g))
                raise InventoryError(
                    self.source,
                    f"group {g!r} contains itself ({chain})",
                    "remove one of the [..:children] entries",
                )
            if g in seen or g not in self.groups:
                return
            seen.add(g)
            found.update(self.groups[g].hosts)
            for child in self.groups[g].children:
                walk(child, (*path, g))

        walk(name, ())
        return [h for h in self.hosts if h in found]

    def first_group(self, *names: str) -> str | None:
        """The first of several spellings of a group that the inventory defines."""
        for n in names:
            if n in self.groups:
                return n
        return None


def _unquote(value: str, source: Path, line: int) -> str:
    try:
        parts = shlex.split(value, comments=True)
    except ValueError as e:
        raise InventoryError(source, f"cannot read the value {value!r}: {e}", "", line) from None
    return " ".join(parts)


def read_ini(path: Path) -> Inventory:
    """Read an Ansible INI inventory."""
    inv = Inventory(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InventoryError(path, f"cannot read the inventory: {e}") from None
    section: tuple[str, str] = ("ungrouped", "hosts")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            m = _SECTION_RE.match(line)
            if not m:
                raise InventoryError(
                    path,
                    f"cannot read the section header {line!r}",
                    "write [group], [group:vars] or [group:children]",
                    number,
                )
            section = (m[1], m[2] or "hosts")
            inv.group(m[1])
            continue
        group, kind = section
        if kind == "vars":
            key, value = _key_value(
                line,
                InventoryError(
                    path,
                    f"[{group}:vars] expects key=value lines, got {line!r}",
                    'write one variable per line, e.g. SERVICE_CIDR="10.68.0.0/16"',
                    number,
                ),
            )
            inv.group(group).vars[key] = _unquote(value.strip(), path, number)
        elif kind == "children":
            child = line.split("#", 1)[0].strip()
            if not _GROUP_RE.match(child):
                raise InventoryError(
                    path, f"{child!r} is not a group name", "one group name per line", number
                )
            inv.group(group).children.append(child)
        else:
            name, hostvars = _host_line(line, path, number)
            inv.add_host(name, None if group == "ungrouped" else group, hostvars)
    return inv


def _host_line(line: str, path: Path, number: int) -> tuple[str, dict[str, Any]]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as e:
        raise InventoryError(path, f"cannot read the host line: {e}", "", number) from None
    if not tokens:
        raise InventoryError(path, "empty host line", "", number)
    name, *rest = tokens
    if _RANGE_RE.search(name):
        raise InventoryError(
            path,
            f"host pattern {name!r} is a range",
            "list the hosts one per line; hakube needs each host's name and address",
            number,
        )
    hostvars: dict[str, Any] = {}
    if name.count(":") == 1:
        name, port = name.split(":")
        if not port.isdigit():
            raise InventoryError(path, f"{tokens[0]!r}: the port is not a number", "", number)
        hostvars["ansible_port"] = port
    for tok in rest:
        key, value = _key_value(
            tok,
            InventoryError(
                path,
                f"host {name!r}: {tok!r} is not key=value",
                "host lines look like: node1 ansible_host=10.0.0.11 ip=10.0.0.11",
                number,
            ),
        )
        hostvars[key] = value
    return name, hostvars


def _key_value(text: str, wrong: InventoryError) -> tuple[str, str]:
    """`key=value` with a variable name as key (Ansible's rule), or `wrong` is raised."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not _VAR_RE.match(key):
        raise wrong
    return key, value


def _load_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InventoryError(path, f"cannot read {what}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InventoryError(
            path,
            f"not valid YAML: {getattr(e, 'problem', e)}",
            "fix the syntax",
            mark.line + 1 if mark is not None else None,
        ) from None


def read_yaml(path: Path) -> Inventory:
    """Read an Ansible YAML inventory (`all: {hosts:, children:, vars:}`)."""
    data = _load_yaml(path, "the inventory")
    if not isinstance(data, dict):
        raise InventoryError(
            path,
            "a YAML inventory must be a mapping of groups (usually `all:`)",
            "see kubespray's inventory/sample for the shape",
        )
    inv = Inventory(path)
    for name, body in data.items():
        _yaml_group(inv, str(name), body, str(name))
    return inv


def _yaml_group(inv: Inventory, name: str, body: Any, where: str) -> None:
    group = inv.group(name)
    if body is None:
        return
    if not isinstance(body, dict):
        raise InventoryError(
            inv.source,
            f"{where}: a group must be a mapping with hosts, children or vars",
            f"got {type(body).__name__}",
        )
    unknown = set(body) - {"hosts", "children", "vars"}
    if unknown:
        raise InventoryError(
            inv.source,
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}",
            "a group has only hosts, children and vars",
        )
    hosts = body.get("hosts") or {}
    if not isinstance(hosts, dict):
        raise InventoryError(inv.source, f"{where}.hosts must be a mapping of host names")
    for host, hostvars in hosts.items():
        if hostvars is not None and not isinstance(hostvars, dict):
            raise InventoryError(
                inv.source, f"{where}.hosts.{host}: host variables must be a mapping"
            )
        inv.add_host(str(host), None if name == "all" else name, dict(hostvars or {}))
    gvars = body.get("vars") or {}
    if not isinstance(gvars, dict):
        raise InventoryError(inv.source, f"{where}.vars must be a mapping")
    group.vars.update({str(k): v for k, v in gvars.items()})
    children = body.get("children") or {}
    if not isinstance(children, dict):
        raise InventoryError(inv.source, f"{where}.children must be a mapping of groups")
    for child, child_body in children.items():
        if str(child) not in group.children:
            group.children.append(str(child))
        _yaml_group(inv, str(child), child_body, f"{where}.children.{child}")


def read_inventory(path: Path) -> Inventory:
    """INI or YAML, by content: YAML inventories start with a mapping, INI with hosts/sections."""
    if path.suffix in (".yaml", ".yml"):
        return read_yaml(path)
    return read_ini(path)


def read_vars_file(path: Path) -> dict[str, Any]:
    """A group_vars/host_vars YAML file: a mapping (or empty)."""
    data = _load_yaml(path, "the variables file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InventoryError(path, "a variables file must be a mapping of names to values")
    return {str(k): v for k, v in data.items()}


def resolve(value: Any, variables: dict[str, Any], depth: int = 0) -> Any:
    """Follow `{{ other_var }}` references (only bare names); other templates stay as they are."""
    if isinstance(value, str) and depth < 10:
        m = _SIMPLE_TEMPLATE_RE.match(value.strip())
        if m and m[1] in variables:
            return resolve(variables[m[1]], variables, depth + 1)
    return value


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)
