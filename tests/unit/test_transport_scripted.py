"""The scripted fake must behave like a Transport and make unexpected commands loud."""

from __future__ import annotations

import asyncio
import re

import pytest

from hakube.transport.base import (
    DEFAULT_COMMAND_TIMEOUT,
    CommandFailed,
    CommandTimeout,
    Redactor,
    RemoteFileNotFound,
    Transport,
    TransportError,
)
from hakube.transport.scripted import Call, FakeFile, Reply, ScriptedTransport, UnscriptedCommand


def test_rules_match_exact_then_regex_in_order_and_calls_are_recorded() -> None:
    fake = ScriptedTransport(
        "cp1",
        [
            ("systemctl is-active haproxy", Reply("active\n")),
            (re.compile(r"systemctl is-active \S+"), "inactive\n"),
        ],
    )
    assert isinstance(fake, Transport)

    async def main() -> None:
        assert (await fake.run("systemctl is-active haproxy")).stdout == "active\n"
        assert (await fake.run("systemctl is-active keepalived")).stdout == "inactive\n"

    asyncio.run(main())
    assert fake.commands == ["systemctl is-active haproxy", "systemctl is-active keepalived"]
    assert fake.calls[0] == Call(
        "run", "systemctl is-active haproxy", timeout=DEFAULT_COMMAND_TIMEOUT
    )


def test_regex_must_match_the_whole_command() -> None:
    fake = ScriptedTransport("cp1", [(re.compile(r"echo \d+"), "n")])
    with pytest.raises(UnscriptedCommand):
        asyncio.run(fake.run("echo 12; rm -rf /"))


def test_unmatched_command_fails_loudly_and_is_not_a_transport_error() -> None:
    fake = ScriptedTransport("cp1").on("uname -r", "6.1\n")
    with pytest.raises(UnscriptedCommand) as caught:
        asyncio.run(fake.run("kubeadm reset -f"))
    message = str(caught.value)
    assert "'kubeadm reset -f'" in message
    assert "exact 'uname -r'" in message
    # Code under test that handles TransportError must not swallow it.
    assert not isinstance(caught.value, TransportError)
    assert isinstance(caught.value, AssertionError)


def test_callable_rules_see_the_call_and_stdin() -> None:
    def echo_back(call: Call) -> Reply:
        assert call.stdin is not None
        return Reply(stdout=call.stdin.decode().upper())

    fake = ScriptedTransport("cp1", [(re.compile("tee .*"), echo_back)])
    result = asyncio.run(fake.run("tee /tmp/x", stdin="abc"))
    assert result.stdout == "ABC"
    assert fake.calls[0].stdin == b"abc"


def test_check_raises_command_failed_with_redaction() -> None:
    redactor = Redactor(["hunter2"])
    fake = ScriptedTransport(
        "cp2",
        [(re.compile("login .*"), Reply(stderr="bad password hunter2\n", exit_status=5))],
        redactor=redactor,
    )
    with pytest.raises(CommandFailed) as caught:
        asyncio.run(fake.run("login --password hunter2"))
    assert caught.value.exit_status == 5
    assert "hunter2" not in str(caught.value)
    assert caught.value.command == "login --password ***"
    unchecked = asyncio.run(fake.run("login --password hunter2", check=False))
    assert unchecked.exit_status == 5
    assert fake.commands == ["login --password hunter2"] * 2


def test_delay_beyond_timeout_raises_command_timeout() -> None:
    fake = ScriptedTransport("cp1", [("etcdctl endpoint health", Reply(delay=30))])
    with pytest.raises(CommandTimeout):
        asyncio.run(fake.run("etcdctl endpoint health", timeout=5))
    assert asyncio.run(fake.run("etcdctl endpoint health")).duration == 30


def test_files_put_get_and_missing() -> None:
    fake = ScriptedTransport("cp1", files={"/etc/hostname": b"cp1\n"})

    async def main() -> None:
        assert await fake.get("/etc/hostname") == b"cp1\n"
        await fake.put("/etc/kubernetes/admin.conf", b"cfg", mode=0o600, owner="root:root")
        assert await fake.get("/etc/kubernetes/admin.conf") == b"cfg"
        with pytest.raises(RemoteFileNotFound):
            await fake.get("/etc/missing")

    asyncio.run(main())
    assert fake.files["/etc/kubernetes/admin.conf"] == FakeFile(b"cfg", 0o600, "root:root")
    assert [c.kind for c in fake.calls] == ["get", "put", "get", "get"]


def test_closed_fake_refuses_work() -> None:
    fake = ScriptedTransport("cp1", [("true", "")])
    asyncio.run(fake.close())
    with pytest.raises(TransportError, match="closed"):
        asyncio.run(fake.run("true"))
