"""Wall time of `hakube --help` and `hakube validate -f examples/tutorial.yaml`, each run 10 times
as a fresh process (what a user waits for): `python bench/startup.py`. Target: median <= 0.25 s.
Before/after a change: `python bench/startup.py --src OLD/src NEW/src` (runs alternate); two
interpreters: `python bench/startup.py --python OTHER-VENV/bin/python .venv/bin/python`.

Each command runs once untimed first, with bytecode caching on (PYTHONDONTWRITEBYTECODE is
dropped for the children), so that the figures are those of an installed hakube, whose modules
are compiled once, not of a shell that recompiles every module on every run.

`--instructions` (needs valgrind): instructions executed instead of time, which the machine's
load does not change, for `hakube validate` and for the imports it is made of, each stage a
separate process that adds the next library (python alone, pydantic with its plugin loader,
PyYAML, hakube.spec with its models built, the CLI with typer), so that a start-up figure can
be split into what each library costs on any machine, busy or not.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def run_once(argv: list[str], env: dict[str, str] = ENV) -> tuple[float, float]:
    """Wall time and the CPU time (user + system) of one run of argv as a child process, which
    must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert res.returncode == 0, (argv, res.stdout, res.stderr)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def measure(argvs: list[list[str]]) -> list[tuple[float, float, float, float]]:
    """Per argv: wall time min/median/max and the median CPU time. With several argvs (before
    and after a change) the runs alternate, so that a change in the machine's load falls on
    each alike; on a busy machine the CPU time is the steadier figure."""
    for argv in argvs:
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, env=ENV)  # bytecode
    runs: list[list[tuple[float, float]]] = [[] for _ in argvs]
    for _ in range(RUNS):
        for i, argv in enumerate(argvs):
            runs[i].append(run_once(argv))
    out = []
    for r in runs:
        times, cpu = [w for w, _ in r], [c for _, c in r]
        out.append((min(times), statistics.median(times), max(times), statistics.median(cpu)))
    return out


#: Each stage imports what the one before did and more; the last runs the command itself.
STAGES = [
    ("python alone", "pass"),
    # pydantic's plugin loader (importlib.metadata) is imported when the first model is built.
    ("+ pydantic (the names hakube.spec uses, plugin loader)",
     "from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, "
     "model_validator; import pydantic.plugin._loader"),
    ("+ PyYAML", "import yaml"),
    ("+ hakube.spec (its models built)", "import hakube.spec"),
    ("+ hakube.cli (typer)", "import hakube.cli"),
    ("+ running `hakube validate -f examples/tutorial.yaml`",
     "import sys; sys.argv = ['hakube', 'validate', '-f', 'examples/tutorial.yaml']; "
     "hakube.cli.main()"),
]  # fmt: skip


def instructions(argv: list[str]) -> int:
    """Instructions one run of argv executes (valgrind's callgrind; the hash seed fixed)."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as d:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/out", *argv],
            cwd=ROOT, capture_output=True, text=True, env={**ENV, "PYTHONHASHSEED": "0"},
            check=False,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"valgrind failed on {argv}: {done.stderr[-500:]}")
    return int(found.group(1))


def instruction_table(python: str) -> None:
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind: apt-get install valgrind")
    subprocess.run([python, "-c", "import hakube.cli"], cwd=ROOT, env=ENV, check=True)  # bytecode
    code, before = "", 0
    for name, stmt in STAGES:
        code = f"{code}; {stmt}" if code else stmt
        count = instructions([python, "-c", code])
        print(f"{name:<58} {count / 1e6:6.0f} M instructions (+{(count - before) / 1e6:4.0f} M)")
        before = count


def command(python: str | None, src: str | None) -> list[str]:
    """The installed `hakube`; or hakube run by another interpreter (a venv's python with hakube
    installed), or found in `src` (an older checkout's src/), to measure before and after a
    change on the same machine."""
    if python is None and src is None:
        return [hakube()]
    path = f"sys.path.insert(0, {src!r}); " if src else ""
    code = f"import sys; {path}from hakube.cli import main; main()"
    return [python or sys.executable, "-c", code]


def main() -> None:
    """`startup.py`: the installed hakube. `--src DIR [DIR...]`: the hakube in each DIR;
    `--python EXE [EXE...]`: hakube under each interpreter (e.g. two venvs); runs alternate
    between them (before/after)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", nargs="+", default=[None], metavar="DIR")
    parser.add_argument("--python", nargs="+", default=[None], metavar="EXE")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per import stage (valgrind), not time")  # fmt: skip
    args = parser.parse_args()
    if args.instructions and args.src != [None]:
        parser.error("--instructions counts the hakube each --python has installed; not --src")
    if args.instructions:
        for py in args.python:
            print(f"{py or sys.executable}:")
            instruction_table(py or sys.executable)
        return
    variants = [(py, src) for py in args.python for src in args.src]
    exes = [command(py, src) for py, src in variants]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for words in (["--help"], ["validate", "-f", "examples/tutorial.yaml"]):
        figures = measure([[*exe, *words] for exe in exes])
        for (py, src), (lo, med, hi, cpu) in zip(variants, figures, strict=True):
            tags = " ".join(t for t in (py, src) if t)
            shown = " ".join(["hakube", *words]) + (f" [{tags}]" if tags else "")
            print(
                f"{shown:<44} wall median {med:.3f} s (min {lo:.3f}, max {hi:.3f}), "
                f"CPU median {cpu:.3f} s, {RUNS} runs"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
