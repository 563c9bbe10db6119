"""The kubeadm output parsers against REAL kubeadm output, 1.14 to 1.33.

The transcripts live outside the repository, in ../shared/reference/kubeadm-transcripts (see its
index.md: real output captured by people on real clusters, copied verbatim). These tests skip when
that folder is absent. Expected values below were read off the transcripts by eye, not produced by
the parsers; where a transcript states a value itself (the `[bootstrap-token] Using token:` line,
the key under `[upload-certs] Using certificate key:`) the test reads it from the text directly.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fakes import TRANSCRIPTS

from hakube.facts import kubeadm
from hakube.facts.kubeadm import KubeadmOutputError

pytestmark = pytest.mark.skipif(
    not (TRANSCRIPTS / "index.md").is_file(), reason=f"no real transcripts at {TRANSCRIPTS}"
)


def text_of(name: str) -> str:
    return (TRANSCRIPTS / name).read_text(encoding="utf-8")


def announced_token(text: str) -> str | None:
    m = re.search(r"\[bootstrap-token\] Using token: (\S+)", text)
    return m.group(1) if m else None


def key_below_banner(text: str) -> str | None:
    m = re.search(r"\[upload-certs\] Using certificate key:\s*\n\s*([0-9a-f]{64})", text)
    return m.group(1) if m else None


# file → (endpoint, token id, a control-plane join command printed?)
INIT_OK = {
    "1.16-init-upload-certs-external-etcd-1.txt": ("10.0.209.142:6443", "bse0g2", True),
    "1.18-init-endpoint-1.txt": ("betelgeuse.boreal.codes:6443", "2pje0m", True),
    "1.20-init-1.txt": ("10.13.15.200:6443", "4zadif", False),
    "1.20-init-endpoint-1.txt": ("orion:6443", "wdav4u", True),
    "1.20-init-upload-certs-1.txt": ("172.31.3.188:6443", "7t2weq", True),
    "1.23-init-upload-certs-1.txt": ("172.31.3.188:6443", "7t2weq", True),
    "1.24-init-upload-certs-1.txt": ("172.31.47.221:6443", "vo62r9", True),
    "1.28-init-endpoint-1.txt": ("192.168.1.105:6443", "yxzxa2", True),
    "1.30-init-upload-certs-1.txt": ("192.168.10.45:6443", "h3eh17", True),
    "1.32-init-upload-certs-1.txt": ("k8s-lab.lab.vezpi.me:6443", "8etamd", True),
}

# file → what the refusal must say
INIT_REFUSED = {
    "1.17-init-handedited-1.txt": "differs from the one '[bootstrap-token] Using token:'",
    "1.25-init-aliyun-spliced-1.txt": "spliced from two runs",
    "1.20-init-preflight-fail-1.txt": "failed preflight: FileContent--proc-sys-net-bridge",
    "1.25-init-preflight-fail-cri-aliyun-1.txt": "not running: output: E1029 14:48:00.390255",
    "1.26-init-preflight-fail-cri-1.txt": "failed preflight: CRI: container runtime is not running",
    "1.28-init-preflight-fail-cri-1.txt": "failed preflight: CRI",
}

# file → (checks in [ERROR ...], text every message ends with, warnings' checks)
PREFLIGHT_FAILED = {
    "1.20-init-preflight-fail-1.txt": (
        [
            "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables",
            "FileContent--proc-sys-net-ipv4-ip_forward",
        ],
        "",
        [],
    ),
    "1.25-init-preflight-fail-cri-aliyun-1.txt": (
        ["CRI"],
        ", error: exit status 1",
        ["FileExisting-tc"],
    ),
    "1.26-init-preflight-fail-cri-1.txt": (["CRI"], ", error: exit status 1", ["Swap"]),
    "1.28-init-preflight-fail-cri-1.txt": (["CRI"], ", error: exit status 1", []),
}

JOIN_OK = [
    "1.24-join-control-plane-1.txt",
    "1.32-join-control-plane-1.txt",
    "1.33-join-worker-1.txt",
]

# file → (endpoint, token id, control plane, certificate key printed)
JOIN_COMMANDS = {
    "1.14-init-excerpt-cp-join-1.txt": ("192.168.122.170:6443", "nmiqmn", True, True),
    "1.17-token-create-print-join-command-klog-1.txt": (
        "192.168.100.100:8443",
        "5omals",
        False,
        False,
    ),
    "1.23-init-excerpt-worker-join-ipv6-1.txt": (
        "[fd15:4ba5:5a2b:1008::10]:6443",
        "a7nn29",
        False,
        False,
    ),
    "1.27-token-create-print-join-command-1.txt": ("10.0.2.2:6443", "eczspu", False, False),
    "1.33-token-create-print-join-command-1.txt": ("172.30.1.2:6443", "ukxc7d", False, False),
}

UPLOAD_CERTS = [
    "1.14-upload-certs-1.txt",
    "1.17-upload-certs-klog-1.txt",
    "1.32-upload-certs-1.txt",
]

# file → [(token id, ttl, UTC offset in hours or None for never, extra group)]
TOKEN_LISTS = {
    "1.14-token-list-1.txt": [("wo512h", "<forever>", None, "default-node-token")],
    "1.19-token-list-tz-1.txt": [("xe4dur", "22h", 8, "default-node-token")],
    "1.27-token-list-1.txt": [("4iwa6j", "23h", 0, "default-node-token")],
    "unk-token-list-tz-custom-1.txt": [
        ("584xlf", "14h", 8, "k8s-master003"),
        ("8x1tnk", "14h", 8, "k8s-master002"),
        ("ecvlt1", "14h", 8, "k8s-master001"),
    ],
}


def test_every_transcript_with_a_parser_is_covered_here() -> None:
    """A transcript added to the index without an expectation here fails instead of being
    silently ignored."""
    rows = [ln for ln in text_of("index.md").splitlines() if ln.startswith("| `")]
    covered = (
        set(INIT_OK) | set(INIT_REFUSED) | set(PREFLIGHT_FAILED) | set(JOIN_OK)
        | set(JOIN_COMMANDS) | set(UPLOAD_CERTS) | set(TOKEN_LISTS)
        | {"1.14-token-create-1.txt", "1.32-join-fail-download-certs-1.txt"}
    )  # fmt: skip
    for row in rows:
        name, _, _, parser = (c.strip() for c in row.strip("|").split("|")[:4])
        # hakube reads certificate expiry with openssl, not kubeadm's table: that parser is gone.
        parsers = [
            p for p in re.findall(r"parse_\w+", parser) if p != "parse_certs_check_expiration"
        ]
        if parsers:
            assert name.strip("`") in covered, row


@pytest.mark.parametrize("name", sorted(INIT_OK))
def test_real_init_output_is_parsed(name: str) -> None:
    text = text_of(name)
    endpoint, token_id, cp_join = INIT_OK[name]
    r = kubeadm.parse_init_output(text)
    assert r.endpoint == endpoint
    assert r.token.split(".")[0] == token_id
    assert r.token == (announced_token(text) or r.token)
    assert r.token in text
    assert r.ca_cert_hash in text
    assert (r.control_plane_join_command is not None) == cp_join
    assert r.certificate_key == key_below_banner(text)
    assert r.worker_join_command.endpoint == endpoint
    assert r.token not in repr(r)


@pytest.mark.parametrize("name", sorted(INIT_REFUSED))
def test_failed_spliced_and_edited_init_output_is_refused(name: str) -> None:
    text = text_of(name)
    with pytest.raises(KubeadmOutputError) as e:
        kubeadm.parse_init_output(text)
    assert INIT_REFUSED[name] in str(e.value)
    warned = PREFLIGHT_FAILED.get(name, ([], "", []))[2]
    assert (f"(warnings: {', '.join(warned)})" in str(e.value)) == bool(warned)
    for token in re.findall(r"\b[a-z0-9]{6}\.([a-z0-9]{16})\b", text):
        assert token not in str(e.value)  # token secrets never reach the message


@pytest.mark.parametrize("name", sorted(PREFLIGHT_FAILED))
def test_preflight_failures_name_each_check_with_its_whole_message(name: str) -> None:
    text = text_of(name)
    checks, ending, warnings = PREFLIGHT_FAILED[name]
    errors = kubeadm.parse_preflight_errors(text)
    assert [e.check for e in errors] == checks
    assert all(e.message.endswith(ending) for e in errors)
    assert [w.check for w in kubeadm.parse_preflight_warnings(text)] == warnings
    phase = kubeadm.parse_phase_error(text)
    assert phase is not None
    assert phase.phase == "preflight"


@pytest.mark.parametrize("name", JOIN_OK)
def test_successful_joins_report_no_failure(name: str) -> None:
    text = text_of(name)
    assert kubeadm.parse_preflight_errors(text) == []
    assert kubeadm.parse_phase_error(text) is None


def test_expired_kubeadm_certs_secret_names_the_phase() -> None:
    phase = kubeadm.parse_phase_error(text_of("1.32-join-fail-download-certs-1.txt"))
    assert phase is not None
    assert phase.phase == "control-plane-prepare/download-certs"
    assert 'Secret "kubeadm-certs" was not found' in phase.message


@pytest.mark.parametrize("name", sorted(JOIN_COMMANDS))
def test_real_join_commands_are_parsed(name: str) -> None:
    endpoint, token_id, control_plane, has_key = JOIN_COMMANDS[name]
    j = kubeadm.parse_join_command(text_of(name))
    assert (j.endpoint, j.token.split(".")[0], j.control_plane) == (
        endpoint,
        token_id,
        control_plane,
    )
    assert (j.certificate_key is not None) == has_key


@pytest.mark.parametrize("name", UPLOAD_CERTS)
def test_real_upload_certs_output_gives_the_key_below_the_banner(name: str) -> None:
    text = text_of(name)
    assert kubeadm.parse_upload_certs_output(text) == key_below_banner(text)


def test_real_token_create_output() -> None:
    assert kubeadm.parse_token_create(text_of("1.14-token-create-1.txt")).startswith("wo512h.")


@pytest.mark.parametrize("name", sorted(TOKEN_LISTS))
def test_real_token_lists_are_parsed_with_time_zones(name: str) -> None:
    rows = kubeadm.parse_token_list(text_of(name))
    hour = dt.timedelta(hours=1)
    got = [
        (
            t.token_id,
            t.ttl,
            None if t.expires is None else (t.expires.utcoffset() or dt.timedelta()) // hour,
            t.extra_groups[0].rsplit(":", 1)[1],
        )
        for t in rows
    ]
    assert got == TOKEN_LISTS[name]
