from __future__ import annotations

import re
import string

import pytest

from hakube.secrets import (
    HAPROXY_STATS_PASSWORD_LENGTH,
    bootstrap_token_id,
    generate_bootstrap_token,
    generate_certificate_key,
    generate_haproxy_stats_password,
    generate_password,
    generate_vrrp_password,
    is_bootstrap_token,
    is_ca_cert_hash,
    is_certificate_key,
)

TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


def test_bootstrap_tokens_match_kubeadm_format_and_are_distinct() -> None:
    tokens = [generate_bootstrap_token() for _ in range(1000)]
    assert all(TOKEN_RE.fullmatch(t) for t in tokens)
    assert all(is_bootstrap_token(t) for t in tokens)
    assert len(set(tokens)) == 1000


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abcdef0123456789abcdef",
        "ABCDEF.0123456789abcdef",
        "abcde.0123456789abcdef",
        "abcdef.0123456789abcde",
        "abcdef.0123456789abcdef\n",
        " abcdef.0123456789abcdef",
        "abcdef_0123456789abcdef",
    ],
)
def test_is_bootstrap_token_rejects(value: str) -> None:
    assert not is_bootstrap_token(value)


def test_token_id_is_the_public_half() -> None:
    assert bootstrap_token_id("o5v6fg.fml7267hnzagm7g3") == "o5v6fg"
    with pytest.raises(ValueError, match="not a bootstrap token"):
        bootstrap_token_id("nope")


def test_certificate_keys_are_64_hex_and_distinct() -> None:
    keys = [generate_certificate_key() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
    assert all(is_certificate_key(k) for k in keys)
    assert len(set(keys)) == 1000
    assert len(bytes.fromhex(keys[0])) == 32


def test_ca_cert_hash_format() -> None:
    assert is_ca_cert_hash("sha256:" + "ab" * 32)
    assert not is_ca_cert_hash("sha256:" + "AB" * 32)
    assert not is_ca_cert_hash("sha1:" + "ab" * 20)


def test_vrrp_password_is_eight_alphanumerics() -> None:
    passwords = {generate_vrrp_password() for _ in range(200)}
    assert len(passwords) == 200
    for p in passwords:
        assert len(p) == 8
        assert set(p) <= set(string.ascii_letters + string.digits)


def test_haproxy_password_is_long_and_config_safe() -> None:
    p = generate_haproxy_stats_password()
    assert len(p) == HAPROXY_STATS_PASSWORD_LENGTH
    assert p.isalnum()
    assert p.isascii()


def test_generate_password_uses_the_given_alphabet() -> None:
    p = generate_password(64, "ab")
    assert set(p) <= {"a", "b"}
    assert len(p) == 64


@pytest.mark.parametrize("alphabet", ["a b", "ab#", "ab'", 'ab"', "ab\\", "ab{", "ab$"])
def test_generate_password_refuses_config_breaking_characters(alphabet: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        generate_password(8, alphabet)


@pytest.mark.parametrize(("length", "alphabet"), [(0, "ab"), (-1, "ab"), (8, ""), (8, "aaaa")])
def test_generate_password_refuses_degenerate_requests(length: int, alphabet: str) -> None:
    with pytest.raises(ValueError, match=r"length|alphabet"):
        generate_password(length, alphabet)
