"""HAProxy's own view of its backends, read from the stats socket."""

from __future__ import annotations

from dataclasses import dataclass

from hakube.render.haproxy import CHECKS_BACKEND, STATS_SOCKET


def admin_command(command: str, socket: str = STATS_SOCKET) -> str:
    """Shell command sending one command to HAProxy's admin socket on an LB host."""
    return f"echo '{command}' | socat stdio unix-connect:{socket}"


def show_stat(socket: str = STATS_SOCKET) -> str:
    """Shell command printing `show stat` CSV on an LB host."""
    return admin_command("show stat", socket)


SHOW_STAT = show_stat()


@dataclass
class Backend:
    lb: str
    server: str
    status: str
    check: str


def parse_show_stat(csv_text: str, lb: str) -> list[Backend]:
    """HAProxy `show stat` CSV → the servers that serve clients (not the checks-only twins)."""
    lines = [line for line in csv_text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    col = {name: i for i, name in enumerate(header)}
    serving: list[list[str]] = []
    checks: dict[str, list[str]] = {}
    for line in lines[1:]:
        cells = line.split(",")
        if len(cells) < len(header) or cells[col["svname"]] in ("FRONTEND", "BACKEND"):
            continue
        if cells[col["pxname"]] == CHECKS_BACKEND:
            checks[cells[col["svname"]]] = cells
        else:
            serving.append(cells)
    # The state clients meet is the serving server's; its check result is where the checks run:
    # hakube's checks backend, or the server itself (`observe_errors`, other balancers' configs).
    out = []
    for cells in serving:
        sv = cells[col["svname"]]
        checked = checks.get(sv, cells)
        out.append(Backend(lb, sv, cells[col["status"]], checked[col.get("check_status", 0)]))
    return out
