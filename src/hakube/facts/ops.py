"""Day-2 facts: VRRP state, HAProxy backends, etcd member status and certificate expiry.

Like the host facts, everything is read in ONE round trip per host: the script prints marked
sections that `parse_ops` turns into data. `status` appends the host facts script (units,
file checksums) to the same round trip, so a whole status costs one command per host.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hakube.facts.host import MARK, _sections

#: keepalived writes its state here on SIGUSR1 (`keepalived --signum=DATA`).
KEEPALIVED_DATA = "/tmp/keepalived.data"
KEEPALIVED_PID = "/run/keepalived.pid"
#: Where hakube (external etcd) and kubeadm keep the certificates `status` and `certs` read.
CERT_DIRS = ("/etc/etcd/pki", "/etc/kubernetes/pki")
#: kubeconfig files kubeadm writes with an embedded client certificate.
KUBECONFIGS = (
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/super-admin.conf",
    "/etc/kubernetes/controller-manager.conf",
    "/etc/kubernetes/scheduler.conf",
    "/etc/kubernetes/kubelet.conf",
)


@dataclass(frozen=True)
class OpsQuery:
    """What to read on one host; empty commands are left out of the script."""

    vrrp: bool = False
    haproxy_socket: str | None = None
    #: etcdctl command lines (without the subcommand) for the local member, if it runs etcd.
    etcdctl: str | None = None
    certs: bool = True
    #: `kubectl --kubeconfig ...` prefix when this host can reach the Kubernetes API.
    kubectl: str | None = None
    kubeadm_tokens: bool = False
    vip: str | None = None


def ops_script(q: OpsQuery) -> str:
    parts = [f"s() {{ printf '\\n{MARK}%s\\n' \"$1\"; }}"]
    if q.vip:
        parts.append(f"s vip; ip -o -4 addr show | grep -cF {shlex.quote(f'inet {q.vip}/')}")
    if q.vrrp:
        # SIGUSR1 makes keepalived dump its instances; the file appears a moment later.
        parts.append(
            f's vrrp; if p=$(cat {KEEPALIVED_PID} 2>/dev/null) && kill -0 "$p" 2>/dev/null; '
            f'then rm -f {KEEPALIVED_DATA}; kill -USR1 "$p"; for i in $(seq 50); do '
            f"grep -q 'Effective priority' {KEEPALIVED_DATA} 2>/dev/null && break; sleep 0.01; "
            f"done; grep -E '^ *(VRRP Instance|State|Effective priority|Priority) = ' "
            f"{KEEPALIVED_DATA} 2>/dev/null; fi"
        )
    if q.haproxy_socket:
        parts.append(
            f"s haproxy; echo 'show stat' | socat -t 1 stdio "
            f"unix-connect:{shlex.quote(q.haproxy_socket)} 2>/dev/null"
        )
    if q.etcdctl:
        e = q.etcdctl
        # Run side by side: a dead member costs one dial timeout, not four.
        parts.append(
            f"d=$(mktemp -d); ({e} endpoint status -w json >$d/st 2>$d/st.err &"
            f" {e} endpoint health -w json >$d/he 2>&1 &"
            f" {e} member list -w json >$d/ml 2>/dev/null &"
            f" {e} alarm list >$d/al 2>/dev/null & wait);"
            f" s etcd-status; cat $d/st; s etcd-status-error; tail -n 3 $d/st.err;"
            f" s etcd-health; cat $d/he; s etcd-members; cat $d/ml; s etcd-alarms; cat $d/al;"
            f" rm -rf $d"
        )
    if q.certs:
        dirs = " ".join(CERT_DIRS)
        confs = " ".join(KUBECONFIGS)
        parts.append(
            f"s certs; find {dirs} -name '*.crt' -type f 2>/dev/null | sort | while read -r f; do"
            f' printf "%s|%s\\n" "$f" "$(openssl x509 -noout -enddate -subject -nameopt'
            f' oneline -in "$f" 2>/dev/null | tr "\\n" "|")"; done;'
            f' for f in {confs}; do [ -f "$f" ] || continue; c=$(sed -n'
            f' \'s/^ *client-certificate-data: *//p\' "$f" | head -1); [ -n "$c" ] || continue;'
            f' printf "%s|%s\\n" "$f" "$(echo "$c" | base64 -d | openssl x509 -noout -enddate'
            f' -subject -nameopt oneline 2>/dev/null | tr "\\n" "|")"; done'
        )
    if q.kubeadm_tokens:
        parts.append("s tokens; kubeadm token list 2>/dev/null")
    if q.kubectl:
        parts.append(f"s nodes; {q.kubectl} get nodes -o json 2>/dev/null")
    parts.append("s ops-end")
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class VrrpInstance:
    name: str
    state: str  # MASTER, BACKUP, FAULT, INIT
    priority: int | None  # effective priority
    base_priority: int | None


@dataclass(frozen=True)
class EtcdLocal:
    """What the member on this host says about itself."""

    endpoint: str = ""
    member_id: str = ""
    leader_id: str = ""
    revision: int = 0
    raft_index: int = 0
    raft_term: int = 0
    db_size: int = 0
    learner: bool = False
    version: str = ""
    errors: tuple[str, ...] = ()
    healthy: bool = False
    error: str = ""

    @property
    def is_leader(self) -> bool:
        return bool(self.member_id) and self.member_id == self.leader_id


@dataclass(frozen=True)
class CertFact:
    path: str
    subject: str
    not_after: dt.datetime | None  # None when the file could not be read as a certificate

    def days_left(self, now: dt.datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400


@dataclass
class OpsFacts:
    vip_held: bool | None = None
    vrrp: list[VrrpInstance] = field(default_factory=list)
    keepalived_running: bool | None = None
    #: HAProxy's `show stat` CSV, parsed by the status workflow.
    haproxy_stat: str = ""
    haproxy_answered: bool = False
    etcd: EtcdLocal | None = None
    etcd_members: list[dict[str, Any]] = field(default_factory=list)
    etcd_alarms: list[str] = field(default_factory=list)
    certs: list[CertFact] = field(default_factory=list)
    tokens_text: str | None = None
    nodes: dict[str, str] | None = None


_KV_RE = re.compile(r"^\s*(VRRP Instance|State|Effective priority|Priority) = (.*)$")


def parse_keepalived_data(lines: Sequence[str]) -> list[VrrpInstance]:
    """The instance blocks of keepalived's SIGUSR1 dump (only the fields status shows)."""
    out: list[VrrpInstance] = []
    cur: dict[str, str] = {}

    def flush() -> None:
        if "VRRP Instance" in cur:
            out.append(
                VrrpInstance(
                    cur["VRRP Instance"],
                    cur.get("State", "UNKNOWN"),
                    _int(cur.get("Effective priority")),
                    _int(cur.get("Priority")),
                )
            )

    for line in lines:
        m = _KV_RE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip()
        if key == "VRRP Instance":
            flush()
            cur = {}
        # The first "Priority" of a block is the instance's; later ones belong to sub-blocks.
        cur.setdefault(key, value)
    flush()
    return out


def _int(v: str | None) -> int | None:
    try:
        return int(v.split()[0]) if v else None
    except ValueError:
        return None


def _json(lines: Sequence[str]) -> Any:
    text = "\n".join(lines).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _hex(v: object) -> str:
    return f"{int(v):x}" if isinstance(v, int) else str(v or "")


def parse_etcd(sec: dict[str, list[str]]) -> EtcdLocal:
    status = _json(sec.get("etcd-status", []))
    health = _json(sec.get("etcd-health", []))
    err = " ".join(line.strip() for line in sec.get("etcd-status-error", []) if line.strip())
    healthy = False
    if isinstance(health, list) and health:
        healthy = health[0].get("health") is True
        err = err or str(health[0].get("error", "") or "")
    if not isinstance(status, list) or not status:
        return EtcdLocal(healthy=healthy, error=err or "no answer from the local etcd member")
    st = status[0].get("Status", {})
    header = st.get("header", {})
    return EtcdLocal(
        endpoint=str(status[0].get("Endpoint", "")),
        member_id=_hex(header.get("member_id")),
        leader_id=_hex(st.get("leader")),
        revision=int(header.get("revision", 0)),
        raft_index=int(st.get("raftIndex", 0)),
        raft_term=int(st.get("raftTerm", 0)),
        db_size=int(st.get("dbSize", 0)),
        learner=bool(st.get("isLearner", False)),
        version=str(st.get("version", "")),
        errors=tuple(str(e) for e in st.get("errors", []) or []),
        healthy=healthy,
        error="" if healthy else err,
    )


def parse_cert_line(line: str) -> CertFact | None:
    path, _, rest = line.partition("|")
    if not path:
        return None
    not_after: dt.datetime | None = None
    subject = ""
    for part in rest.split("|"):
        if part.startswith("notAfter="):
            try:
                not_after = dt.datetime.strptime(
                    part.removeprefix("notAfter=").strip(), "%b %d %H:%M:%S %Y GMT"
                ).replace(tzinfo=dt.UTC)
            except ValueError:
                not_after = None
        elif part.startswith("subject="):
            subject = part.removeprefix("subject=").strip()
    return CertFact(path, subject, not_after)


def parse_nodes(text: str) -> dict[str, str] | None:
    data = _json([text])
    if not isinstance(data, dict):
        return None
    out: dict[str, str] = {}
    for item in data.get("items", []):
        conds = {x["type"]: x["status"] for x in item.get("status", {}).get("conditions", [])}
        out[item["metadata"]["name"]] = "Ready" if conds.get("Ready") == "True" else "NotReady"
    return out


def parse_ops(text: str, host: str) -> OpsFacts:
    sec = _sections(text)
    f = OpsFacts()
    if "vip" in sec:
        f.vip_held = (sec["vip"] or ["0"])[0].strip() not in ("", "0")
    if "vrrp" in sec:
        f.vrrp = parse_keepalived_data(sec["vrrp"])
        f.keepalived_running = bool(f.vrrp)
    if "haproxy" in sec:
        f.haproxy_stat = "\n".join(sec["haproxy"])
        f.haproxy_answered = any(line.startswith("# ") for line in sec["haproxy"])
    if "etcd-status" in sec:
        f.etcd = parse_etcd(sec)
        members = _json(sec.get("etcd-members", []))
        if isinstance(members, dict):
            f.etcd_members = list(members.get("members", []))
        f.etcd_alarms = [line.strip() for line in sec.get("etcd-alarms", []) if line.strip()]
    for line in sec.get("certs", []):
        c = parse_cert_line(line.strip())
        if c is not None:
            f.certs.append(c)
    if "tokens" in sec:
        f.tokens_text = "\n".join(sec["tokens"])
    if "nodes" in sec:
        f.nodes = parse_nodes("\n".join(sec["nodes"]))
    return f
