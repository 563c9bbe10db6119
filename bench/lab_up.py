"""Seconds from `lab up` to every host answering SSH (warm image), and memory per host.

Run as root: `python bench/lab_up.py [SIZES...]` (default 5 20). Uses lab name "bench" on
10.123.210.0/24 and always tears it down.
"""

from __future__ import annotations

import statistics
import sys
import time

from hakube_lab import Lab, destroy
from hakube_lab.image import ensure_image
from hakube_lab.mirror import ensure_mirror

NAME = "bench"
SUBNET = "10.123.210.0/24"
SETTLE_SECONDS = 10.0


def measure(total: int) -> dict[str, float]:
    control_planes = min(3, total)
    lab = Lab.create(NAME, control_planes, total - control_planes, SUBNET)
    destroy(NAME)
    try:
        t0 = time.monotonic()
        to_ssh = lab.up()
        wall = time.monotonic() - t0
        # Memory once boot-time work (journal flush, tmpfiles) has finished.
        time.sleep(SETTLE_SECONDS)
        mem = [lab.memory(h.name) / 2**20 for h in lab.hosts]
        rss = [lab.memory_rss(h.name) / 2**20 for h in lab.hosts]
    finally:
        destroy(NAME)
    return {
        "hosts": total,
        "up_wall_s": wall,
        "hosts_to_ssh_s": to_ssh,
        "mem_mean_mb": statistics.mean(mem),
        "mem_max_mb": max(mem),
        "rss_max_mb": max(rss),
    }


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [5, 20]
    image = ensure_image(log=print)  # warm: built once, outside the timing
    ensure_mirror(image, log=print)
    print(
        f"image {image.name}; memory = PSS of every process in the host's cgroup, "
        f"{SETTLE_SECONDS:.0f} s after SSH answered"
    )
    print(
        f"{'hosts':>5} {'up (s)':>8} {'boot→ssh (s)':>13} {'PSS mean (MB)':>14} "
        f"{'PSS max (MB)':>13} {'RSS-sum max (MB)':>17}"
    )
    for n in sizes:
        r = measure(n)
        print(
            f"{r['hosts']:>5.0f} {r['up_wall_s']:>8.2f} {r['hosts_to_ssh_s']:>13.2f} "
            f"{r['mem_mean_mb']:>14.1f} {r['mem_max_mb']:>13.1f} {r['rss_max_mb']:>17.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
