"""Result type, error messages and redaction shared by every transport."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from hakube.transport.base import (
    DEFAULT_COMMAND_TIMEOUT,
    AuthFailed,
    CommandResult,
    ConnectError,
    ConnectionRefused,
    HostKeyMismatch,
    HostKeyUnknown,
    Redactor,
    TransportError,
    command_failed,
)
from hakube.transport.scripted import Reply, ScriptedTransport


def test_redactor_hides_every_secret_longest_first() -> None:
    redactor = Redactor(["abc", "abcdef"])
    redactor.register("")  # ignored: would match everywhere
    assert len(redactor) == 2
    assert redactor.redact("x abcdef y abc z") == "x *** y *** z"
    assert redactor.redact("a.c (regex chars)") == "a.c (regex chars)"
    assert Redactor().redact("plain") == "plain"
    dotted = Redactor(["a.c"])
    assert dotted.redact("abc a.c") == "abc ***"


def test_command_result_ok_and_stderr_tail() -> None:
    stderr = "\n".join(f"line {i}" for i in range(20)) + "\n"
    result = CommandResult("cp1", "cmd", 1, "", stderr, 0.1)
    assert not result.ok
    assert result.stderr_tail(2) == "line 18\nline 19"
    assert result.stderr_tail(0) == ""
    assert len(result.stderr_tail().splitlines()) == 10
    assert CommandResult("cp1", "cmd", 0, "", "", 0.0).ok


def test_command_failed_redacts_command_stderr_and_stdout() -> None:
    result = CommandResult("cp1", "join --token s3cr3t", 2, "s3cr3t out", "err s3cr3t\n", 0.1)
    err = command_failed(result, Redactor(["s3cr3t"]))
    assert "s3cr3t" not in str(err) + err.stdout + err.stderr_tail
    assert str(err).startswith("cp1: command exited 2: join --token ***")


def test_errors_name_the_host_and_the_fix() -> None:
    errors: list[TransportError] = [
        ConnectionRefused("cp1", "10.0.0.1", 22, 4),
        AuthFailed("cp1", "ops", "/k"),
        HostKeyUnknown("cp1", "10.0.0.1", "/kh", "SHA256:x"),
        HostKeyMismatch("cp1", "10.0.0.1", "/kh", "SHA256:x"),
    ]
    for err in errors:
        assert isinstance(err, ConnectError)
        assert str(err).startswith("cp1: ")
        assert err.host == "cp1"
    assert "sshd" in str(errors[0])
    assert "authorized_keys" in str(errors[1])
    assert "--trust-new-hosts" in str(errors[2])
    assert "man in the" in str(errors[3])
    assert "ssh-keygen -R '10.0.0.1' -f /kh" in str(errors[3])


def test_a_command_run_without_a_limit_gets_the_default_one() -> None:
    t = ScriptedTransport("h1").on("true", Reply())
    asyncio.run(t.run("true"))
    asyncio.run(t.run("true", timeout=5))
    assert [c.timeout for c in t.calls] == [DEFAULT_COMMAND_TIMEOUT, 5]


#: `.run(...)` calls in src/hakube that are not remote commands.
_NOT_REMOTE = ("asyncio.run", "subprocess.run", "Validation.run", "phase.run", "_Builder().run")


def test_every_remote_command_in_the_product_names_its_own_limit() -> None:
    """The default limit is a net: each caller says how long its kind of command may take."""
    src = Path(__file__).resolve().parents[2] / "src" / "hakube"
    missing = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "run" or ast.unparse(node.func).endswith(_NOT_REMOTE):
                continue
            if not {k.arg for k in node.keywords} & {"timeout", None}:
                missing.append(f"{path.relative_to(src)}:{node.lineno}")
    assert missing == []
