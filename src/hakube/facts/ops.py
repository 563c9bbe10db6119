"""Day-2 facts: VRRP state, HAProxy backends, etcd member status and certificate expiry.

Like the host facts, everything is read in ONE round trip per host: the script prints marked
sections that `parse_ops` turns into data. `status` appends the host facts script (units,
file checksums) to the same round trip, so a whole status costs one command per host.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

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
    #: The local etcd member's client API, if the host runs etcd.
    etcd: EtcdClient | None = None
    certs: bool = True
    #: `kubectl --kubeconfig ...` prefix when this host can reach the Kubernetes API.
    kubectl: str | None = None
    kubeadm_tokens: bool = False
    vip: str | None = None
    #: The etcd member's environment file, read whole (its first-start settings are its own).
    etcd_env: str | None = None


CERT_MARK = "@@hakube-cert:"

# SIGUSR1 makes keepalived dump its instances; the file appears a moment later.
VRRP_SCRIPT = (
    f'p=$(cat {KEEPALIVED_PID} 2>/dev/null) && kill -0 "$p" 2>/dev/null || exit 0; '
    f'rm -f {KEEPALIVED_DATA}; kill -USR1 "$p"; for i in $(seq 100); do '
    f"grep -q 'Effective priority' {KEEPALIVED_DATA} 2>/dev/null && break; sleep 0.01; "
    f"done; grep -E '^ *(VRRP Instance|State|Effective priority|Priority) = ' "
    f"{KEEPALIVED_DATA}"
)
#: Marks a kubeconfig's embedded client certificate, still base64 (decoded on our side).
CERT_B64_MARK = "@@hakube-cert-b64:"


def certs_script(dirs: Sequence[str] = CERT_DIRS, kubeconfigs: Sequence[str] = KUBECONFIGS) -> str:
    """Every `*.crt` under `dirs` and the client certificate of every kubeconfig, each under
    its mark. Certificates are public: their PEM is read here and expiry parsed on our side
    (no openssl process per file); private keys are never read. A fixed number of processes
    whatever the count of files (a cat, or a sed|head|base64, per file was a process each on
    every host of every status round): one awk for the certificates (an empty file gets its
    mark alone, so that it is reported as unreadable, not missed) and one for the kubeconfigs.
    `parse_certs` sorts them by path."""
    q = " ".join(shlex.quote(d) for d in dirs)
    k = " ".join(shlex.quote(f) for f in kubeconfigs)
    return (
        f"find {q} -name '*.crt' -type f \\( -empty -printf '{CERT_MARK}%p\\n' -o "
        f"-exec awk 'FNR == 1 {{ print \"{CERT_MARK}\" FILENAME }} 1' {{}} + \\) 2>/dev/null; "
        # awk stops at a file it cannot open: only the kubeconfigs that exist are given.
        f'set --; for f in {k}; do [ -f "$f" ] && set -- "$@" "$f"; done; '
        f"[ $# -eq 0 ] || awk '/^ *client-certificate-data:/ && !seen[FILENAME]++ "
        f'{{ print "{CERT_B64_MARK}" FILENAME; print $2 }}\' "$@"'
    )


@dataclass(frozen=True)
class EtcdClient:
    """The local member's client URL and the directory of the CA and healthcheck client
    certificate that reach it."""

    url: str
    pki: str

    def curl(self) -> str:
        """ONE curl for the three reads, through etcd's gRPC gateway (HTTP/JSON on the client
        URL: the protobuf messages etcdctl prints, 64-bit numbers as strings) over one TLS
        connection. Each etcdctl was a Go program starting a gRPC client, 10-20 ms of CPU on
        the host, three per member, and for stacked etcd without etcdctl on the host a crictl
        exec besides. curl is a base package hakube installs on every host. Each answer is
        followed by an `ETCD_END` line with curl's exit code and error (a transfer that failed
        has no answer, and curl goes on with the next)."""
        tls = (
            f"-sS --connect-timeout 3 --max-time 5 --cacert {self.pki}/ca.crt "
            f"--cert {self.pki}/healthcheck-client.crt --key {self.pki}/healthcheck-client.key"
        )
        post = " -X POST -d '{}'"
        requests = [
            f"{tls}{post if is_post else ''} "
            f"-w '\\n{ETCD_END}{name} {self.url} %{{exitcode}} %{{errormsg}}\\n' {self.url}{path}"
            for name, (path, is_post) in ETCD_SECTIONS.items()
        ]
        missing = f"{ETCD_END}etcd-status {self.url} 127 {NO_CURL}"
        return (
            f"if command -v curl >/dev/null 2>&1; then curl {' --next '.join(requests)}; "
            f"else echo {shlex.quote(missing)}; fi"
        )


NO_CURL = "curl is not installed on this host (apply's packages phase installs it)"
#: Marks the end of one gateway answer in the `etcd` section.
ETCD_END = "@@hakube-etcd-end:"
#: Answer name → the gateway's (path, POST). etcd's /health is false without a leader, with an
#: active alarm or when a quorum read fails.
ETCD_SECTIONS = {
    "etcd-status": ("/v3/maintenance/status", True),
    "etcd-health": ("/health", False),
    "etcd-members": ("/v3/cluster/member/list", True),
}
#: An active alarm as etcd words it. Every member's maintenance status lists the cluster's
#: alarms among its errors exactly as `etcdctl alarm list` prints them, so no fourth request
#: is made for them.
ALARM_RE = re.compile(r"memberID:(\d+) alarm:(\w+)")


def ops_sections(q: OpsQuery) -> dict[str, str]:
    """Section name → the shell that prints it (only what `q` asks for)."""
    out: dict[str, str] = {}
    if q.vip:
        out["vip"] = f"ip -o -4 addr show | grep -cF {shlex.quote(f'inet {q.vip}/')}"
    if q.vrrp:
        out["vrrp"] = VRRP_SCRIPT
    if q.haproxy_socket:
        out["haproxy"] = (
            f"echo 'show stat' | socat -t 1 stdio unix-connect:{shlex.quote(q.haproxy_socket)}"
        )
    if q.etcd:
        out["etcd"] = q.etcd.curl()
    if q.etcd_env:
        out["etcd-env"] = f"cat {shlex.quote(q.etcd_env)}"
    if q.certs:
        out["certs"] = certs_script()
    if q.kubeadm_tokens:
        out["tokens"] = "kubeadm token list"
    if q.kubectl:
        out["nodes"] = f"{q.kubectl} get nodes -o json"
    return out


def ops_script(q: OpsQuery, extra: str = "") -> str:
    """Every section runs at the same time (a dead etcd member costs one dial timeout, not
    four); the outputs are then printed in order under their marks, followed by `extra`'s
    (another marked script, e.g. the host facts) run alongside."""
    # Each section writes its own mark first, so that ONE cat prints them all in order (a
    # cat per section was a process each, on every host of every status round).
    marked = {**ops_sections(q), "ops-end": extra or ":"}
    files = [f"$d/{i}" for i in range(len(marked))]
    lines = ["d=$(mktemp -d) || exit 1"]
    lines += [
        f"{{ printf '\\n{MARK}%s\\n' {n}; ( {cmd} ); }} >{f} 2>/dev/null &"
        for f, (n, cmd) in zip(files, marked.items(), strict=True)
    ]
    lines += ["wait", f"cat {' '.join(files)}", 'rm -rf "$d"']
    return "\n".join(lines) + "\n"


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
    #: HAProxy's `show stat` CSV, parsed by the status workflow.
    haproxy_stat: str = ""
    haproxy_answered: bool = False
    etcd: EtcdLocal | None = None
    etcd_members: list[dict[str, Any]] = field(default_factory=list)
    etcd_alarms: list[str] = field(default_factory=list)
    etcd_env: str = ""
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


def etcd_id(v: object) -> str:
    """A member id in hex, as etcdctl prints it: etcdctl's JSON has 64-bit numbers, the
    gateway's decimal strings."""
    if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
        return f"{int(v):x}"
    return str(v or "")


@dataclass(frozen=True)
class EtcdAnswers:
    """The gateway's answers in the `etcd` section: name → body, and how curl ended each."""

    bodies: dict[str, list[str]]
    url: str = ""
    #: name → curl's error for a transfer that failed ("" if it did not say).
    failed: dict[str, str] = field(default_factory=dict)


def split_etcd(lines: Sequence[str]) -> EtcdAnswers:
    bodies: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    url = ""
    body: list[str] = []
    for line in lines:
        if not line.startswith(ETCD_END):
            body.append(line)
            continue
        name, url, code, why = [*line[len(ETCD_END) :].split(" ", 3), "", "", ""][:4]
        bodies[name] = body
        if code not in ("0", ""):
            failed[name] = why.strip() or f"curl exit code {code}"
        body = []
    return EtcdAnswers(bodies, url, failed)


def parse_etcd(answers: EtcdAnswers) -> EtcdLocal:
    """The member's status and health as the gateway (`split_etcd`) or etcdctl (`endpoint
    status|health -w json`, as `etcd-status`/`etcd-health` bodies) print them: the same
    protobuf messages."""
    failed = answers.failed
    status = _json(answers.bodies.get("etcd-status", []))
    health = _json(answers.bodies.get("etcd-health", []))
    endpoint = answers.url
    if isinstance(status, list):  # etcdctl: one entry per endpoint
        endpoint = str(status[0].get("Endpoint", "")) if status else ""
        status = status[0].get("Status") if status else None
    if isinstance(health, list):
        health = health[0] if health else None
    err = ""
    healthy = False
    if isinstance(health, dict):
        healthy = str(health.get("health")).lower() == "true"
        err = str(health.get("error") or health.get("reason") or "")
        if not healthy and not err:
            err = "etcd's /health says false (no leader, an active alarm or no quorum read)"
    err = err or failed.get("etcd-health", "")
    if not isinstance(status, dict) or "header" not in status:
        said = status.get("message") or status.get("error") if isinstance(status, dict) else None
        why = err or str(said or "") or failed.get("etcd-status", "")
        return EtcdLocal(healthy=healthy, error=why or "no answer from the local etcd member")
    header = status["header"]
    return EtcdLocal(
        endpoint=endpoint,
        member_id=etcd_id(header.get("member_id")),
        leader_id=etcd_id(status.get("leader")),
        revision=int(header.get("revision", 0)),
        raft_index=int(status.get("raftIndex", 0)),
        raft_term=int(status.get("raftTerm", 0)),
        db_size=int(status.get("dbSize", 0)),
        learner=bool(status.get("isLearner", False)),
        version=str(status.get("version", "")),
        errors=tuple(str(e) for e in status.get("errors", []) or []),
        healthy=healthy,
        error="" if healthy else err,
    )


def parse_certs(lines: Sequence[str]) -> list[CertFact]:
    """The certificates of `certs_script`, sorted by path."""
    out: list[CertFact] = []
    path: str | None = None
    encoded = False
    body: list[str] = []

    def flush() -> None:
        if path is None:
            return
        try:
            text = "\n".join(body).strip().encode()
            pem = base64.b64decode(text, validate=True) if encoded else text
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:  # binascii.Error included
            out.append(CertFact(path, "", None))
            return
        out.append(CertFact(path, cert.subject.rfc4514_string(), cert.not_valid_after_utc))

    for line in lines:
        mark = next((m for m in (CERT_MARK, CERT_B64_MARK) if line.startswith(m)), None)
        if mark:
            flush()
            path, encoded, body = line[len(mark) :].strip(), mark == CERT_B64_MARK, []
        else:
            body.append(line)
    flush()
    return sorted(out, key=lambda c: c.path)


def parse_nodes(text: str) -> dict[str, str] | None:
    data = _json([text])
    if not isinstance(data, dict):
        return None
    out: dict[str, str] = {}
    for item in data.get("items", []):
        conds = {x["type"]: x["status"] for x in item.get("status", {}).get("conditions", [])}
        out[item["metadata"]["name"]] = "Ready" if conds.get("Ready") == "True" else "NotReady"
    return out


def parse_ops(text: str) -> OpsFacts:
    sec = _sections(text)
    f = OpsFacts()
    if "vip" in sec:
        f.vip_held = (sec["vip"] or ["0"])[0].strip() not in ("", "0")
    if "vrrp" in sec:
        f.vrrp = parse_keepalived_data(sec["vrrp"])
    if "haproxy" in sec:
        f.haproxy_stat = "\n".join(sec["haproxy"])
        f.haproxy_answered = any(line.startswith("# ") for line in sec["haproxy"])
    if "etcd" in sec:
        answers = split_etcd(sec["etcd"])
        local = parse_etcd(answers)
        f.etcd_alarms = [e.strip() for e in local.errors if ALARM_RE.search(e)]
        f.etcd = dataclasses.replace(
            local, errors=tuple(e for e in local.errors if not ALARM_RE.search(e))
        )
        members = _json(answers.bodies.get("etcd-members", []))
        if isinstance(members, dict):
            f.etcd_members = list(members.get("members", []))
    f.etcd_env = "\n".join(sec.get("etcd-env", []))
    f.certs = parse_certs(sec.get("certs", []))
    if "tokens" in sec:
        f.tokens_text = "\n".join(sec["tokens"])
    if "nodes" in sec:
        f.nodes = parse_nodes("\n".join(sec["nodes"]))
    return f
