"""A PNG timeline per scenario run: every request as success/failure, and the VIP owner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hakube_lab.drill.report import Marks, Request, VipSample


def plot_timeline(
    path: Path,
    title: str,
    requests: Sequence[Request],
    samples: Sequence[VipSample],
    marks: Marks,
    hosts: Sequence[str],
) -> Path:
    """Write the timeline (time 0 = the break) to `path` and return it."""
    t0 = marks.break_at
    fig, (ax_req, ax_vip) = plt.subplots(
        2, 1, figsize=(11, 5), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]}
    )
    try:
        kinds = (
            ("ok", "tab:green", lambda r: r.ok and r.tries <= 1, 1.0),
            ("ok on retry", "tab:orange", lambda r: r.ok and r.tries > 1, 0.5),
            ("failed", "tab:red", lambda r: not r.ok, 0.0),
        )
        for label, colour, pick, y in kinds:
            xs = [r.t - t0 for r in requests if pick(r)]
            ax_req.scatter(xs, [y] * len(xs), s=6, c=colour, label=f"{label} ({len(xs)})",
                           marker="|")  # fmt: skip
        ax_req.set_yticks([0.0, 0.5, 1.0], ["failed", "retry ok", "ok"])
        ax_req.set_ylim(-0.4, 1.4)
        ax_req.legend(loc="upper right", fontsize=7, ncols=3)
        ax_req.set_title(title, fontsize=10)

        rows = {h: i for i, h in enumerate(hosts)}
        for h, i in rows.items():
            held = [s.t - t0 for s in samples if h in s.reachable]
            cut = [s.t - t0 for s in samples if h in s.holders and h not in s.reachable]
            ax_vip.scatter(held, [i] * len(held), s=8, c="tab:blue", marker="s")
            ax_vip.scatter(cut, [i] * len(cut), s=8, c="tab:gray", marker="x")
        ax_vip.set_yticks(list(rows.values()), list(rows.keys()))
        ax_vip.set_ylim(-0.6, len(rows) - 0.4)
        ax_vip.set_ylabel("VIP holder")
        ax_vip.set_xlabel("seconds since the break (blue: holds the VIP, grey x: holds it "
                          "with the cable out)")  # fmt: skip
        for ax in (ax_req, ax_vip):
            ax.axvline(0.0, color="black", lw=0.8, ls="--")
            ax.axvline(marks.restore_at - t0, color="tab:purple", lw=0.8, ls="--")
            ax.grid(axis="x", alpha=0.3)
        ax_req.text(0.0, 1.3, " break", fontsize=7, va="top")
        ax_req.text(marks.restore_at - t0, 1.3, " restore", fontsize=7, va="top")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path
