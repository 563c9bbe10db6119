"""kube-apiservers on the control planes, stopped and started around work on etcd.

An apiserver runs on a control plane either as kubeadm's static pod (kubelet stops it when its
manifest leaves /etc/kubernetes/manifests and starts it when the manifest comes back) or as a
systemd unit named kube-apiserver (binary installs). Whichever the host has is the one stopped;
a host with neither is reported and left alone. They come back one host at a time, each
answering /readyz before the next starts, so clients never meet several cold apiservers at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import StrEnum

from hakube.phases.context import Context
from hakube.spec.model import APISERVER_PORT, Host

MANIFESTS = "/etc/kubernetes/manifests"
APISERVER_MANIFEST = "kube-apiserver.yaml"
APISERVER_UNIT = "kube-apiserver"
#: How long a stopped static pod's process may take to exit, and an apiserver to be ready.
GONE_SECONDS = 120
READY_SECONDS = 120

#: The local apiserver answers /readyz with 200.
READYZ_PROBE = f"curl -sfk --max-time 2 https://127.0.0.1:{APISERVER_PORT}/readyz >/dev/null"


def readyz_wait(seconds: int = READY_SECONDS, *, first: str | None = None) -> str:
    """Shell that waits (once a second, up to `seconds`) until the shell test `first` (if any)
    holds and the local apiserver answers /readyz; exit 1 when it never does."""
    test = f"{first} && " if first else ""
    return f"for i in $(seq {seconds}); do {test}{READYZ_PROBE} && exit 0; sleep 1; done; exit 1"


READYZ_WAIT = readyz_wait()


class ApiserverKind(StrEnum):
    STATIC_POD = "static-pod"
    UNIT = "unit"
    NONE = "none"


def move_aside(manifests: Sequence[str], aside: str) -> str:
    """Shell that takes static pod manifests out of kubelet's directory (absent ones skipped)."""
    names = " ".join(manifests)
    return (
        f"set -e; mkdir -p {aside}; chmod 700 {aside}; cd {MANIFESTS}; for m in {names}; do "
        f'[ ! -f "$m" ] || mv "$m" {aside}/; done'
    )


def move_back(manifests: Sequence[str], aside: str) -> str:
    names = " ".join(manifests)
    return (
        f'set -e; for m in {names}; do [ ! -f {aside}/"$m" ] || mv {aside}/"$m" {MANIFESTS}/; '
        f"done; rmdir {aside} 2>/dev/null || true"
    )


def wait_gone(process: str) -> str:
    """Shell that waits until no process of that exact name runs (the pod really stopped)."""
    return (
        f"for i in $(seq {GONE_SECONDS}); do pgrep -x {process} >/dev/null || exit 0; sleep 1; "
        f"done; echo '{process} still runs {GONE_SECONDS} s after its manifest left' >&2; exit 1"
    )


async def wait_readyz(ctx: Context, host: Host) -> None:
    await ctx.do.sh(host, "wait until the local apiserver answers /readyz", READYZ_WAIT)


FIND = (
    f"if [ -f {MANIFESTS}/{APISERVER_MANIFEST} ]; then echo {ApiserverKind.STATIC_POD}; "
    f"elif systemctl cat {APISERVER_UNIT}.service >/dev/null 2>&1; then echo {ApiserverKind.UNIT}; "
    f"else echo {ApiserverKind.NONE}; fi"
)


async def find_apiserver(ctx: Context, host: Host) -> ApiserverKind:
    res = await ctx.facts.read(host, FIND)
    try:
        return ApiserverKind(res.stdout.strip())
    except ValueError:
        return ApiserverKind.NONE


async def stop_apiservers(
    ctx: Context, hosts: Sequence[Host], aside: str
) -> dict[str, ApiserverKind]:
    """Stop every host's apiserver (together); returns how each ran (`none`: nothing there to
    stop), for `start_apiservers` and the caller's report."""
    kinds = dict(
        zip(
            [h.name for h in hosts],
            await asyncio.gather(*(find_apiserver(ctx, h) for h in hosts)),
            strict=True,
        )
    )

    async def stop(h: Host) -> None:
        kind = kinds[h.name]
        if kind is ApiserverKind.STATIC_POD:
            await ctx.do.sh(
                h,
                f"stop kube-apiserver (static pod: manifest moved to {aside})",
                f"{move_aside([APISERVER_MANIFEST], aside)}; {wait_gone('kube-apiserver')}",
            )
        elif kind is ApiserverKind.UNIT:
            await ctx.do.sh(
                h, "stop kube-apiserver (systemd unit)", f"systemctl stop {APISERVER_UNIT}"
            )

    await asyncio.gather(*(stop(h) for h in hosts))
    return kinds


async def start_apiservers(
    ctx: Context, hosts: Sequence[Host], kinds: dict[str, ApiserverKind], aside: str
) -> None:
    for h in hosts:
        kind = kinds.get(h.name, ApiserverKind.NONE)
        if kind is ApiserverKind.STATIC_POD:
            await ctx.do.sh(
                h,
                "start kube-apiserver (manifest put back)",
                move_back([APISERVER_MANIFEST], aside),
            )
        elif kind is ApiserverKind.UNIT:
            await ctx.do.sh(h, "start kube-apiserver", f"systemctl start {APISERVER_UNIT}")
        else:
            continue
        await wait_readyz(ctx, h)
