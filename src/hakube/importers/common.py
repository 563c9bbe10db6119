"""What both importers share: the notes on what mapped, host checks, ssh, and the output file."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hakube.importers.inventory import InventoryError, is_template
from hakube.spec import Loaded, load_cluster_text
from hakube.spec.model import (
    API_VERSION,
    APISERVER_PORT,
    MAX_KUBERNETES,
    MIN_KUBERNETES,
    VERSION_RE,
    hostname_problem,
)

#: hakube's frontend port when the source balanced on 6443 on hosts that also run kube-apiserver.
SAFE_LB_PORT = 8443

#: The first Kubernetes release without dockershim.
DOCKERSHIM_REMOVED = (1, 24)

#: The CNI plugins hakube installs itself; every other plugin becomes `none` plus a note.
HAKUBE_CNIS = ("calico", "flannel")


#: Ansible's connection variables that `ssh_settings` maps.
SSH_VARS = frozenset(
    {
        "ansible_user",
        "ansible_ssh_user",
        "ansible_port",
        "ansible_ssh_port",
        "ansible_ssh_private_key_file",
        "ansible_private_key_file",
        "ansible_become",
    }
)


@dataclass
class Notes:
    """What was mapped where and what was not (with why), for the file's header comments."""

    tool: str
    source: Path
    mapped: list[str] = field(default_factory=list)
    not_mapped: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)

    def map(self, what: str, target: str) -> None:
        self.mapped.append(f"{what} -> {target}")

    def skip(self, what: str, why: str) -> None:
        self.not_mapped.append(f"{what}: {why}")


@dataclass
class Imported:
    doc: dict[str, Any]
    notes: Notes


def roles_of(
    host: str,
    control_planes: list[str],
    workers: list[str],
    etcd: list[str],
    lbs: Sequence[str] = (),
) -> list[str]:
    """hakube roles from inventory groups; `etcd` only where it is not a control plane anyway."""
    found = [
        ("control-plane", host in control_planes),
        ("worker", host in workers),
        ("etcd", host in etcd and host not in control_planes),
        ("lb", host in lbs),
    ]
    return [role for role, yes in found if yes]


def check_host_name(name: str, source: Path, origin: str) -> str:
    """`name`, if the cluster file accepts it as a host name (the model's own check)."""
    bad = hostname_problem(name)
    if bad:
        raise InventoryError(
            source,
            f"host {name!r} ({origin}) is not a lower-case RFC 1123 label (it {bad}), which "
            "hakube needs because kubeadm registers the host as a Node by this name",
            "rename the host in the inventory (a-z, 0-9, '-', at most 63 characters, e.g. "
            "node1) and import again",
        )
    return name


def ipv4(value: Any, source: Path, what: str) -> str | None:
    """An IPv4 address literal, or None when unset; anything else is an error."""
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise InventoryError(
            source,
            f"{what} is {value!r}, not an IPv4 address",
            "hakube addresses hosts by IPv4 address: write the address (a DNS name or a "
            "template cannot be mapped)",
        ) from None


def kubernetes_version(value: Any, var: str, notes: Notes) -> str | None:
    """A version hakube supports, or None (with a note) so that hakube's default applies."""
    if value is None:
        notes.skip(var, "not set; hakube's default version is used (set kubernetes.version)")
        return None
    text = str(value).strip()
    m = VERSION_RE.match(text)
    if not m:
        notes.skip(f"{var}={text}", "not a plain version; set kubernetes.version yourself")
        return None
    minor = (int(m[1]), int(m[2]))
    if not MIN_KUBERNETES <= minor <= MAX_KUBERNETES:
        lo, hi = "{}.{}".format(*MIN_KUBERNETES), "{}.{}".format(*MAX_KUBERNETES)
        notes.skip(
            f"{var}={text}", f"outside hakube's range {lo}-{hi}; hakube's default version is used"
        )
        return None
    version = f"{m[1]}.{m[2]}.{m[3]}"
    notes.map(f"{var}={text}", f"kubernetes.version {version}")
    return version


def cni_plugin(value: Any, var: str, notes: Notes) -> str:
    plugin = str(value).strip().lower() if value is not None else ""
    if plugin in HAKUBE_CNIS:
        notes.map(f"{var}={plugin}", f"kubernetes.cni.plugin {plugin}")
        return plugin
    if not plugin:
        notes.skip(var, "not set; hakube's default CNI (flannel) is used")
        return "flannel"
    notes.skip(
        f"{var}={plugin}",
        "hakube installs calico or flannel only: kubernetes.cni.plugin is none, install "
        f"{plugin} yourself after apply (or switch to calico/flannel)",
    )
    return "none"


def runtime(value: Any, var: str, version: str | None, notes: Notes) -> str:
    """containerd, or docker where the Kubernetes version still has dockershim (< 1.24)."""
    name = str(value).strip() if value is not None else "containerd"
    old = version is not None and tuple(map(int, version.split(".")[:2])) < DOCKERSHIM_REMOVED
    if name == "containerd" or (name == "docker" and old):
        notes.map(f"{var}={name}", f"kubernetes.runtime {name}")
        return name
    why = "docker needs Kubernetes 1.23 or older (dockershim)" if name == "docker" else ""
    notes.skip(
        f"{var}={name}",
        (why + "; " if why else "") + "hakube uses containerd (or docker up to 1.23)",
    )
    return "containerd"


def network(value: Any, var: str, target: str, notes: Notes) -> str | None:
    if value is None:
        return None
    if is_template(value):
        notes.skip(f"{var}={value}", "a template hakube does not evaluate; hakube's default used")
        return None
    try:
        net = ipaddress.IPv4Network(str(value).strip(), strict=False)
    except ValueError:
        notes.skip(f"{var}={value}", "not an IPv4 network; hakube's default used")
        return None
    notes.map(f"{var}={value}", f"{target} {net}")
    return str(net)


def ssh_settings(
    hosts: dict[str, dict[str, Any]], names: dict[str, str], notes: Notes
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Cluster-wide ssh settings (the most common value) and per-host overrides.

    `names` maps inventory host → hakube host name. Ansible spells each setting two ways.
    """
    keys: dict[str, tuple[str, str]] = {
        "user": ("ansible_user", "ansible_ssh_user"),
        "port": ("ansible_port", "ansible_ssh_port"),
        "key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    }
    per_host: dict[str, dict[str, Any]] = {names[h]: {} for h in hosts}
    common: dict[str, Any] = {}
    for target, spellings in keys.items():
        values: dict[str, Any] = {}
        for inv_host, hv in hosts.items():
            for s in spellings:
                if hv.get(s) not in (None, ""):
                    values[names[inv_host]] = int(hv[s]) if target == "port" else str(hv[s])
                    break
        if not values:
            continue
        top, _ = Counter(values.values()).most_common(1)[0]
        if len(values) == len(hosts):
            common[target] = top
        for host, v in values.items():
            if target not in common or v != common[target]:
                per_host[host][target] = v
        notes.map(f"{spellings[0]}", f"ssh.{target}" + (" (per host)" if len(values) > 1 else ""))
    for inv_host, hv in hosts.items():
        if str(hv.get("ansible_become", "")).lower() in ("true", "yes", "1"):
            per_host[names[inv_host]]["sudo"] = True
    return common, {h: o for h, o in per_host.items() if o}


def balanced_port(port: int, lb_on_control_planes: bool, var: str, notes: Notes) -> int:
    """The frontend port hakube can really use; 6443 only where no apiserver shares the host."""
    if port == APISERVER_PORT and lb_on_control_planes:
        notes.skip(
            f"{var}={port}",
            f"HAProxy cannot listen on {APISERVER_PORT} beside kube-apiserver; hakube uses "
            f"{SAFE_LB_PORT} (controlPlaneEndpoint follows it)",
        )
        return SAFE_LB_PORT
    notes.map(f"{var}={port}", f"endpoint.port {port}")
    return port


def port_number(value: Any, source: Path, var: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise InventoryError(source, f"{var} is {value!r}, not a port number", "use 1-65535")
    return port


def note_the_rest(
    variables: dict[str, Any],
    handled: set[str],
    known: dict[str, str],
    apiserver_port_var: str,
    notes: Notes,
) -> None:
    """Known variables hakube does not carry over (with why), then every other one found."""
    for var, why in known.items():
        if var in variables:
            notes.skip(f"{var}={variables[var]}", why)
    if str(variables.get(apiserver_port_var, APISERVER_PORT)) != str(APISERVER_PORT):
        notes.skip(
            f"{apiserver_port_var}={variables[apiserver_port_var]}",
            f"kube-apiserver listens on {APISERVER_PORT} with hakube; the balancer port is "
            "endpoint.port",
        )
    notes.unread += [v for v in variables if v not in handled | SSH_VARS and v not in known]


@dataclass
class Settings:
    """Cluster-wide values read from an inventory, each as (variable name, raw value)."""

    version: tuple[str, Any]
    runtime: tuple[str, Any]
    cni: tuple[str, Any]
    dns_domain: tuple[str, Any]
    pod_subnet: tuple[str, Any]
    service_subnet: tuple[str, Any]


def cluster_sections(s: Settings, notes: Notes) -> dict[str, Any]:
    """The `kubernetes` and `network` sections of the cluster file, with notes."""
    k8s: dict[str, Any] = {}
    version = kubernetes_version(s.version[1], s.version[0], notes)
    if version:
        k8s["version"] = version
    k8s["runtime"] = runtime(s.runtime[1], s.runtime[0], version, notes)
    var, domain = s.dns_domain
    if isinstance(domain, str) and domain and not is_template(domain):
        k8s["dns_domain"] = domain.rstrip(".")
        notes.map(f"{var}={domain}", f"kubernetes.dns_domain {domain.rstrip('.')}")
    elif domain is not None:
        notes.skip(f"{var}={domain}", "not a plain domain; hakube's default cluster.local used")
    k8s["cni"] = {"plugin": cni_plugin(s.cni[1], s.cni[0], notes)}
    out: dict[str, Any] = {"kubernetes": k8s}
    net = {
        "pod_subnet": network(s.pod_subnet[1], s.pod_subnet[0], "network.pod_subnet", notes),
        "service_subnet": network(
            s.service_subnet[1], s.service_subnet[0], "network.service_subnet", notes
        ),
    }
    if any(net.values()):
        out["network"] = {k: v for k, v in net.items() if v}
    return out


def header(notes: Notes, command: str) -> str:
    lines = [
        f"# Imported by `{command}` from {notes.source} ({notes.tool}).",
        "# Review it, then: hakube validate -f FILE && hakube plan -f FILE",
        "#",
        "# Mapped:",
    ]
    for m in notes.mapped:
        lines += [f"#   {w}" for w in textwrap.wrap(m, width=94, subsequent_indent="    ")]
    if notes.not_mapped:
        lines += ["#", "# Not mapped (no hakube equivalent, or hakube does it differently):"]
        for n in notes.not_mapped:
            wrapped = textwrap.wrap(n, width=94, subsequent_indent="    ")
            lines += [f"#   {w}" for w in wrapped]
    if notes.unread:
        lines += ["#", "# Other variables found and not used:"]
        wrapped = textwrap.wrap(", ".join(sorted(set(notes.unread))), width=94)
        lines += [f"#   {w}" for w in wrapped]
    return "\n".join(lines) + "\n"


def to_yaml(doc: dict[str, Any]) -> str:
    """Top-level keys in the order of the examples; one flow-style line per host."""
    out: list[str] = []
    for key, value in doc.items():
        if key == "hosts":
            out.append("hosts:")
            for h in value:
                flow = yaml.safe_dump(h, default_flow_style=True, width=10_000, sort_keys=False)
                out.append(f"  - {flow.strip()}")
        else:
            out.append(
                yaml.safe_dump({key: value}, default_flow_style=False, sort_keys=False).rstrip()
            )
    return "\n".join(out) + "\n"


def new_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Cluster", "name": name}


def cluster_name(raw: str) -> str:
    """A cluster name hakube accepts, from a directory or file name."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:63].strip("-")
    return name or "imported"


def render_and_check(imported: Imported, command: str) -> tuple[str, Loaded]:
    """The file's text and its validation; a file that would not validate raises SpecError."""
    text = header(imported.notes, command) + to_yaml(imported.doc)
    return text, load_cluster_text(text, source=f"<{command}>")
