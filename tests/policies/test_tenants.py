"""Authentication: Authorization header to tenant, 401 cases, no fallback to the anonymous tenant."""

from __future__ import annotations

import hashlib

import pytest

from policies.tenants import AuthError, hash_key
from tests.policies.builders import build_policy_set

TENANTS = {
    "public": {"policy": "default"},
    "acme": {"policy": "default", "keys": [hash_key("acme-key")]},
    "beta": {"policy": "default", "keys": ["beta-plain-key"]},
}


def test_hash_key() -> None:
    assert hash_key("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_hashed_and_plain_keys() -> None:
    policies = build_policy_set(tenants=TENANTS)
    assert policies.authenticate("Bearer acme-key").name == "acme"
    assert policies.authenticate("bearer   beta-plain-key ").name == "beta"
    # Plain keys are kept hashed in memory too.
    assert "beta-plain-key" not in repr(policies.tenants["beta"])


def test_missing_header_uses_anonymous_tenant() -> None:
    assert build_policy_set(tenants=TENANTS).authenticate(None).name == "public"


def test_missing_header_without_anonymous_tenant() -> None:
    policies = build_policy_set(tenants=TENANTS, anonymous_tenant=None)
    with pytest.raises(AuthError, match="missing API key") as info:
        policies.authenticate(None)
    assert info.value.status == 401
    assert policies.authenticate("Bearer acme-key").name == "acme"


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic YWJjOmRlZg==", "acme-key", "Bearer a b"])
def test_malformed_header(header: str) -> None:
    with pytest.raises(AuthError, match="malformed Authorization header"):
        build_policy_set(tenants=TENANTS).authenticate(header)


def test_unknown_key_is_refused_not_downgraded() -> None:
    with pytest.raises(AuthError) as info:
        build_policy_set(tenants=TENANTS).authenticate("Bearer acme-kez")
    assert info.value.message == "invalid API key"
    assert "acme-kez" not in str(info.value)
    assert info.value.code == "invalid_api_key"


def test_header_is_ignored_when_no_keys_are_defined() -> None:
    # OpenAI clients always send a key; against a keyless file (the shipped default) it names no one.
    policies = build_policy_set()
    assert policies.authenticate("Bearer unused").name == "public"
    assert policies.authenticate("garbage").name == "public"


@pytest.mark.parametrize("header", ["Bearer acme-key", "Bearer beta-plain-key", "Bearer wrong-key"])
def test_keys_are_compared_in_constant_time(header: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored key is compared, with hmac.compare_digest, whichever key matches (or none): the
    work, and so the time, does not depend on the key presented."""
    import hmac

    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    policies = build_policy_set(tenants=TENANTS)
    try:
        policies.authenticate(header)
    except AuthError:
        assert header == "Bearer wrong-key"
    stored = {hash_key("acme-key"), hash_key("beta-plain-key")}
    assert {a for a, _ in calls} == stored and len(calls) == len(stored)
    assert {b for _, b in calls} == {hash_key(header.split()[1])}
