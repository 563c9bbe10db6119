"""Wall time of `hakube --help` and `hakube validate -f examples/tutorial.yaml`, each run 10 times
as a fresh process (what a user waits for): `python bench/startup.py`. Target: median <= 0.25 s.

Each command runs once untimed first, with bytecode caching on (PYTHONDONTWRITEBYTECODE is
dropped for the children), so that the figures are those of an installed hakube, whose modules
are compiled once, not of a shell that recompiles every module on every run.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 10
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def hakube() -> str:
    beside = Path(sys.executable).with_name("hakube")
    found = str(beside) if beside.exists() else shutil.which("hakube")
    if found is None:
        sys.exit("hakube is not installed in this environment (make setup)")
    return found


def median_seconds(argv: list[str]) -> tuple[float, float, float, float]:
    """Wall time min/median/max, and the median CPU time (user + system) of the child: on a
    busy machine the wall time mostly measures the other processes."""
    times, cpu = [], []
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, env=ENV)  # writes bytecode
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, env=ENV)
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(times), statistics.median(times), max(times), statistics.median(cpu)


def command(src: str | None) -> list[str]:
    """The installed `hakube`, or (`--src DIR`) the hakube package found in DIR, e.g. an older
    checkout's src/, to measure before and after a change on the same machine."""
    if src is None:
        return [hakube()]
    code = f"import sys; sys.path.insert(0, {src!r}); from hakube.cli import main; main()"
    return [sys.executable, "-c", code]


def main() -> None:
    args = sys.argv[1:]
    exe = command(args[1] if args[:1] == ["--src"] and len(args) > 1 else None)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for argv in ([*exe, "--help"], [*exe, "validate", "-f", "examples/tutorial.yaml"]):
        lo, med, hi, cpu = median_seconds(argv)
        shown = " ".join(["hakube", *argv[len(exe) :]])
        print(
            f"{shown:<44} wall median {med:.3f} s (min {lo:.3f}, max {hi:.3f}), "
            f"CPU median {cpu:.3f} s, {RUNS} runs"
        )


if __name__ == "__main__":
    main()
