"""Parsers for what kubeadm prints: init, upload-certs, join commands, tokens, preflight failures.

kubeadm has no machine-readable output for most of these, so hakube reads its human output.
Each parser checks every secret against kubeadm's own format and raises
:class:`KubeadmOutputError` when the text is not what it expected, quoting the offending line with
secrets masked, so the error can go to a log or a terminal as is.

The parsers key on the ``kubeadm join`` lines and the ``[phase]`` prefixes, not on the prose
around them, which has been reworded across releases (1.13 "master" → "control-plane", 1.14
``--experimental-control-plane`` → ``--control-plane``).
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass

from hakube.secrets import BOOTSTRAP_TOKEN_RE, CA_CERT_HASH_RE, CERTIFICATE_KEY_RE

__all__ = [
    "BootstrapTokenInfo",
    "InitResult",
    "JoinCommand",
    "KubeadmOutputError",
    "KubeadmPhaseFailure",
    "PreflightIssue",
    "mask_secrets",
    "parse_init_output",
    "parse_join_command",
    "parse_phase_error",
    "parse_preflight_errors",
    "parse_preflight_warnings",
    "parse_token_create",
    "parse_token_list",
    "parse_upload_certs_output",
]


class KubeadmOutputError(ValueError):
    """kubeadm printed something other than what hakube expected.

    The message never contains a token secret or a certificate key.
    """

    def __init__(self, problem: str, line: str | None = None) -> None:
        self.problem = problem
        self.line = None if line is None else mask_secrets(line.strip())
        message = problem if self.line is None else f"{problem}: {self.line!r}"
        super().__init__(message)


# --- masking -------------------------------------------------------------------------------------

_TOKEN_ANYWHERE = re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b")
_FLAG_VALUE = re.compile(r"(--(?:token|certificate-key|discovery-token)(?:=|\s+))(\S+)")
_HEX64 = re.compile(r"(?<![0-9a-fA-F:])[0-9a-fA-F]{64}(?![0-9a-fA-F])")


def mask_secrets(text: str) -> str:
    """Hide token secrets and certificate keys; keep token ids and CA hashes (both public).

    Values after ``--token``/``--certificate-key`` are hidden even when malformed, since a value
    that fails validation is exactly the one that ends up in an error message.
    """

    def flag(match: re.Match[str]) -> str:
        value = match.group(2)
        token = BOOTSTRAP_TOKEN_RE.fullmatch(value)
        return match.group(1) + (f"{token.group(1)}.<redacted>" if token else "<redacted>")

    text = _FLAG_VALUE.sub(flag, text)
    text = _TOKEN_ANYWHERE.sub(lambda m: f"{m.group(1)}.<redacted>", text)
    # A bare 64-hex value not preceded by "sha256:" is a certificate key (upload-certs prints it
    # on a line of its own).
    return _HEX64.sub("<redacted>", text)


# --- helpers -------------------------------------------------------------------------------------

# klog header: severity, MMDD, time, pid, file:line]
_KLOG_RE = re.compile(r"^[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+ [^\]]+\] ")


def _logical_lines(text: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined, CRs dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append(pending + raw)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _check_token(value: str, line: str) -> str:
    if value.startswith("<value"):
        raise KubeadmOutputError(
            "the bootstrap token was withheld (kubeadm ran with --skip-token-print)", line
        )
    if not BOOTSTRAP_TOKEN_RE.fullmatch(value):
        raise KubeadmOutputError("malformed bootstrap token (want [a-z0-9]{6}.[a-z0-9]{16})", line)
    return value


def _check_hash(value: str, line: str) -> str:
    if not CA_CERT_HASH_RE.fullmatch(value):
        raise KubeadmOutputError("malformed CA cert hash (want sha256:<64 lowercase hex>)", line)
    return value


def _check_key(value: str, line: str) -> str:
    if not CERTIFICATE_KEY_RE.fullmatch(value):
        raise KubeadmOutputError("malformed certificate key (want 64 lowercase hex)", line)
    return value


# --- join commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinCommand:
    """A ``kubeadm join`` command as kubeadm prints it."""

    endpoint: str
    token: str
    ca_cert_hashes: tuple[str, ...]
    control_plane: bool = False
    certificate_key: str | None = None

    @property
    def ca_cert_hash(self) -> str:
        return self.ca_cert_hashes[0]

    def argv(self) -> list[str]:
        args = ["kubeadm", "join", self.endpoint, "--token", self.token]
        for h in self.ca_cert_hashes:
            args += ["--discovery-token-ca-cert-hash", h]
        if self.control_plane:
            args.append("--control-plane")
            if self.certificate_key is not None:
                args += ["--certificate-key", self.certificate_key]
        return args

    def __str__(self) -> str:
        return shlex.join(self.argv())

    def __repr__(self) -> str:
        # Keep secrets out of logs and pytest assertion rewrites.
        return mask_secrets(
            f"JoinCommand(endpoint={self.endpoint!r}, token={self.token!r}, "
            f"ca_cert_hashes={self.ca_cert_hashes!r}, control_plane={self.control_plane!r}, "
            f"certificate_key={'<redacted>' if self.certificate_key else None!r})"
        )


_CONTROL_PLANE_FLAGS = frozenset({"--control-plane", "--experimental-control-plane"})
_VALUE_FLAGS = frozenset({"--token", "--discovery-token-ca-cert-hash", "--certificate-key"})


def _parse_join_line(line: str) -> JoinCommand:
    if "<value withheld>" in line:
        raise KubeadmOutputError(
            "the bootstrap token was withheld (kubeadm ran with --skip-token-print)", line
        )
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise KubeadmOutputError(f"cannot split join command ({exc})", line) from None
    start = next(
        (i for i in range(len(words) - 1) if words[i : i + 2] == ["kubeadm", "join"]), None
    )
    if start is None:
        raise KubeadmOutputError("not a kubeadm join command", line)
    args = words[start + 2 :]
    endpoint: str | None = None
    values: dict[str, list[str]] = {flag: [] for flag in _VALUE_FLAGS}
    control_plane = False
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if name in _VALUE_FLAGS:
            if eq:
                values[name].append(inline)
            elif i + 1 < len(args):
                i += 1
                values[name].append(args[i])
            else:
                raise KubeadmOutputError(f"{name} without a value", line)
        elif arg in _CONTROL_PLANE_FLAGS:
            control_plane = True
        elif arg.startswith("-"):
            raise KubeadmOutputError(f"unexpected flag {name} in join command", line)
        elif endpoint is None:
            endpoint = arg
        else:
            raise KubeadmOutputError(f"unexpected argument {arg!r} in join command", line)
        i += 1

    if endpoint is None or not re.fullmatch(r"\S+:\d{1,5}", endpoint):
        raise KubeadmOutputError("join command lacks a host:port endpoint", line)
    tokens = values["--token"]
    if len(tokens) != 1:
        raise KubeadmOutputError(f"join command has {len(tokens)} --token flags, want 1", line)
    hashes = values["--discovery-token-ca-cert-hash"]
    if not hashes:
        raise KubeadmOutputError("join command lacks --discovery-token-ca-cert-hash", line)
    keys = values["--certificate-key"]
    if len(keys) > 1 or (keys and not control_plane):
        raise KubeadmOutputError("--certificate-key belongs once to a control-plane join", line)
    return JoinCommand(
        endpoint=endpoint,
        token=_check_token(tokens[0], line),
        ca_cert_hashes=tuple(_check_hash(h, line) for h in hashes),
        control_plane=control_plane,
        certificate_key=_check_key(keys[0], line) if keys else None,
    )


def _join_lines(text: str) -> list[str]:
    return [line for line in _logical_lines(text) if re.match(r"\s*kubeadm\s+join\s", line)]


def parse_join_command(text: str) -> JoinCommand:
    """The one ``kubeadm join`` command in ``text`` (``kubeadm token create --print-join-command``
    output, possibly with klog lines around it)."""
    lines = _join_lines(text)
    if not lines:
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
        raise KubeadmOutputError("no kubeadm join command in the output", last or None)
    if len(lines) > 1:
        raise KubeadmOutputError(f"expected one kubeadm join command, found {len(lines)}")
    return _parse_join_line(lines[0])


# --- init ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    endpoint: str
    token: str
    ca_cert_hash: str
    certificate_key: str | None
    control_plane_join_command: JoinCommand | None
    worker_join_command: JoinCommand

    def __repr__(self) -> str:
        return mask_secrets(
            f"InitResult(endpoint={self.endpoint!r}, token={self.token!r}, "
            f"ca_cert_hash={self.ca_cert_hash!r}, "
            f"certificate_key={'<redacted>' if self.certificate_key else None!r})"
        )


_ANNOUNCED_TOKEN_RE = re.compile(r"^\s*\[bootstrap-token\] Using token: (\S+)\s*$", re.MULTILINE)
_INIT_DONE_RE = re.compile(
    r"Your Kubernetes (?:control-plane|master) has initialized successfully!"
)
_UPLOAD_KEY_MARK = "[upload-certs] Using certificate key:"


def parse_init_output(text: str) -> InitResult:
    """The join commands and secrets from a successful ``kubeadm init``."""
    if not _INIT_DONE_RE.search(text):
        errors = parse_preflight_errors(text)
        if errors:
            warnings = parse_preflight_warnings(text)
            raise KubeadmOutputError(
                "kubeadm init failed preflight: "
                + "; ".join(f"{e.check}: {e.message.splitlines()[0]}" for e in errors)
                + (f" (warnings: {', '.join(w.check for w in warnings)})" if warnings else "")
            )
        phase = parse_phase_error(text)
        if phase is not None:
            raise KubeadmOutputError(f"kubeadm init failed in phase {phase.phase}", phase.message)
        raise KubeadmOutputError("no 'initialized successfully' banner in kubeadm init output")

    commands = [_parse_join_line(line) for line in _join_lines(text)]
    workers = [c for c in commands if not c.control_plane]
    control_planes = [c for c in commands if c.control_plane]
    if len(workers) != 1:
        raise KubeadmOutputError(f"expected one worker join command, found {len(workers)}")
    if len(control_planes) > 1:
        raise KubeadmOutputError(
            f"expected at most one control-plane join command, found {len(control_planes)}"
        )
    worker = workers[0]
    for announced in _ANNOUNCED_TOKEN_RE.findall(text):
        if announced != worker.token:
            # Real init output prints the same token in both places; a mismatch means the text
            # was spliced from two runs or edited by hand, and its join command may be stale.
            raise KubeadmOutputError(
                "the join command's token differs from the one '[bootstrap-token] Using token:' "
                "announced (output spliced from two runs, or edited)",
                f"[bootstrap-token] Using token: {announced}",
            )
    control_plane = control_planes[0] if control_planes else None
    if control_plane is not None and (
        control_plane.endpoint,
        control_plane.token,
        control_plane.ca_cert_hashes,
    ) != (worker.endpoint, worker.token, worker.ca_cert_hashes):
        raise KubeadmOutputError(
            "control-plane and worker join commands disagree on endpoint, token or CA hash",
            str(control_plane),
        )

    certificate_key = control_plane.certificate_key if control_plane else None
    if _UPLOAD_KEY_MARK in text:
        uploaded = parse_upload_certs_output(text)
        if certificate_key is not None and certificate_key != uploaded:
            raise KubeadmOutputError(
                "certificate key printed by upload-certs differs from the one in the join command"
            )
        certificate_key = uploaded
    return InitResult(
        endpoint=worker.endpoint,
        token=worker.token,
        ca_cert_hash=worker.ca_cert_hash,
        certificate_key=certificate_key,
        control_plane_join_command=control_plane,
        worker_join_command=worker,
    )


def parse_upload_certs_output(text: str) -> str:
    """The certificate key from ``kubeadm init phase upload-certs --upload-certs`` (or init)."""
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        if _UPLOAD_KEY_MARK not in line:
            continue
        if line.split(_UPLOAD_KEY_MARK, 1)[1].strip():
            # Every kubeadm from 1.14 to 1.33 prints the key on the next line (see the real
            # transcripts); text after the banner means the output was edited by hand.
            raise KubeadmOutputError(
                "the certificate key stands on the banner's own line, where kubeadm never puts "
                "it (edited output)",
                line,
            )
        following = next((ln for ln in lines[index + 1 :] if ln.strip()), None)
        if following is None:
            raise KubeadmOutputError("output ends right after the certificate key banner", line)
        return _check_key(following.strip(), following)
    if "[upload-certs] Skipping phase" in text:
        raise KubeadmOutputError("upload-certs was skipped (run it with --upload-certs)")
    raise KubeadmOutputError(f"no {_UPLOAD_KEY_MARK!r} line in the output")


# --- tokens --------------------------------------------------------------------------------------


def parse_token_create(text: str) -> str:
    """The token printed by ``kubeadm token create`` (klog lines around it are ignored)."""
    candidates = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not _KLOG_RE.match(line) and not line.lstrip().startswith("[")
    ]
    if len(candidates) != 1:
        raise KubeadmOutputError(
            f"expected the token alone on one line, found {len(candidates)} candidate lines",
            candidates[-1] if candidates else None,
        )
    return _check_token(candidates[0], candidates[0])


@dataclass(frozen=True)
class BootstrapTokenInfo:
    """One row of ``kubeadm token list``."""

    token: str
    ttl: str  # as printed: "23h", "<forever>", "<invalid>"
    expires: dt.datetime | None  # None for a token that never expires
    usages: tuple[str, ...]
    description: str | None
    extra_groups: tuple[str, ...]

    @property
    def token_id(self) -> str:
        return self.token.split(".", 1)[0]

    def __repr__(self) -> str:
        return mask_secrets(
            f"BootstrapTokenInfo(token={self.token!r}, ttl={self.ttl!r}, expires={self.expires!r}, "
            f"usages={self.usages!r}, description={self.description!r}, "
            f"extra_groups={self.extra_groups!r})"
        )

    def public(self) -> TokenStatus:
        """What hakube shows of the token: the secret half never leaves the host."""
        return TokenStatus(
            id=self.token_id,
            ttl=self.ttl,
            expires=self.expires.isoformat() if self.expires else None,
            usages=list(self.usages),
            description=self.description,
            extra_groups=list(self.extra_groups),
        )


@dataclass
class TokenStatus:
    """A bootstrap token as `status` and `token list` show it (text and JSON alike)."""

    id: str  # the public half only
    ttl: str
    expires: str | None
    usages: list[str]
    description: str | None
    extra_groups: list[str]


def _columns(header: str) -> list[tuple[str, int]]:
    # kubeadm's tabwriter pads with at least 3 spaces, and header names contain single spaces.
    return [(m.group(0), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]


def _cells(line: str, columns: list[tuple[str, int]]) -> dict[str, str]:
    cells: dict[str, str] = {}
    for index, (name, start) in enumerate(columns):
        end = columns[index + 1][1] if index + 1 < len(columns) else None
        cells[name] = line[start:end].strip()
    return cells


def _check_aligned(line: str, columns: list[tuple[str, int]]) -> None:
    # A value that spills into the next column means the table is not laid out as expected.
    for _, start in columns[1:]:
        if start < len(line) and start > 0 and line[start - 1] != " ":
            raise KubeadmOutputError("table row does not line up with its header", line)


def _none_marker(value: str) -> str | None:
    return None if value in ("", "<none>") else value


_TOKEN_COLUMNS = ("TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS")


def parse_token_list(text: str) -> list[BootstrapTokenInfo]:
    """Rows of ``kubeadm token list``; an empty list when there are no tokens."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    header_index = next(
        (i for i, ln in enumerate(lines) if ln.startswith("TOKEN") and "EXPIRES" in ln), None
    )
    if header_index is None:
        meaningful = [ln for ln in lines if ln.strip() and not _KLOG_RE.match(ln)]
        if not meaningful:
            return []
        raise KubeadmOutputError("no TOKEN header in kubeadm token list output", meaningful[0])
    columns = _columns(lines[header_index])
    names = tuple(name for name, _ in columns)
    if names != _TOKEN_COLUMNS:
        raise KubeadmOutputError(f"unexpected token list columns {names}", lines[header_index])

    result: list[BootstrapTokenInfo] = []
    for line in lines[header_index + 1 :]:
        if not line.strip() or _KLOG_RE.match(line):
            continue
        _check_aligned(line, columns)
        cells = _cells(line, columns)
        token = _check_token(cells["TOKEN"], line)
        expires: dt.datetime | None = None
        if cells["EXPIRES"] != "<never>":
            try:
                expires = dt.datetime.fromisoformat(cells["EXPIRES"])
            except ValueError:
                raise KubeadmOutputError("EXPIRES is not an RFC 3339 time", line) from None
            if expires.tzinfo is None:
                raise KubeadmOutputError("EXPIRES has no time zone", line)
        usages = _none_marker(cells["USAGES"])
        groups = _none_marker(cells["EXTRA GROUPS"])
        result.append(
            BootstrapTokenInfo(
                token=token,
                ttl=cells["TTL"],
                expires=expires,
                usages=tuple(usages.split(",")) if usages else (),
                description=_none_marker(cells["DESCRIPTION"]),
                extra_groups=tuple(groups.split(",")) if groups else (),
            )
        )
    return result


# --- failures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreflightIssue:
    """``[ERROR Port-6443]: Port 6443 is in use`` → check ``Port-6443``, message after the colon."""

    check: str
    message: str


_ISSUE_RE = re.compile(r"^\s*\[(ERROR|WARNING) ([^\]]+)\]:\s?(.*)$")
_CONTINUATION_STOP = re.compile(r"^\s*(\[|error execution phase|To see the stack trace)")


def _preflight(text: str, level: str) -> list[PreflightIssue]:
    issues: list[tuple[str, str, list[str]]] = []
    current: list[str] | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        match = _ISSUE_RE.match(line)
        if match:
            current = [match.group(3).rstrip()]
            issues.append((match.group(1), match.group(2), current))
        elif (
            current is not None
            and line.strip()
            and not _CONTINUATION_STOP.match(line)
            and not _KLOG_RE.match(line)
        ):
            # Some checks embed a command's multi-line output (e.g. crictl's for [ERROR CRI]).
            current.append(line.rstrip())
        else:
            current = None
    return [
        PreflightIssue(check=check, message=mask_secrets("\n".join(parts)))
        for kind, check, parts in issues
        if kind == level
    ]


def parse_preflight_errors(text: str) -> list[PreflightIssue]:
    """The ``[ERROR X]: message`` entries of a failed init/join (empty when there are none)."""
    return _preflight(text, "ERROR")


def parse_preflight_warnings(text: str) -> list[PreflightIssue]:
    return _preflight(text, "WARNING")


@dataclass(frozen=True)
class KubeadmPhaseFailure:
    """``error execution phase <phase>: <message>`` and the lines explaining it."""

    phase: str
    message: str


_PHASE_ERROR_RE = re.compile(r"^error execution phase ([\w/-]+):\s*(.*)$")


def parse_phase_error(text: str) -> KubeadmPhaseFailure | None:
    """The failing phase of a kubeadm workflow, or None if the output shows no phase failure."""
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        match = _PHASE_ERROR_RE.match(line.strip())
        if not match:
            continue
        body = [match.group(2).rstrip()] if match.group(2).strip() else []
        for following in lines[index + 1 :]:
            if following.startswith("To see the stack trace"):
                break
            body.append(following.rstrip())
        return KubeadmPhaseFailure(
            phase=match.group(1), message=mask_secrets("\n".join(body).strip("\n"))
        )
    return None
