"""The tutorial's own keepalived.conf and haproxy.cfg, for the drill's comparison column.

`--compare-tutorial` must drill what tutorial users run, not hakube with five settings swapped:
the tutorial's `killall -0 haproxy` check every 3 s with weight -11, priorities 100/90 with
MASTER on the first host and BACKUP on the others, VRRPv2 with a password, advert 1 s; HAProxy
with plain TCP checks and roundrobin. Adapted only where a copy cannot work as is: addresses,
interface, the frontend port the cluster's endpoint uses, generated passwords instead of the
literal ones (and, on the lab, `pkill -0 -x` for `killall -0`: psmisc is not in its mirror).
"""

from __future__ import annotations

import shlex

import jinja2

from hakube.render.base import RenderedFile, Validation, environment
from hakube.render.haproxy import HAPROXY_CFG
from hakube.render.keepalived import AUTH_PASS_LENGTH, KEEPALIVED_CONF
from hakube.secrets import Secrets
from hakube.spec.model import APISERVER_PORT, Cluster, Host
from hakube_lab.drill.scenarios import DrillError
from hakube_lab.lab import Lab

#: The tutorial's health check, word for word.
TUTORIAL_CHECK = "/usr/bin/killall -0 haproxy"
#: The same test without psmisc: signal 0 to a process named exactly haproxy.
LAB_CHECK = "/usr/bin/pkill -0 -x haproxy"
#: The tutorial's stats socket (hakube's is /run/haproxy/admin.sock).
TUTORIAL_STATS_SOCKET = "/var/lib/haproxy/stats"
MASTER_PRIORITY = 100
BACKUP_PRIORITY = 90


def _env() -> jinja2.Environment:
    return environment("hakube_lab.drill")


def render_tutorial_lb(
    cluster: Cluster, host: Host, secrets: Secrets, *, process_check: str = TUTORIAL_CHECK
) -> list[RenderedFile]:
    """The tutorial's two files for one LB host (none for a host without the LB role)."""
    lbs = [h.name for h in cluster.lb_hosts]
    if host.name not in lbs or cluster.endpoint.vip is None:
        return []
    first = host.name == lbs[0]
    keepalived = (
        _env()
        .get_template("tutorial-keepalived.conf.j2")
        .render(
            host_name=host.name,
            process_check=process_check,
            tutorial_check=TUTORIAL_CHECK,
            state="MASTER" if first else "BACKUP",
            priority=MASTER_PRIORITY if first else BACKUP_PRIORITY,
            interface=cluster.interface_of(host),
            auth_pass=secrets.vrrp_password[:AUTH_PASS_LENGTH],
            vip=str(cluster.endpoint.vip),
        )
    )
    haproxy = (
        _env()
        .get_template("tutorial-haproxy.cfg.j2")
        .render(
            host_name=host.name,
            port=cluster.endpoint.port,
            stats_socket=TUTORIAL_STATS_SOCKET,
            servers=cluster.control_planes,
            apiserver_port=APISERVER_PORT,
            stats_password=secrets.stats_password,
        )
    )
    # Both carry a generated password; each is validated by its own program before it is used.
    files = (
        (HAPROXY_CFG, haproxy, ("haproxy", "-c", "-f"), "haproxy"),
        (KEEPALIVED_CONF, keepalived, ("keepalived", "-t", "-f"), "keepalived"),
    )
    return [
        RenderedFile(
            path, text, mode=0o600, secret=True, validate=Validation.run(*check), reload=unit
        )
        for path, text, check, unit in files
    ]


def install_tutorial(cluster: Cluster, lab: Lab, secrets: Secrets) -> None:
    """Put the tutorial's files on every LB host of the lab and restart both services.

    Each file is validated on the host before it replaces the live one. `apply --only lb`
    puts hakube's files back (their content differs, so it rewrites and reloads them).
    """
    for h in cluster.lb_hosts:
        for f in render_tutorial_lb(cluster, h, secrets, process_check=LAB_CHECK):
            tmp = f"{f.path}.hakube-tutorial"
            check = f.validate.command(tmp) if f.validate is not None else "true"
            script = (
                f"umask 077 && cat > {shlex.quote(tmp)} && chmod {f.mode:o} {shlex.quote(tmp)}"
                f" && {check} >/dev/null 2>&1 && mv {shlex.quote(tmp)} {shlex.quote(f.path)}"
                f" || {{ rm -f {shlex.quote(tmp)}; exit 1; }}"
            )
            res = lab.run(h.name, script, check=False, input_text=f.content, timeout=60)
            if res.returncode != 0:
                raise DrillError(f"{h.name}: the tutorial's {f.path} was refused: {res.stderr}")
    for h in cluster.lb_hosts:
        res = lab.run(h.name, "systemctl restart haproxy keepalived", check=False, timeout=60)
        if res.returncode != 0:
            raise DrillError(f"{h.name}: restarting haproxy and keepalived failed: {res.stderr}")


def with_preempt(cluster: Cluster, preempt: bool) -> Cluster:
    """The cluster with keepalived's preemption on or off, every other setting as it is."""
    ep = cluster.endpoint
    vrrp = ep.vrrp.model_copy(update={"preempt": preempt})
    return cluster.model_copy(update={"endpoint": ep.model_copy(update={"vrrp": vrrp})})


def as_drilled(cluster: Cluster) -> Cluster:
    """The cluster as the drill must judge it while the tutorial's files run: its MASTER
    preempts (no `nopreempt`), so a restore is only over once the VIP is back on it."""
    return with_preempt(cluster, True)
