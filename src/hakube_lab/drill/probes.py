"""The probe processes of one run (`probe.py` readyz, and the VIP watcher in vip mode) and their
logs.

The probes run as their own processes in the machine's root network namespace and reach the VIP
over the lab bridge like any client on that L2 segment would. That is outside every lab host, so
no scenario can kill, isolate or starve the observer by breaking the host it sits on, and it
shares CLOCK_MONOTONIC with the VIP watcher and with the marks taken by the runner. The VIP
watcher reads each host's network namespace directly (`ip -n`), which works while a host is
isolated, and it tells "holds the VIP" from "holds it with the cable out" (a powered-off host's
namespace keeps the address). Without a VIP the readyz probe runs inside a worker's network
namespace (`ip netns exec`: still a process of this machine, on the same clock); see `front`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from hakube.spec.model import Cluster
from hakube_lab.drill import probe as probe_module
from hakube_lab.drill.front import Front, front_of
from hakube_lab.drill.report import Request, VipSample, parse_requests, parse_vip
from hakube_lab.drill.scenarios import Settings
from hakube_lab.lab import Lab


class Probes:
    """The two probe processes of one scenario run, and their logs."""

    def __init__(self, lab: Lab, cluster: Cluster, raw: Path, settings: Settings,
                 cafile: Path | None, duration: float,
                 direct: str | None = None, front: Front | None = None) -> None:  # fmt: skip
        self.requests_file = raw.with_name(raw.name + "-requests.jsonl")
        self.vip_file = raw.with_name(raw.name + "-vip.jsonl")
        #: `direct`: the same probe against one host's own address, beside the one to the VIP.
        self.direct_file = raw.with_name(raw.name + "-direct-requests.jsonl")
        for f in (self.requests_file, self.vip_file, self.direct_file):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.unlink(missing_ok=True)
        script = probe_module.__file__
        front = front or front_of(cluster, lab)
        vip = str(cluster.endpoint.vip)
        py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

        def readyz(host: str, out: Path) -> list[str]:
            # The certificate is checked for the front's name wherever the probe connects.
            where = ["ip", "netns", "exec", front.netns] if front.netns else []
            cmd = [*where, py, script, "readyz", "--host", host, "--port", str(front.port),
                   "--rate", str(settings.rate), "--timeout", str(settings.timeout),
                   "--retries", str(settings.retries), "--duration", str(duration),
                   "--out", str(out), "--tls-name", front.tls_name]  # fmt: skip
            return cmd + (["--cafile", str(cafile)] if cafile is not None else [])

        cmds = [readyz(front.address, self.requests_file)]
        if direct:
            cmds.append(readyz(direct, self.direct_file))
        if front.has_vip:
            watch = [py, script, "vip", "--vip", vip, "--interval", str(settings.vip_interval),
                     "--duration", str(duration), "--out", str(self.vip_file)]  # fmt: skip
            for h in lab.hosts:
                if h.name in {x.name for x in cluster.lb_hosts}:
                    watch += ["--lab-host", f"{h.name}:{h.netns}:{h.veth}"]
            cmds.insert(0, watch)
        self.procs = [
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            for cmd in cmds
        ]

    def requests(self) -> list[Request]:
        return parse_requests(_lines(self.requests_file))

    def direct_requests(self) -> list[Request]:
        return parse_requests(_lines(self.direct_file))

    def samples(self) -> list[VipSample]:
        return parse_vip(_lines(self.vip_file))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
