"""Hostile cluster files: each must be refused (exit 2) within 1 s and 200 MB.

`python bench/hostile_yaml.py` runs `hakube validate -f FILE` on each case as a fresh process and
prints its wall time and peak memory (max RSS), the CLI's start-up included. The cases are sized
well beyond what the bound needs, up to the loader's size cap, to show the margin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from hakube.spec.source import MAX_BYTES

LIMIT_S = 1.0
LIMIT_MB = 200.0


def billion_laughs(levels: int = 12) -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return ("\n".join(lines) + "\n").encode()


def deep_flow() -> bytes:
    half = (MAX_BYTES - 16) // 2
    return b"hosts: " + b"[" * half + b"]" * half


def deep_block(levels: int = 3000) -> bytes:
    return "".join("  " * i + f"k{i}:\n" for i in range(levels)).encode()[: MAX_BYTES - 1]


def several_megabytes() -> bytes:
    return b"- just a list of words\n" * 400_000  # 9 MB


def list_at_the_cap() -> bytes:
    return b"- x\n" * (MAX_BYTES // 4)


def hosts_at_the_cap() -> bytes:
    head = b"apiVersion: hakube/v1alpha1\nkind: Cluster\nname: big\nhosts:\n"
    host = b"- {name: Bad_Name, address: 10.0.0.300, roles: [wroker], labels: {'a b': yes}}\n"
    return head + host * ((MAX_BYTES - len(head)) // len(host))


def duplicate_keys_at_the_cap() -> bytes:
    head = b"apiVersion: hakube/v1alpha1\nkind: Cluster\nname: dup\n"
    return head + b"name: again\n" * ((MAX_BYTES - len(head)) // 12)


def binary_at_the_cap() -> bytes:
    return os.urandom(MAX_BYTES)


CASES: dict[str, Callable[[], bytes]] = {
    "billion laughs (10^12 if expanded)": billion_laughs,
    "flow nesting 130k deep": deep_flow,
    "block nesting 3000 deep": deep_block,
    "9 MB list (over the size cap)": several_megabytes,
    "65k-item list at the cap": list_at_the_cap,
    "3300 invalid hosts at the cap": hosts_at_the_cap,
    "22k duplicate keys at the cap": duplicate_keys_at_the_cap,
    "random bytes at the cap": binary_at_the_cap,
}


def hakube() -> str:
    return str(Path(sys.executable).with_name("hakube"))


def run(path: Path) -> tuple[int, float, float, float]:
    """Exit code, wall and CPU seconds, and peak RSS (MB) of one validate run in a fresh child
    (CPU time is what to read on a busy machine, where wall time measures the neighbours)."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:], capture_output=True).returncode\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(rc, time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, hakube(), "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), float(out[2]), float(out[3])


def main() -> None:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in CASES.items():
            path = Path(tmp) / "hostile.yaml"
            data = make()
            path.write_bytes(data)
            rc, seconds, cpu, mb = run(path)
            within = rc == 2 and min(seconds, cpu) <= LIMIT_S and mb <= LIMIT_MB
            ok &= within
            print(
                f"{name:<36} {len(data) / 1e6:5.2f} MB  exit {rc}  wall {seconds:5.2f} s  "
                f"CPU {cpu:5.2f} s  {mb:6.1f} MB peak  {'ok' if within else 'OVER'}"
            )
    print(
        f"bounds: exit 2 within {LIMIT_S} s and {LIMIT_MB:.0f} MB each, CLI start-up included; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
