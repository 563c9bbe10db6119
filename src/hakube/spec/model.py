"""The cluster file as one validated pydantic model.

All defaults and field-level checks live here; cross-field checks live in `checks.py` so that
every problem in a file can be reported together. Code downstream of `load_cluster` trusts it.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Imported as a module: topology reads the model's enums at call time, so neither module needs
# the other's names while it is being imported.
from hakube.spec.topology import Topology

API_VERSION = "hakube/v1alpha1"

#: Kubernetes minor versions hakube knows how to drive (kubeadm config API chosen from these).
MIN_KUBERNETES = (1, 22)
MAX_KUBERNETES = (1, 34)

#: kube-apiserver's own port on every control-plane node; HAProxy must never take it there.
APISERVER_PORT = 6443

#: Labels in the kubernetes.io / k8s.io namespaces a kubelet may set on its own Node; kubelet
#: refuses to start with any other such label in --node-labels.
_KUBELET_LABELS = {
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
}
_KUBELET_LABEL_PREFIXES = ("kubelet.kubernetes.io", "node.kubernetes.io")
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_IFACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-")
_K8S_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_IMAGE_REPO_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:")


def invalid(message: str, fix: str) -> PydanticCustomError:
    """A field error that carries its own fix (the loader prints it as the `fix:` line)."""
    return PydanticCustomError("hakube", "{message}", {"message": message, "fix": fix})


def _bad_char(value: str, allowed: frozenset[str]) -> str | None:
    for i, ch in enumerate(value):
        if ch not in allowed:
            shown = repr(ch) if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
            where = f"character {i + 1}"
            if ch.isupper() and ch.lower() in allowed:
                return f"has the upper-case letter {shown} ({where}); only lower case is allowed"
            return f"has the character {shown} ({where}), which is not allowed here"
    return None


def _dns_label_problem(label: str) -> str | None:
    if not label:
        return "has an empty part (two dots in a row, or a dot at the start or end)"
    bad = _bad_char(label, _LABEL_CHARS)
    if bad:
        return bad
    if label[0] == "-" or label[-1] == "-":
        return f"has a part {label!r} that starts or ends with '-'"
    if len(label) > 63:
        return f"has a part {len(label)} characters long; at most 63 are allowed"
    return None


def hostname_problem(v: str) -> str | None:
    """What keeps `v` from being a lower-case RFC 1123 label (a host name), or None."""
    return "is empty" if not v else _dns_label_problem(v)


def _hostname(v: str, what: str, fix: str, why: str = "") -> str:
    """`v` if it is a lower-case RFC 1123 label, else an error naming `what` (and `why`)."""
    bad = hostname_problem(v)
    if bad:
        raise invalid(f"{what} {v!r} {bad}{why}", fix)
    return v


def _dns_name_problem(v: str) -> str | None:
    if len(v) > 253:
        return f"is {len(v)} characters long; a DNS name has at most 253"
    for label in v.split("."):
        bad = _dns_label_problem(label)
        if bad:
            return bad
    return None


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored. Neither is a value that
    pydantic would quietly convert: `true` is not the port 1, `10` is not the address 0.0.0.10."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_silent_conversion(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, bool | int | float) or info.field_name is None:
            return v
        kinds = _annotation_types(cls.model_fields[info.field_name].annotation)
        if isinstance(v, bool) and bool not in kinds and kinds & {int, float}:
            raise invalid(
                f"YAML reads this as the boolean {str(v).lower()}, where a number belongs",
                "write the number itself (yes/no/on/off/true/false are booleans in YAML)",
            )
        if kinds & _IP_TYPES:
            raise invalid(
                f"the number {v} is not written as an IP address",
                "write the address in dotted form, such as 10.0.0.11 (or 10.244.0.0/16 for a "
                "subnet)",
            )
        return v


_IP_TYPES = frozenset({ipaddress.IPv4Address, ipaddress.IPv4Network})


def _annotation_types(annotation: Any) -> frozenset[Any]:
    """The plain types in an annotation such as `int | None` or `IPv4Address`."""
    args = getattr(annotation, "__args__", None)
    if args is None or isinstance(annotation, type):
        return frozenset({annotation})
    return frozenset(t for a in args for t in _annotation_types(a))


def _checked_dns_name(v: str, what: str, fix: str) -> str:
    bad = _dns_name_problem(v)
    if bad:
        raise invalid(f"{v!r} {bad}: it is not a lower-case {what}", fix)
    return v


def _interface_name(v: str) -> str:
    fix = "use the NIC's name as `ip -br link` shows it on the host, e.g. eth0 or ens37"
    bad = "is empty" if not v else _bad_char(v, _IFACE_CHARS)
    if bad:
        raise invalid(f"{v!r} {bad}: it is not a Linux interface name", fix)
    if len(v) > 15:
        raise invalid(
            f"{v!r} is {len(v)} characters long; Linux interface names have at most 15", fix
        )
    return v


def _check_labels(v: dict[str, str]) -> dict[str, str]:
    """Kubernetes label syntax: `[prefix/]name`, name and value at most 63 of [A-Za-z0-9-_.]."""
    fix = (
        "label names and values are at most 63 letters, digits, '-', '_' or '.', starting and "
        "ending with a letter or digit; a key may have a DNS prefix (example.com/role)"
    )
    for key, value in v.items():
        prefix, slash, name = key.rpartition("/")
        if slash and (not prefix or _dns_name_problem(prefix)):
            raise invalid(f"label key {key!r}: the prefix {prefix!r} is not a DNS name", fix)
        for what, text in ((f"label key {key!r}", name), (f"the value of label {key!r}", value)):
            if not text:
                if text is value:
                    continue
                raise invalid(f"{what} has an empty name", fix)
            bad = _bad_char(text, _K8S_LABEL_CHARS)
            if bad is None and not (text[0].isalnum() and text[-1].isalnum()):
                bad = "does not start and end with a letter or digit"
            if bad is None and len(text) > 63:
                bad = f"is {len(text)} characters long (at most 63)"
            if bad:
                raise invalid(f"{what} {bad}" if text is name else f"{what} ({text!r}) {bad}", fix)
        if any(prefix == d or prefix.endswith("." + d) for d in ("kubernetes.io", "k8s.io")):
            allowed = key in _KUBELET_LABELS or any(
                prefix == p or prefix.endswith("." + p) for p in _KUBELET_LABEL_PREFIXES
            )
            if not allowed:
                raise invalid(
                    f"label key {key!r}: kubelet may not set labels in the kubernetes.io/k8s.io "
                    f"namespaces other than {', '.join(_KUBELET_LABEL_PREFIXES)} and a few "
                    "well-known keys",
                    "use your own prefix, or `kubectl label node` once the node joined",
                )
    return v


def _note(info: ValidationInfo, path: str, message: str) -> None:
    """Record a warning for the loader; validation contexts carry a list of them."""
    ctx = info.context
    if isinstance(ctx, dict) and isinstance(ctx.get("warnings"), list):
        ctx["warnings"].append((path, message))


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _normalise_network(value: Any, info: ValidationInfo, path: str) -> Any:
    if not isinstance(value, str):
        return value
    if "/" not in value and _is_address(value):
        raise invalid(
            f"{value!r} has no prefix length, so it would mean the single address {value}/32",
            f"write the subnet with its size, e.g. {value}/16",
        )
    try:
        strict = ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return value  # let pydantic report the malformed value
        _note(
            info,
            path,
            f"{value!r} has host bits set; using {loose} (write {loose} to silence this warning)",
        )
        return str(loose)
    return str(strict)


class Role(StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"
    LB = "lb"
    ETCD = "etcd"


class EndpointMode(StrEnum):
    VIP = "vip"  # keepalived VRRP address in front of HAProxy on the LB hosts (the tutorial)
    CLOUD_LB = "cloud-lb"  # an external L4 balancer that cannot hairpin (Alibaba SLB)
    LOCAL_LB = "local-lb"  # HAProxy on every node on 127.0.0.1, no VIP at all
    NONE = "none"  # a single control-plane node, no balancing


class SSHSettings(Strict):
    user: str = Field("root", description="Login user; a non-root user needs passwordless sudo.")
    port: int = Field(22, ge=1, le=65535)
    key_file: Path | None = Field(None, description="Private key; default: the agent/~/.ssh.")
    known_hosts: Path | None = Field(
        None, description="known_hosts file that pins host keys; default ~/.ssh/known_hosts."
    )
    sudo: bool | None = Field(None, description="Use sudo; default: when user is not root.")
    connect_timeout: float = Field(10.0, gt=0, le=300)

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @property
    def use_sudo(self) -> bool:
        return self.sudo if self.sudo is not None else self.user != "root"


class HostSSH(Strict):
    """Per-host overrides of the cluster-wide ssh settings."""

    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    key_file: Path | None = None
    sudo: bool | None = None

    @field_validator("key_file")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None


class Host(Strict):
    name: str = Field(description="Hostname (RFC 1123 label, lower case); set on the host.")
    address: ipaddress.IPv4Address = Field(description="Address the cluster uses for this host.")
    roles: list[Role] = Field(min_length=1)
    ssh: HostSSH | None = None
    ssh_address: ipaddress.IPv4Address | None = Field(
        None, description="Address to reach the host over SSH, if not `address`."
    )
    interface: str | None = Field(
        None, description="NIC that carries `address` (for the VIP); default endpoint.interface."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels kubelet registers the node with (kubelet --node-labels).",
    )

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        return _hostname(
            v,
            "host name",
            "use only a-z, 0-9 and '-' (at most 63), starting and ending with a letter or "
            "digit, e.g. cp1",
            "; kubeadm registers it as the Node name, which must be a lower-case RFC 1123 label",
        )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)

    @field_validator("interface")
    @classmethod
    def _iface(cls, v: str | None) -> str | None:
        return None if v is None else _interface_name(v)

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, v: list[Role]) -> list[Role]:
        return list(dict.fromkeys(v))

    def has(self, role: Role) -> bool:
        return role in self.roles


class VRRP(Strict):
    version: Literal[2, 3] = Field(3, description="VRRPv3 allows sub-second adverts.")
    router_id: int = Field(
        51, description="virtual_router_id, 1-255, unique on the L2 segment.", ge=1, le=255
    )
    advert_interval: float = Field(
        0.05,
        description="Seconds between adverts (VRRPv2: whole seconds only). Backups take over "
        "after `down_timer_adverts` missed adverts plus a skew, so the two set the failover "
        "gap: 5 x 0.05 s waits as long as the RFC's 3 x 0.08 s, which kept the drill's longest "
        "host-down/isolate gap under 0.3 s (3 x 0.1 gave up to 0.36 s on a busy lab).",
        gt=0,
        le=255,
    )
    down_timer_adverts: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Missed adverts after which a backup takes the VIP (keepalived's "
        "down_timer_adverts; the VRRP RFCs fix it at 3, the same on every LB host here). "
        "Default: 5 for sub-second adverts, 3 (the RFC's) for whole seconds. A lost "
        "advert is the only way a healthy owner looks dead: with 2 % packet loss each way an "
        "advert is lost 4 % of the time, and 3 in a row happen about 3 times an hour per backup "
        "at 0.08 s (the lab's lossy soak: VIP moves); 5 in a row at 0.05 s, under once in 100 "
        "hours.",
    )
    unicast: bool = Field(False, description="Unicast peers instead of multicast (clouds).")
    preempt: bool = Field(
        True,
        description="A recovered higher-priority host takes the VIP back, `preempt_delay` after "
        "it starts or its link comes back. `false` (nopreempt) leaves the VIP where it moved: "
        "one move per incident instead of two, and a failing health script puts the owner in "
        "FAULT. Chosen from the lab (`bench/drill.py --preemption`, 5 interleaved runs each, "
        "load 9-18): restore gap 0.05 s median (0.05-0.06) with preemption, 0.06 s (0.05-0.07) "
        "without; heal 0.05 s (0.04-0.06) and 0.05 s (0.04-0.05); no failed request after one "
        "retry in any run. The handback costs clients nothing measurable, so the predictable "
        "owner stays the default.",
    )
    preempt_delay: int = Field(
        3,
        ge=0,
        le=1000,
        description="With `preempt: true`: seconds a host that starts, or whose link comes back, "
        "waits before it takes the VIP back, so its HAProxy checks settle first (the drill's "
        "heal: 22 failed requests without it).",
    )
    track_haproxy_state: bool = Field(
        True,
        description="Follow HAProxy's systemd state through a file (inotify): reacts at once.",
    )
    check_interval: int = Field(1, ge=1, le=60, description="Seconds between health scripts.")
    check_fall: int = Field(2, ge=1, le=10)
    check_rise: int = Field(2, ge=1, le=10)
    check_timeout: int = Field(
        2,
        ge=1,
        le=60,
        description="Seconds one health script may take: a lost SYN costs 1 s before its resend.",
    )
    check_init_fail: bool = Field(
        False,
        description="A starting host counts as failed until its health script passed `rise` "
        "times. Off by default: keepalived also re-arms it on every reload, so a live config "
        "change on the VIP owner would move the VIP (10 failed requests in the lab's removal "
        "of an owner); `preempt_delay` already keeps a starting host from taking the VIP early.",
    )
    rt_priority: int | None = Field(
        50,
        ge=1,
        le=99,
        description="Run keepalived with this real-time priority (SCHED_RR, from a drop-in of "
        "its systemd unit; the health script runs normally), so adverts keep their pace on busy "
        "cores (null: normal scheduling). A starved owner sends late and a starved backup "
        "times out early, and either moves the VIP: on the lab (2 cores, load 30-100, 2 % loss) "
        "10 minutes gave 5 false takeovers with normal scheduling and 3 missed adverts at "
        "0.08 s, none with 50 and 5 at 0.05 s. Not keepalived's own vrrp_rt_priority: with it "
        "the kernel killed the VRRP process on every config reload where keepalived may not "
        "raise its RLIMIT_RTTIME (no CAP_SYS_RESOURCE, as in containers), and the respawned "
        "one gave the VIP away.",
    )
    check_weight: int | None = Field(
        None,
        description="Weight of the health script; default: enough to move the VIP on one failure "
        "(or 0, i.e. FAULT, with preempt disabled).",
        ge=-253,
        le=253,
    )
    garp_master_refresh: int = Field(
        10, ge=0, le=3600, description="Re-announce the VIP every N seconds (0: never)."
    )

    @property
    def resolved_down_timer_adverts(self) -> int:
        """How many adverts a backup misses before it takes over (the default resolved)."""
        if self.down_timer_adverts is not None:
            return self.down_timer_adverts
        return 5 if self.advert_interval < 1 else 3


class HAProxySettings(Strict):
    check_inter_ms: int = Field(1000, ge=100, le=60000)
    check_fastinter_ms: int = Field(250, ge=50, le=60000)
    check_downinter_ms: int = Field(1000, ge=100, le=60000)
    check_fall: int = Field(2, ge=1, le=20)
    check_rise: int = Field(2, ge=1, le=20)
    connect_timeout_ms: int = Field(
        100,
        ge=10,
        le=60000,
        description="Time to connect to an apiserver before retrying on another one: a dead "
        "one costs a client this much, not a failed request (5000 ms failed 12 requests per "
        "host-down in the drill).",
    )
    retries: int = Field(3, ge=0, le=10, description="Connection retries, each on another server.")
    observe_errors: Literal["off", "mark-down", "sudden-death", "fail-check"] = Field(
        "off",
        description="What a failed client connection to an apiserver does to that server "
        "(HAProxy `observe layer4` ... `on-error`): mark-down takes it out at once.",
    )
    tunnel_timeout: str = Field("1h", pattern=r"^\d+(ms|s|m|h|d)$")
    maxconn: int = Field(
        8000,
        ge=100,
        le=1_000_000,
        description="Global connection limit; HAProxy needs about 2 file descriptors per "
        "connection and refuses to start when the host's open-files limit is lower.",
    )
    stats_page: bool = Field(False, description="Serve the HTML stats page (password generated).")
    stats_bind: str = Field("127.0.0.1:9000", pattern=r"^[0-9a-zA-Z.:\[\]*-]+:\d{1,5}$")


class Endpoint(Strict):
    mode: EndpointMode = EndpointMode.VIP
    vip: ipaddress.IPv4Address | None = Field(None, description="The VRRP address (mode vip).")
    name: str | None = Field(
        None,
        description="DNS name of the API (controlPlaneEndpoint); written to /etc/hosts. "
        "Default: api.<cluster name>.hakube.internal.",
    )
    port: int = Field(
        8443, ge=1, le=65535, description="HAProxy frontend port (never 6443 on shared hosts)."
    )
    interface: str = Field("eth0", description="Default NIC for the VIP and VRRP adverts.")
    lb_address: ipaddress.IPv4Address | None = Field(
        None, description="Address of the external balancer (mode cloud-lb)."
    )
    lb_port: int = Field(6443, ge=1, le=65535, description="Port of the external balancer.")
    vrrp: VRRP = Field(default_factory=VRRP)
    haproxy: HAProxySettings = Field(default_factory=HAProxySettings)

    @field_validator("name")
    @classmethod
    def _dns(cls, v: str | None) -> str | None:
        if v is None:
            return v
        fix = "use a name such as api.example.internal (a-z, 0-9, '-' and dots)"
        return _checked_dns_name(v, "DNS name", fix)

    @field_validator("interface")
    @classmethod
    def _iface(cls, v: str) -> str:
        return _interface_name(v)


class CNIPlugin(StrEnum):
    FLANNEL = "flannel"
    CALICO = "calico"
    NONE = "none"


_CNI_DEFAULTS: dict[CNIPlugin, tuple[str, str]] = {
    CNIPlugin.FLANNEL: (
        "v0.25.7",
        "https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml",
    ),
    CNIPlugin.CALICO: (
        "v3.28.2",
        "https://raw.githubusercontent.com/projectcalico/calico/{version}/manifests/calico.yaml",
    ),
}


class CNI(Strict):
    plugin: CNIPlugin = CNIPlugin.FLANNEL
    version: str | None = Field(None, description="Manifest version; default per plugin.")
    manifest: str | None = Field(
        None, description="URL or local file of the manifest; default the upstream release."
    )

    @property
    def resolved_version(self) -> str | None:
        if self.plugin is CNIPlugin.NONE:
            return None
        return self.version or _CNI_DEFAULTS[self.plugin][0]

    @property
    def resolved_manifest(self) -> str | None:
        if self.plugin is CNIPlugin.NONE:
            return None
        if self.manifest:
            return self.manifest
        return _CNI_DEFAULTS[self.plugin][1].format(version=self.resolved_version)


class Runtime(StrEnum):
    CONTAINERD = "containerd"
    DOCKER = "docker"


class KubeadmAPI(StrEnum):
    V1BETA2 = "v1beta2"
    V1BETA3 = "v1beta3"
    V1BETA4 = "v1beta4"


class Kubernetes(Strict):
    version: str = Field("1.30.4", description="Kubernetes version, 1.22 to 1.34 (e.g. 1.30.4).")
    config_api: KubeadmAPI | None = Field(
        None,
        description="kubeadm config API; default from the version (v1beta3 <1.31, else v1beta4).",
    )
    image_repository: str = Field(
        "registry.k8s.io", description="Registry (and path) of the Kubernetes images, no scheme."
    )
    dns_domain: str = Field("cluster.local")
    runtime: Runtime = Runtime.CONTAINERD
    cni: CNI = Field(default_factory=CNI)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        m = VERSION_RE.match(v)
        if not m:
            raise invalid(
                f"{v!r} is not a Kubernetes release: it must look like 1.30.4 (major.minor.patch)",
                'write the full release in quotes, e.g. version: "1.30.4"',
            )
        minor = (int(m[1]), int(m[2]))
        if not MIN_KUBERNETES <= minor <= MAX_KUBERNETES:
            lo = "{}.{}".format(*MIN_KUBERNETES)
            hi = "{}.{}".format(*MAX_KUBERNETES)
            raise invalid(
                f"{v} is outside the supported range {lo} to {hi}",
                f"choose a release from {lo} to {hi}, e.g. 1.30.4",
            )
        return f"{m[1]}.{m[2]}.{m[3]}"

    @field_validator("dns_domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        fix = "keep the default cluster.local unless you need another"
        return _checked_dns_name(v, "DNS domain", fix)

    @field_validator("image_repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        fix = "write the registry and path only, e.g. registry.k8s.io or registry.example.com/k8s"
        scheme, sep, rest = v.partition("://")
        if sep:
            raise invalid(
                f"{v!r} starts with the URL scheme '{scheme}://'; container image names have none",
                f"drop '{scheme}://': write {rest.rstrip('/')!r}",
            )
        bad = "is empty" if not v else _bad_char(v, _IMAGE_REPO_CHARS)
        if bad:
            raise invalid(f"{v!r} {bad}", fix)
        return v

    @property
    def minor(self) -> tuple[int, int]:
        major, minor, _ = self.version.split(".")
        return int(major), int(minor)

    @property
    def kubeadm_api(self) -> KubeadmAPI:
        if self.config_api is not None:
            return self.config_api
        return KubeadmAPI.V1BETA4 if self.minor >= (1, 31) else KubeadmAPI.V1BETA3

    @property
    def package_channel(self) -> str:
        """pkgs.k8s.io channel, one per minor release (e.g. v1.30)."""
        return "v{}.{}".format(*self.minor)


class Network(Strict):
    pod_subnet: ipaddress.IPv4Network = Field(ipaddress.IPv4Network("10.244.0.0/16"))
    service_subnet: ipaddress.IPv4Network = Field(ipaddress.IPv4Network("10.96.0.0/12"))
    host_subnet: ipaddress.IPv4Network | None = Field(
        None, description="The hosts' subnet; default: the smallest /24-or-wider holding them all."
    )

    @field_validator("pod_subnet", "service_subnet", "host_subnet", mode="before")
    @classmethod
    def _normalise(cls, v: Any, info: ValidationInfo) -> Any:
        return _normalise_network(v, info, f"network.{info.field_name}")


class PackageManager(StrEnum):
    AUTO = "auto"
    APT = "apt"
    YUM = "yum"


class Packages(Strict):
    manager: PackageManager = Field(PackageManager.AUTO, description="auto: from /etc/os-release.")
    repository: str | None = Field(
        None,
        description="Mirror for the OS packages (apt source URL or yum baseurl); "
        "default: leave the host's own repositories as they are.",
    )
    kubernetes_repository: str | None = Field(
        None,
        description="Kubernetes package repository; default pkgs.k8s.io for the chosen minor.",
    )
    gpg_check: bool = True

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "offline_dir" in data:
            raise ValueError(
                "offline_dir was removed: no hakube version ever installed from it; point "
                "packages.repository and packages.kubernetes_repository at mirrors the hosts "
                "reach instead"
            )
        return data


class EtcdTopology(StrEnum):
    STACKED = "stacked"
    EXTERNAL = "external"


class Etcd(Strict):
    topology: EtcdTopology = EtcdTopology.STACKED
    hosts: list[str] | None = Field(
        None, description="Hosts of an external etcd; default: the control-plane nodes."
    )
    data_dir: str = Field("/var/lib/etcd", pattern=r"^/[^\s]*$")
    client_port: int = Field(2379, ge=1, le=65535)
    peer_port: int = Field(2380, ge=1, le=65535)


class Cluster(Strict, Topology):
    api_version: Literal["hakube/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Cluster"]
    name: str = Field(description="Cluster name; names the state directory.")
    ssh: SSHSettings = Field(default_factory=SSHSettings)
    hosts: list[Host] = Field(min_length=1)
    endpoint: Endpoint = Field(default_factory=Endpoint)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    network: Network = Field(default_factory=Network)
    etcd: Etcd = Field(default_factory=Etcd)
    packages: Packages = Field(default_factory=Packages)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _hostname(
            v, "cluster name", "use a lower-case DNS label: a-z, 0-9 and '-', e.g. prod-1"
        )
