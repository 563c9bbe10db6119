"""keepalived (VRRP) for the VIP in front of HAProxy, on the LB hosts in endpoint mode `vip`."""

from __future__ import annotations

from hakube.render.base import RenderedFile, Validation, render_template
from hakube.render.haproxy import STATS_SOCKET
from hakube.secrets import Secrets
from hakube.spec.model import Cluster, EndpointMode, Host

KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
CHECK_SCRIPT = "/etc/keepalived/check_apiserver.sh"
HAPROXY_DROPIN = "/etc/systemd/system/haproxy.service.d/hakube-vrrp.conf"
#: keepalived's scheduling (`rt_priority`), as a drop-in of its unit.
SCHED_DROPIN = "/etc/systemd/system/keepalived.service.d/hakube-sched.conf"
TMPFILES_CONF = "/etc/tmpfiles.d/hakube.conf"
TRACK_DIR = "/run/hakube"
#: Written on every LB host once the first control plane is initialised (recorded): from then
#: on "every backend DOWN" means this host lost its API servers, and the check must fail.
INIT_MARKER = "/etc/hakube/initialised"
#: "1" while HAProxy is stopped, "0" while it runs; tracked with weight 0 (FAULT when nonzero).
TRACK_FILE = f"{TRACK_DIR}/haproxy-down"

_TOP_PRIORITY = 200
_DEFAULT_STEP = 10
#: 255 means "address owner", which trackers cannot lower.
_MAX_PRIORITY = 254
#: VRRPv2 authentication is truncated to 8 characters by keepalived anyway.
AUTH_PASS_LENGTH = 8


def vrrp_priorities(count: int, weight: int | None = None) -> list[int]:
    """Distinct, descending priorities for `count` hosts in list order.

    The step is 10 (200, 190, 180, ...) unless an explicit tracking weight is too small for that
    spread: then the step shrinks so that |weight| still exceeds highest - lowest whenever that
    is possible at all (|weight| >= count).
    """
    if count < 1:
        return []
    top = min(max(_TOP_PRIORITY, count), _MAX_PRIORITY)
    if count == 1:
        return [top]
    step = min(_DEFAULT_STEP, (top - 1) // (count - 1))
    if weight:
        step = min(step, max(1, (abs(weight) - 1) // (count - 1)))
    return [top - i * step for i in range(count)]


def default_check_weight(priorities: list[int], preempt: bool) -> int:
    """Weight that moves the VIP on any single failure.

    With preemption a negative weight larger than the whole priority span does it. With
    nopreempt keepalived ignores weights, so only FAULT (weight 0) gives the VIP away.
    """
    if not preempt or not priorities:
        return 0
    return -(max(priorities) - min(priorities) + 1)


def check_weight(cluster: Cluster) -> int:
    vrrp = cluster.endpoint.vrrp
    if vrrp.check_weight is not None:
        return vrrp.check_weight
    return default_check_weight(vrrp_priorities(len(cluster.lb_hosts)), vrrp.preempt)


def priorities(cluster: Cluster) -> dict[str, int]:
    """VRRP priority of every LB host, by name."""
    lbs = cluster.lb_hosts
    prios = vrrp_priorities(len(lbs), cluster.endpoint.vrrp.check_weight)
    return {h.name: p for h, p in zip(lbs, prios, strict=True)}


def _advert_int(value: float, version: int) -> str:
    if version == 2 or value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0")


def scheduling_command(rt_priority: int | None) -> str:
    """Gives the running keepalived processes the scheduling `SCHED_DROPIN` gives them at their
    next start (a restart would give the VIP away). A process gone meanwhile is no failure."""
    policy = f"-r -p {rt_priority}" if rt_priority else "-o -p 0"
    return f"for p in $(pgrep -x keepalived); do chrt {policy} $p || ! kill -0 $p || exit 1; done"


def render_keepalived(cluster: Cluster, host: Host, secrets: Secrets) -> list[RenderedFile]:
    if cluster.endpoint.mode is not EndpointMode.VIP:
        return []
    if host.name not in {h.name for h in cluster.lb_hosts}:
        return []
    ep = cluster.endpoint
    vrrp = ep.vrrp
    assert ep.vip is not None  # checks.py guarantees it in mode vip
    prios = priorities(cluster)
    weight = check_weight(cluster)
    track_file = TRACK_FILE if vrrp.track_haproxy_state else None
    peers = (
        [str(h.address) for h in cluster.lb_hosts if h.name != host.name] if vrrp.unicast else []
    )
    conf = render_template(
        "keepalived.conf.j2",
        cluster_name=cluster.name,
        host_name=host.name,
        # The settings as they are: the template reads the names the cluster file uses.
        vrrp=vrrp,
        check_script=CHECK_SCRIPT,
        check_weight=weight,
        priority_span=max(prios.values()) - min(prios.values()),
        track_file=track_file,
        interface=cluster.interface_of(host),
        priority=prios[host.name],
        advert_int=_advert_int(vrrp.advert_interval, vrrp.version),
        # VRRPv3 has no authentication; keepalived ignores the block there.
        auth_pass=secrets.vrrp_password[:AUTH_PASS_LENGTH] if vrrp.version == 2 else None,
        address=str(host.address),
        unicast_peers=peers,
        vip=str(ep.vip),
        prefix=cluster.host_subnet.prefixlen,
        sched_dropin=SCHED_DROPIN,
    )
    return [
        RenderedFile(
            path=KEEPALIVED_CONF,
            content=conf,
            mode=0o600,
            secret=vrrp.version == 2,
            validate=Validation.run("keepalived", "-t", "-f"),
            reload="keepalived",
        ),
        RenderedFile(
            path=CHECK_SCRIPT,
            content=render_template(
                "check_apiserver.sh.j2",
                port=ep.port,
                stats_socket=STATS_SOCKET,
                init_marker=INIT_MARKER,
                timeout=vrrp.check_timeout,
                # Only FAULT (weight 0) can leave nobody holding the VIP.
                all_down_passes=weight == 0,
                realtime=bool(vrrp.rt_priority),
            ),
            # keepalived runs the script afresh every interval: a change needs no reload.
            mode=0o700,
        ),
        RenderedFile(
            path=SCHED_DROPIN,
            content=render_template(
                "keepalived-sched.conf.j2",
                rt_priority=vrrp.rt_priority,
                advert_int=_advert_int(vrrp.advert_interval, vrrp.version),
            ),
            daemon_reload=True,
        ),
    ]


def render_haproxy_tracking(cluster: Cluster, host: Host) -> list[RenderedFile]:
    """HAProxy's side of `track_haproxy_state`: a drop-in and a tmpfiles entry that keep
    `TRACK_FILE` saying whether HAProxy runs (keepalived tracks the file)."""
    if (
        cluster.endpoint.mode is not EndpointMode.VIP
        or not cluster.endpoint.vrrp.track_haproxy_state
    ):
        return []
    if host.name not in {h.name for h in cluster.lb_hosts}:
        return []
    ctx = {"track_file": TRACK_FILE, "track_dir": TRACK_DIR}
    return [
        RenderedFile(
            path=HAPROXY_DROPIN,
            content=render_template("haproxy-vrrp.conf.j2", **ctx),
            daemon_reload=True,
        ),
        RenderedFile(
            path=TMPFILES_CONF,
            content=render_template("tmpfiles-hakube.conf.j2", **ctx),
        ),
    ]
