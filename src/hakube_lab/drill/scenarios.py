"""The drill's catalogue: each scenario (what it breaks, what it must show) and the run settings.

A new scenario is an entry here plus its break/restore pair in `actions.py`; what it must show
is checked in `invariants.py`, whether a real site may get it in `policy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass


class DrillError(Exception):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    #: The VIP must move to a healthy LB host.
    expect_move: bool = False
    #: Requests must fail during the break (readiness lost), then recover.
    expect_failures: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("haproxy-down", "systemctl stop haproxy on the VIP owner", expect_move=True),
        Scenario("keepalived-down", "systemctl stop keepalived on the VIP owner", expect_move=True),
        Scenario(
            "host-down",
            "power the VIP owner off (cable out, every process killed)",
            expect_move=True,
        ),
        Scenario("isolate", "cut the VIP owner off the network", expect_move=True),
        Scenario("apiserver-down", "stop one apiserver backend (the owner's stand-in unit)"),
        Scenario("etcd-member-down", "stop one etcd member (the owner's): quorum kept"),
        Scenario(
            "etcd-two-down",
            "stop two etcd members: no quorum, readiness fails",
            expect_failures=True,
        ),
    )
}
SOAK = "soak"
ALL = [*SCENARIOS, SOAK]


@dataclass
class Settings:
    rate: float = 50.0
    timeout: float = 0.2
    retries: int = 1
    vip_interval: float = 0.05
    baseline_s: float = 1.5
    #: Break phase without an expected move: long enough for HAProxy to mark a backend down.
    observe_s: float = 6.0
    break_max_s: float = 25.0
    restore_max_s: float = 120.0
    stable_s: float = 2.0


def slug(text: str) -> str:
    """A configuration's name as a directory/file name."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
