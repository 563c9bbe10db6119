"""Round-trip cost of the SSH transport against the in-process loopback server.

    .venv/bin/python bench/transport_roundtrip.py [--iterations 200]

Prints median and p95 for run("true") and a 4 KB put, the latter both via SFTP (the default
when no sudo is involved) and via the shell pipeline (sudo hosts, or owner=...). Client and
server share one process and event loop, so figures are an upper bound on transport overhead
and only meaningful relative to each other.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hakube.transport.loopback import LoopbackSSHServer
from hakube.transport.pool import connect_all
from hakube.transport.ssh import SSHTransport


async def measure(iterations: int, op: Callable[[], Awaitable[object]]) -> list[float]:
    await op()  # warm-up: first SFTP use opens its channel
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - start)
    return samples


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"{name:<18} n={len(ordered):<4} median {statistics.median(ordered) * 1e3:7.2f} ms"
        f"   p95 {p95 * 1e3:7.2f} ms"
    )


async def bench_puts(t: SSHTransport, dest: str, label: str, iterations: int) -> None:
    payload = b"x" * 4096
    report(label, await measure(iterations, lambda: t.put(dest, payload)))


async def main(iterations: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hakube-bench-") as tmp:
        root = Path(tmp)
        dest = str(root / "out" / "file")
        async with LoopbackSSHServer(root / "server") as server:
            async with await connect_all([server.target()]) as pool:
                t = pool["node1"]
                report("run('true')", await measure(iterations, lambda: t.run("true")))
                await bench_puts(t, dest, "put 4KB (sftp)", iterations)
            async with await connect_all([server.target()], use_sftp=False) as pool:
                await bench_puts(pool["node1"], dest, "put 4KB (shell)", iterations)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=200)
    asyncio.run(main(parser.parse_args().iterations))
