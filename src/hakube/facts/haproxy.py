"""HAProxy's own view of its backends, read from the stats socket."""

from __future__ import annotations

from dataclasses import dataclass

from hakube.render.haproxy import STATS_SOCKET


def show_stat(socket: str = STATS_SOCKET) -> str:
    """Shell command printing `show stat` CSV on an LB host."""
    return f"echo 'show stat' | socat stdio unix-connect:{socket}"


SHOW_STAT = show_stat()


@dataclass
class Backend:
    lb: str
    server: str
    status: str
    check: str


def parse_show_stat(csv_text: str, lb: str) -> list[Backend]:
    """HAProxy `show stat` CSV → the servers of the apiserver backend."""
    lines = [line for line in csv_text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    col = {name: i for i, name in enumerate(header)}
    out = []
    for line in lines[1:]:
        cells = line.split(",")
        if len(cells) < len(header):
            continue
        sv = cells[col["svname"]]
        if sv in ("FRONTEND", "BACKEND"):
            continue
        out.append(Backend(lb, sv, cells[col["status"]], cells[col.get("check_status", 0)]))
    return out
