"""LAB ONLY: a stand-in for kube-apiserver's /readyz, because the lab cannot run Kubernetes.

No registry reachable here carries kubeadm, kubelet or kube-apiserver, yet HAProxy's backends
and keepalived's health script need something TLS on :6443 that behaves like an apiserver:
ready only while etcd has quorum. This unit is that and nothing more. It is installed by the lab
(never by a product phase), under a name that says so, and serves a certificate issued by the
cluster's own CA for the host's address, as the real apiserver would.

It answers to the unit name `kube-apiserver` (a systemd alias), the name a binary-installed
apiserver has, so the product's day-2 steps that stop and start the apiservers (an etcd restore)
act on it in the lab exactly as they would on such a host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath

from hakube.pki.certs import CertUsage, issue_certificate
from hakube.pki.etcd import etcd_members
from hakube.render.etcd import client_endpoints
from hakube.spec.model import Cluster, Host
from hakube.state import StateDir
from hakube.transport.base import Redactor, Transport
from hakube.workflows.apiserver import APISERVER_UNIT
from hakube.workflows.apply import ssh_transports

UNIT = "hakube-lab-apiserver-standin"
DIR = "/etc/hakube-lab/standin"
SCRIPT = "/usr/local/lib/hakube-lab/apiserver_standin.py"

# Runs on the lab host with the Debian image's python3; stdlib only.
SERVER_SOURCE = r'''#!/usr/bin/python3
"""LAB ONLY stand-in for kube-apiserver /readyz (see hakube_lab.standin)."""
import http.server, json, socketserver, ssl, sys, threading, time, urllib.request

CERT, KEY, ETCD_CA, ETCD_CERT, ETCD_KEY, ENDPOINTS = sys.argv[1:7]
state = {"ready": False, "why": "starting"}


def etcd_endpoints(last):
    # Re-read every poll: after an etcd member change the lab rewrites the list in place (what
    # hakube does to a real apiserver's --etcd-servers), with no restart of this server.
    try:
        with open(ENDPOINTS) as f:
            return [e for e in f.read().strip().split(",") if e] or last
    except OSError:
        return last


def etcd_ctx():
    c = ssl.create_default_context(cafile=ETCD_CA)
    c.load_cert_chain(ETCD_CERT, ETCD_KEY)
    c.check_hostname = False
    return c


def poll():
    ctx = etcd_ctx()
    etcd = []
    while True:
        etcd = etcd_endpoints(etcd)
        ready, why = False, "no etcd member answered"
        for ep in etcd:
            try:
                # /health answers true only when the member sees a leader, i.e. quorum holds.
                with urllib.request.urlopen(ep + "/health", timeout=0.5, context=ctx) as r:
                    body = json.loads(r.read())
                ready = str(body.get("health")) == "true"
                why = "etcd healthy" if ready else "etcd has no quorum"
                break
            except Exception as e:  # noqa: BLE001
                why = f"{ep}: {e}"
        state["ready"], state["why"] = ready, why
        time.sleep(0.2)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5

    def setup(self):
        # The TLS handshake runs here, in the connection's own thread and with a timeout: done
        # in accept() a peer that vanished mid-handshake (a powered-off host) blocked everyone.
        self.request.settimeout(5)
        self.request.do_handshake()
        super().setup()

    def do_GET(self):
        if self.path.split("?")[0] in ("/readyz", "/livez", "/healthz"):
            ok = state["ready"] or self.path.startswith("/livez")
            body = (b"ok" if ok else ("not ready: " + state["why"]).encode())
            self.send_response(200 if ok else 500)
        else:
            body, ok = b"lab stand-in: only /readyz, /livez, /healthz", False
            self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # a peer that died mid-handshake is what drills do; nothing to log


threading.Thread(target=poll, daemon=True).start()
srv = Server(("0.0.0.0", 6443), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(CERT, KEY)
srv.socket = tls.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
srv.serve_forever()
'''


#: The etcd client endpoints the stand-in asks, comma-separated (its --etcd-servers).
ENDPOINTS_FILE = f"{DIR}/etcd-endpoints"


def endpoints_file(cluster: Cluster) -> bytes:
    return ",".join(client_endpoints(cluster)).encode() + b"\n"


def endpoints_command(cluster: Cluster) -> str:
    """Shell, on a control plane: its stand-in's etcd list becomes `cluster`'s members (as the
    kubeadm/etcd-endpoints phase, skipped in the lab, makes a real apiserver's --etcd-servers
    follow them), replaced atomically."""
    data = shlex.quote(endpoints_file(cluster).decode())
    return f"printf %s {data} > {ENDPOINTS_FILE}.new && mv {ENDPOINTS_FILE}.new {ENDPOINTS_FILE}"


def unit_text(cluster: Cluster) -> str:
    args = " ".join(
        [
            f"{DIR}/apiserver.crt",
            f"{DIR}/apiserver.key",
            "/etc/etcd/pki/ca.crt",
            "/etc/etcd/pki/healthcheck-client.crt",
            "/etc/etcd/pki/healthcheck-client.key",
            ENDPOINTS_FILE,
        ]
    )
    return (
        "# LAB ONLY: stands in for kube-apiserver's /readyz; see hakube_lab.standin.\n"
        "[Unit]\nDescription=hakube lab stand-in for kube-apiserver /readyz (not Kubernetes)\n"
        "After=network.target\n\n"
        f"[Service]\nExecStart=/usr/bin/python3 {SCRIPT} {args}\n"
        "Restart=always\nRestartSec=0.5\n\n[Install]\nWantedBy=multi-user.target\n"
        f"Alias={APISERVER_UNIT}.service\n"
    )


async def install_standin(
    cluster: Cluster, state: StateDir, host: Host, transport: Transport
) -> None:
    """Put the stand-in on one control-plane node and (re)start it."""
    ca = state.cluster_pki().ca
    cert = issue_certificate(
        ca,
        "kube-apiserver",
        CertUsage.SERVER,
        dns_names=[host.name, cluster.api_name, "kubernetes", "localhost"],
        ip_addresses=[str(host.address), "127.0.0.1"]
        + ([str(cluster.endpoint.vip)] if cluster.endpoint.vip else []),
        validity=dt.timedelta(days=30),
    )
    etcd = state.etcd_pki(etcd_members(cluster))
    files = {
        f"{DIR}/apiserver.crt": (cert.cert_pem, 0o644),
        f"{DIR}/apiserver.key": (cert.key_pem, 0o600),
        SCRIPT: (SERVER_SOURCE.encode(), 0o755),
        ENDPOINTS_FILE: (endpoints_file(cluster), 0o644),
        f"/etc/systemd/system/{UNIT}.service": (unit_text(cluster).encode(), 0o644),
    }
    # The stand-in reads etcd's health with the healthcheck client; before the etcd phase has
    # run the files are not there yet, so the lab puts them (apply later finds them current).
    for f in etcd.etcd_host_files(host.name):
        name = PurePosixPath(f.path).name
        if "healthcheck-client" in name or name == "ca.crt":
            files[f.path] = (f.content.encode(), f.mode)
    await asyncio.gather(
        *(transport.put(path, data, mode=mode) for path, (data, mode) in files.items())
    )
    await transport.run(
        f"systemctl daemon-reload && systemctl enable -q {UNIT} && systemctl restart {UNIT}"
    )


#: Stops and removes the stand-in (where a real `kubeadm reset` stops the apiserver).
REMOVE = (
    f"systemctl disable --now -q {UNIT} 2>/dev/null; "
    f"rm -rf /etc/systemd/system/{UNIT}.service {DIR} {SCRIPT}; systemctl daemon-reload"
)


async def install_all(
    cluster: Cluster,
    state: StateDir,
    transports: dict[str, Transport],
    hosts: Sequence[Host] | None = None,
) -> None:
    """The stand-in on every control plane (or on `hosts`)."""
    targets = cluster.control_planes if hosts is None else hosts
    await asyncio.gather(*(install_standin(cluster, state, h, transports[h.name]) for h in targets))


async def prepare_standins(
    cluster: Cluster, state: StateDir, names: Sequence[str] | None = None
) -> None:
    """Connect and (re)install the stand-in on every control plane, or on the hosts `names`.
    A host that cannot be reached fails: it would stay without an apiserver, unnoticed."""
    hosts = cluster.control_planes if names is None else [cluster.host(n) for n in names]
    async with ssh_transports(cluster, trust_new_hosts=False, redactor=Redactor()) as (t, errs):
        failed = {h.name: errs[h.name] for h in hosts if h.name in errs}
        if failed:
            raise RuntimeError(
                "no stand-in installed on " + "; ".join(f"{h}: {m}" for h, m in failed.items())
            )
        await install_all(cluster, state, t, hosts)
