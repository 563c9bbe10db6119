"""SSHTransport against a real in-process asyncssh server on 127.0.0.1 (see transport.loopback)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest

from hakube.transport.base import (
    AuthFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    Redactor,
    RemoteFileNotFound,
    Transport,
    TransportError,
)
from hakube.transport.loopback import LoopbackSSHServer, write_private_key
from hakube.transport.pool import SSHPool, connect_all
from hakube.transport.ssh import SSHTransport, remote_command
from hakube.transport.target import SSHTarget, known_hosts_entry

Body = Callable[[LoopbackSSHServer], Awaitable[None]]


def serve(tmp_path: Path, body: Body) -> None:
    async def main() -> None:
        async with LoopbackSSHServer(tmp_path / "server") as server:
            await body(server)

    asyncio.run(main())


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_reports_exit_status_stdout_and_stderr(tmp_path: Path) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()]) as pool:
            t = pool["node1"]
            assert isinstance(t, Transport)
            result = await t.run("echo out; echo err >&2; exit 3", check=False)
            assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
            assert not result.ok
            assert result.host == "node1"
            assert result.duration > 0
            ok = await t.run("printf '%s' \"$0\" | head -c 4")
            assert ok.ok
            assert ok.stdout == "bash"

    serve(tmp_path, body)


@pytest.mark.parametrize(
    ("server_accepts", "negotiated"),
    [
        ((), b"aes128-gcm@openssh.com"),
        (("chacha20-poly1305@openssh.com", "aes256-ctr"), b"chacha20-poly1305@openssh.com"),
    ],
)
def test_aes_gcm_is_preferred_and_a_server_without_it_is_still_reached(
    tmp_path: Path, server_accepts: tuple[str, ...], negotiated: bytes
) -> None:
    async def main() -> None:
        server = LoopbackSSHServer(tmp_path / "server", encryption_algs=server_accepts)
        async with server, await connect_all([server.target()]) as pool:
            t = pool["node1"]
            assert isinstance(t, SSHTransport)
            assert (await t.run("true")).ok
            assert t._conn._enc_alg_cs == negotiated

    asyncio.run(main())


def test_run_feeds_stdin_text_and_binary(tmp_path: Path) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()]) as pool:
            t = pool["node1"]
            assert (await t.run("tr a-z A-Z", stdin="hello")).stdout == "HELLO"
            blob = bytes(range(256)) * 64
            counted = await t.run("wc -c", stdin=blob)
            assert counted.stdout.strip() == str(len(blob))
            # No stdin must mean EOF, not a command waiting forever.
            assert (await t.run("cat", timeout=5)).stdout == ""

    serve(tmp_path, body)


def test_check_raises_command_failed_with_secrets_redacted(tmp_path: Path) -> None:
    secret = "tok-9f8e7d.s3cr3tvalue"
    redactor = Redactor([secret])

    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()], redactor=redactor) as pool:
            t = pool["node1"]
            with pytest.raises(CommandFailed) as caught:
                await t.run(f"echo 'bad token {secret}' >&2; exit 7")
            err = caught.value
            assert err.exit_status == 7
            assert err.host == "node1"
            assert secret not in str(err)
            assert "***" in err.command
            assert "bad token ***" in err.stderr_tail
            assert "exited 7" in str(err)
            unchecked = await t.run(f"echo {secret}", check=False)
            assert secret not in unchecked.command
            assert unchecked.stdout.strip() == secret  # facts still see real output

    serve(tmp_path, body)


def test_timeout_raises_and_abandons_the_command(tmp_path: Path) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()]) as pool:
            t = pool["node1"]
            started = time.monotonic()
            with pytest.raises(CommandTimeout) as caught:
                await t.run("sleep 30", timeout=0.3)
            assert time.monotonic() - started < 3
            assert caught.value.timeout == 0.3
            assert "0.3s" in str(caught.value)
            # The connection survives, and the server side saw the channel go and killed it.
            assert (await t.run("echo still-here")).stdout == "still-here\n"
            for _ in range(50):
                if server._active == 0:
                    break
                await asyncio.sleep(0.05)
            assert server._active == 0

    serve(tmp_path, body)


def test_sudo_wraps_commands_for_non_root_users(tmp_path: Path) -> None:
    assert remote_command("echo 'a b'", sudo=True, user="ops") == (
        "sudo -n bash -c 'echo '\"'\"'a b'\"'\"''"
    )
    assert remote_command("id", sudo=True, user="root") == "bash -c id"
    assert remote_command("id", sudo=False, user="ops") == "bash -c id"

    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target(user="ops", sudo=True)]) as pool:
            await pool["node1"].run("id -u", check=False)
            assert server.commands[-1] == "sudo -n bash -c 'id -u'"

    serve(tmp_path, body)


@pytest.mark.parametrize("use_sftp", [True, False], ids=["sftp", "shell"])
def test_put_replaces_atomically_and_sets_mode(tmp_path: Path, use_sftp: bool) -> None:
    dest = tmp_path / "etc" / "deep" / "kubeadm.yaml"

    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()], use_sftp=use_sftp) as pool:
            t = pool["node1"]
            await t.put(str(dest), b"first\n", mode=0o600)
            assert dest.read_bytes() == b"first\n"
            assert stat.S_IMODE(dest.stat().st_mode) == 0o600
            before = dest.stat().st_ino
            with dest.open("rb") as reader:
                await t.put(str(dest), b"second\n" * 1000, mode=0o755)
                # A reader of the old file keeps a whole old file: replaced by rename, not
                # rewritten in place.
                assert reader.read() == b"first\n"
            assert dest.stat().st_ino != before
            assert dest.read_bytes() == b"second\n" * 1000
            assert stat.S_IMODE(dest.stat().st_mode) == 0o755
            assert sorted(p.name for p in dest.parent.iterdir()) == ["kubeadm.yaml"]
            assert await t.get(str(dest)) == b"second\n" * 1000

    serve(tmp_path, body)


def test_put_with_owner_uses_the_shell_path(tmp_path: Path) -> None:
    dest = tmp_path / "owned"
    owner = f"{os.getuid()}:{os.getgid()}"

    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()]) as pool:
            await pool["node1"].put(str(dest), b"x", mode=0o640, owner=owner)
            assert "chown" in server.commands[-1]
            assert stat.S_IMODE(dest.stat().st_mode) == 0o640

    serve(tmp_path, body)


@pytest.mark.parametrize("use_sftp", [True, False], ids=["sftp", "shell"])
def test_get_missing_file_raises_remote_file_not_found(tmp_path: Path, use_sftp: bool) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()], use_sftp=use_sftp) as pool:
            missing = str(tmp_path / "nope" / "missing.conf")
            with pytest.raises(RemoteFileNotFound) as caught:
                await pool["node1"].get(missing)
            assert caught.value.path == missing
            (tmp_path / "bin").write_bytes(b"\x00\xff\x00")
            assert await pool["node1"].get(str(tmp_path / "bin")) == b"\x00\xff\x00"

    serve(tmp_path, body)


def test_unknown_host_key_is_refused_without_trust(tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")

    async def body(server: LoopbackSSHServer) -> None:
        pool = await connect_all([server.target(known_hosts=empty)])
        err = pool.errors["node1"]
        assert isinstance(err, HostKeyUnknown)
        assert "--trust-new-hosts" in str(err)
        assert server.host_key.get_fingerprint() in str(err)
        assert empty.read_text() == ""
        assert server.commands == []

    serve(tmp_path, body)


def test_trust_new_hosts_records_key_then_strict_connect_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known = tmp_path / "state" / "known_hosts"

    async def body(server: LoopbackSSHServer) -> None:
        target = server.target(known_hosts=known)
        with caplog.at_level(logging.WARNING, logger="hakube.transport"):
            async with await connect_all([target], trust_new_hosts=True) as pool:
                assert pool.ok
                assert pool.recorded == {"node1": server.host_key.get_fingerprint()}
        assert any("trusted NEW host key" in r.getMessage() for r in caplog.records)
        assert stat.S_IMODE(known.stat().st_mode) == 0o600
        entry = known_hosts_entry("127.0.0.1", server.port)
        assert known.read_text().startswith(f"{entry} ssh-ed25519 ")
        async with await connect_all([target]) as again:
            assert again.ok
            assert again.recorded == {}
            assert (await again["node1"].run("echo pinned")).stdout == "pinned\n"
        assert len(known.read_text().splitlines()) == 1

    serve(tmp_path, body)


def test_a_dry_run_trusts_a_new_host_key_for_that_run_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dry run writes nothing locally: known_hosts is neither created nor changed."""
    known = tmp_path / "state" / "known_hosts"

    async def body(server: LoopbackSSHServer) -> None:
        target = server.target(known_hosts=known)
        with caplog.at_level(logging.WARNING, logger="hakube.transport"):
            pool = await connect_all([target], trust_new_hosts=True, record_new_keys=False)
            async with pool:
                assert pool.ok
                assert (await pool["node1"].run("echo trusted")).stdout == "trusted\n"
        assert any("for this dry run only" in r.getMessage() for r in caplog.records)
        assert not known.exists()
        assert not known.parent.exists()
        # The next run without trust still refuses the unknown key.
        strict = await connect_all([target], retries=0)
        assert isinstance(strict.errors["node1"], HostKeyUnknown)
        await strict.close()

    serve(tmp_path, body)


def test_changed_host_key_is_a_mismatch_even_with_trust(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"

    async def body(server: LoopbackSSHServer) -> None:
        impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        entry = known_hosts_entry("127.0.0.1", server.port)
        known.write_text(f"{entry} {impostor}")
        started = time.monotonic()
        pool = await connect_all(
            [server.target(known_hosts=known)], trust_new_hosts=True, backoff=5
        )
        assert time.monotonic() - started < 3  # never retried
        err = pool.errors["node1"]
        assert isinstance(err, HostKeyMismatch)
        assert "CHANGED" in str(err)
        assert f"ssh-keygen -R '{entry}'" in str(err)
        assert server.host_key.get_fingerprint() in str(err)
        assert known.read_text() == f"{entry} {impostor}"

    serve(tmp_path, body)


def test_wrong_client_key_is_auth_failed_without_retry(tmp_path: Path) -> None:
    other = write_private_key(asyncssh.generate_private_key("ssh-ed25519"), tmp_path / "other")

    async def body(server: LoopbackSSHServer) -> None:
        started = time.monotonic()
        pool = await connect_all([server.target(key_file=other, user="ops")], backoff=5)
        assert time.monotonic() - started < 3
        err = pool.errors["node1"]
        assert isinstance(err, AuthFailed)
        assert "authorized_keys" in str(err)
        assert err.user == "ops"

    serve(tmp_path, body)


def test_unreadable_key_file_is_auth_failed(tmp_path: Path) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        pool = await connect_all([server.target(key_file=tmp_path / "absent")])
        assert isinstance(pool.errors["node1"], AuthFailed)
        assert "cannot load the private key" in str(pool.errors["node1"])

    serve(tmp_path, body)


def test_refused_port_fails_after_bounded_retries(tmp_path: Path) -> None:
    target = SSHTarget("cp9", "127.0.0.1", free_port(), known_hosts=tmp_path / "kh")

    async def main() -> SSHPool:
        return await connect_all([target], retries=2, backoff=0.01)

    pool = asyncio.run(main())
    err = pool.errors["cp9"]
    assert isinstance(err, ConnectionRefused)
    assert err.attempts == 3
    assert "sshd is running" in str(err)


def test_silent_port_times_out_after_bounded_retries(tmp_path: Path) -> None:
    with socket.socket() as silent:
        # The kernel completes the TCP handshake from the backlog, but no banner ever comes.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = int(silent.getsockname()[1])
        target = SSHTarget(
            "cp8", "127.0.0.1", port, known_hosts=tmp_path / "kh", connect_timeout=0.2
        )

        async def main() -> SSHPool:
            return await connect_all([target], retries=1, backoff=0.01)

        pool = asyncio.run(main())
    err = pool.errors["cp8"]
    assert isinstance(err, ConnectTimeout)
    assert err.attempts == 2


def test_connect_all_reports_every_host(tmp_path: Path) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        targets = [
            server.target("cp1"),
            SSHTarget("cp2", "127.0.0.1", free_port(), known_hosts=tmp_path / "kh"),
            server.target("cp3"),
        ]
        async with await connect_all(targets, retries=0) as pool:
            assert sorted(pool.transports) == ["cp1", "cp3"]
            assert isinstance(pool.errors["cp2"], ConnectionRefused)
            assert not pool.ok
            with pytest.raises(ConnectionRefused):
                pool["cp2"]
            results = await asyncio.gather(*(t.run("echo up") for t in pool.transports.values()))
            assert [r.host for r in results] == ["cp1", "cp3"]

    serve(tmp_path, body)
    with pytest.raises(ValueError, match="duplicate"):
        asyncio.run(connect_all([SSHTarget("a", "x"), SSHTarget("a", "y")]))


def test_concurrent_runs_respect_the_channel_cap(tmp_path: Path) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()], max_channels=3) as pool:
            t = pool["node1"]
            results = await asyncio.gather(*(t.run("sleep 0.1; echo $$") for _ in range(12)))
            assert all(r.ok for r in results)
            assert server.max_active == 3

    serve(tmp_path, body)


def test_closed_transport_refuses_work(tmp_path: Path) -> None:
    async def body(server: LoopbackSSHServer) -> None:
        pool = await connect_all([server.target()])
        t: SSHTransport = pool["node1"]
        await pool.close()
        await t.close()  # idempotent
        with pytest.raises(TransportError, match="already closed"):
            await t.run("true")

    serve(tmp_path, body)


def test_a_file_transfer_that_hangs_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO nobody writes to never ends a read: the transfer is bounded like a command.

    Shell transfers only: the in-process test server would block its own event loop opening
    the FIFO for SFTP (a real sshd runs sftp-server in its own process)."""
    monkeypatch.setattr("hakube.transport.ssh.FILE_TIMEOUT", 0.5)
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)

    async def body(server: LoopbackSSHServer) -> None:
        async with await connect_all([server.target()], use_sftp=False) as pool:
            started = time.monotonic()
            with pytest.raises(CommandTimeout) as caught:
                await pool["node1"].get(str(fifo))
            assert time.monotonic() - started < 5
            assert str(fifo) in str(caught.value)

    serve(tmp_path, body)
