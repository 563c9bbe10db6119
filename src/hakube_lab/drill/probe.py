#!/usr/bin/python3
"""Drill probes, each run as its own process: stdlib only, so it can also be shipped to a host.

`readyz`: HTTPS GET of https://VIP:PORT/readyz at a fixed rate, each request with a short
timeout and one retry; one JSON line per request with monotonic timestamps.

`vip`: every INTERVAL seconds, which lab host holds the VIP (`ip -n NETNS -o -4 addr`) and
whether that host's cable is in (operstate of its veth on the bridge side); one JSON line per
poll.

Both are bounded: they stop after --duration seconds (and after rate x duration requests), or
at SIGTERM/SIGINT. CLOCK_MONOTONIC is shared by every process of the machine, so the two logs
and the drill's own break/restore marks share one time axis.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

_stop = threading.Event()


def _on_signal(_signum: int, _frame: Any) -> None:
    _stop.set()


class _Writer:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self.lock:
            self.stream.write(line)
            self.stream.flush()


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to `host` but checks the certificate for `tls_name` (e.g. the VIP's)."""

    def __init__(self, *args: Any, tls_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tls_name = tls_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.tls_name)  # type: ignore[attr-defined]


def _attempt(
    host: str, port: int, path: str, timeout: float, ctx: ssl.SSLContext, tls_name: str | None
) -> str | None:
    """One fresh TCP+TLS connection and GET: None on HTTP 200, else what went wrong."""
    conn = (
        _NamedHTTPSConnection(host, port, timeout=timeout, context=ctx, tls_name=tls_name)
        if tls_name
        else http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    )
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return None if resp.status == 200 else f"http {resp.status}"
    except (OSError, http.client.HTTPException, ssl.SSLError) as e:
        return type(e).__name__ if not str(e) else f"{type(e).__name__}: {e}"[:80]
    finally:
        conn.close()


def run_readyz(args: argparse.Namespace, out: _Writer) -> int:
    ctx = (
        ssl.create_default_context(cafile=args.cafile)
        if args.cafile
        else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    if not args.cafile:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    period = 1.0 / args.rate
    limit = int(args.rate * args.duration)
    tries = 1 + args.retries

    def one(seq: int, t_sched: float) -> None:
        start = time.monotonic()
        errors: list[str] = []
        for _ in range(tries):
            err = _attempt(args.host, args.port, args.path, args.timeout, ctx, args.tls_name)
            if err is None:
                break
            errors.append(err)
        end = time.monotonic()
        ok = len(errors) < tries
        out.write(
            {"seq": seq, "sched": round(t_sched, 6), "t": round(start, 6), "end": round(end, 6),
             "ok": ok, "tries": len(errors) + (1 if ok else 0), "errors": errors}
        )  # fmt: skip

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for seq in range(limit):
            t_sched = t0 + seq * period
            delay = t_sched - time.monotonic()
            if delay > 0 and _stop.wait(delay):
                break
            if _stop.is_set():
                break
            pool.submit(one, seq, t_sched)
    return 0


def _holds(netns: str, vip: str) -> bool | None:
    """Whether the host holds the VIP; None when `ip` did not answer within 1 s (a starved
    machine), which says nothing about the VIP."""
    try:
        res = subprocess.run(
            ["ip", "-n", netns, "-o", "-4", "addr", "show"],
            capture_output=True, text=True, timeout=1.0, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    return f"inet {vip}/" in res.stdout


def _link_up(veth: str) -> bool:
    try:
        with open(f"/sys/class/net/{veth}/operstate") as f:
            return f.read().strip() == "up"
    except OSError:
        return False


def run_vip(args: argparse.Namespace, out: _Writer) -> int:
    hosts = [h.split(":") for h in args.lab_host]  # name:netns:veth
    deadline = time.monotonic() + args.duration
    while not _stop.is_set() and time.monotonic() < deadline:
        t = time.monotonic()
        holders, reachable, unread = [], [], []
        for name, netns, veth in hosts:
            held = _holds(netns, args.vip)
            if held is None:
                unread.append(name)
            elif held:
                holders.append(name)
                if _link_up(veth):
                    reachable.append(name)
        # Stamped when the reads are done: a sample never claims a state earlier than it saw it.
        sample = {"t": round(time.monotonic(), 6), "holders": holders, "reachable": reachable}
        out.write({**sample, "unread": unread} if unread else sample)
        _stop.wait(max(0.0, t + args.interval - time.monotonic()))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("readyz")
    r.add_argument("--host", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--path", default="/readyz")
    r.add_argument("--rate", type=float, default=50.0)
    r.add_argument("--timeout", type=float, default=0.2)
    r.add_argument("--retries", type=int, default=1)
    r.add_argument("--workers", type=int, default=32)
    r.add_argument("--cafile")
    r.add_argument("--tls-name", help="name to check the certificate for (default: --host)")
    v = sub.add_parser("vip")
    v.add_argument("--vip", required=True)
    v.add_argument("--interval", type=float, default=0.05)
    v.add_argument("--lab-host", action="append", default=[], help="name:netns:veth")
    for s in (r, v):
        s.add_argument("--duration", type=float, required=True, help="hard upper bound (s)")
        s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with open(args.out, "a", encoding="utf-8") as f:
        out = _Writer(f)
        return run_readyz(args, out) if args.mode == "readyz" else run_vip(args, out)


if __name__ == "__main__":
    sys.exit(main())
