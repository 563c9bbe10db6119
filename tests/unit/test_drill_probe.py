"""The probe processes against a loopback TLS server (no lab): fixed rate, one JSON line each."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakube.pki.certs import CertUsage, generate_ca, issue_certificate
from hakube_lab.drill import probe
from hakube_lab.drill.report import parse_requests, parse_vip


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/readyz"
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca = generate_ca("test-ca")
    cert = issue_certificate(ca, "srv", CertUsage.SERVER, ip_addresses=["127.0.0.1"])
    (tmp_path / "c.pem").write_bytes(cert.cert_pem)
    (tmp_path / "k.pem").write_bytes(cert.key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1], tmp_path / "ca.pem"
    finally:
        srv.shutdown()


def _run(*args: str) -> None:
    subprocess.run([sys.executable, probe.__file__, *args], check=True, timeout=30)


def test_readyz_probe_rate_and_results(server: tuple[int, Path], tmp_path: Path) -> None:
    port, ca = server
    out = tmp_path / "r.jsonl"
    # A timeout far above the drill's 0.2 s: this checks the schedule and the records, and a
    # starved machine (a TLS handshake waiting for a core) must not read as a failed request.
    _run("readyz", "--host", "127.0.0.1", "--port", str(port), "--rate", "20",
         "--duration", "1", "--cafile", str(ca), "--out", str(out), "--timeout", "5")  # fmt: skip
    reqs = parse_requests(out.read_text().splitlines())
    assert len(reqs) == 20
    assert all(r.ok and r.tries == 1 for r in reqs)
    assert all(r.end >= r.t for r in reqs)


def test_readyz_probe_checks_the_certificate_for_the_tls_name(
    server: tuple[int, Path], tmp_path: Path
) -> None:
    # The certificate names 127.0.0.1 only: reached as "localhost" it fails, unless the probe
    # is told which name to check (as the drill does for a host's own address and the VIP).
    port, ca = server
    results = {}
    for name, extra in (("plain", []), ("named", ["--tls-name", "127.0.0.1"])):
        out = tmp_path / f"{name}.jsonl"
        _run("readyz", "--host", "localhost", "--port", str(port), "--rate", "10",
             "--duration", "0.3", "--cafile", str(ca), "--out", str(out), "--timeout", "5",
             *extra)  # fmt: skip
        results[name] = parse_requests(out.read_text().splitlines())
    assert results["plain"]
    assert not any(r.ok for r in results["plain"])
    assert results["named"]
    assert all(r.ok for r in results["named"])


def test_readyz_probe_failure_is_retried_once(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    # Port 9 on loopback: nothing listens, every attempt is refused.
    _run("readyz", "--host", "127.0.0.1", "--port", "9", "--rate", "10", "--duration", "0.5",
         "--out", str(out))  # fmt: skip
    reqs = parse_requests(out.read_text().splitlines())
    assert len(reqs) == 5
    assert all(not r.ok and r.tries == 2 and len(r.errors) == 2 for r in reqs)


def test_vip_probe_is_bounded(tmp_path: Path) -> None:
    out = tmp_path / "v.jsonl"
    _run("vip", "--vip", "10.255.255.1", "--interval", "0.1", "--duration", "0.5",
         "--lab-host", "x:no-such-netns:no-such-link", "--out", str(out))  # fmt: skip
    samples = parse_vip(out.read_text().splitlines())
    assert 3 <= len(samples) <= 6
    assert all(s.holders == () for s in samples)
