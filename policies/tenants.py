"""Who is calling: API keys to tenants, from an `Authorization: Bearer KEY` header.

Keys are compared as SHA-256 hashes (the file may store keys hashed, 'sha256:<hex>', so it is not a
secret itself), in constant time: the presented key's hash is compared with every stored hash by
`hmac.compare_digest`, with no early exit, so how long authentication takes does not depend on
which key matched, on how much of a stored hash a guess shares, or on whether any matched. (A dict
lookup would leak, through timing, at most the hash of the presented key, which does not reveal a
key; the loop removes even that question, at a cost linear in the number of keys, a few per tenant.)
Keys are never logged: errors say only that a key is missing, malformed or unknown.

An unknown key is refused, never downgraded to the anonymous tenant: a tenant whose key has a
typo must see a 401, not silently get the public policy and limits. The one exception is a file
that defines no keys at all: then a header cannot name anyone and is ignored, so OpenAI clients
(which always send some key) work against the shipped default.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from policies.schema import SHA256_PREFIX

__all__ = ["AuthError", "Tenant", "hash_key", "stored_key_hash", "authenticate"]


class AuthError(Exception):
    """The request cannot be attributed to a tenant: answer HTTP 401."""

    status = 401

    def __init__(self, message: str, *, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Tenant:
    name: str
    policy: str
    # Hashes only ("sha256:<hex>"): a Tenant may be logged or shown without revealing keys.
    key_hashes: frozenset[str] = frozenset()


def hash_key(key: str) -> str:
    """'sha256:<hex>' of a plain key: what operators put in the policy file instead of the key."""
    return SHA256_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def stored_key_hash(entry: str) -> str:
    """The hash of a policy file key entry, which is either already 'sha256:<hex>' or a plain key."""
    return entry if entry.startswith(SHA256_PREFIX) else hash_key(entry)


def _bearer_key(header: str) -> str:
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    # The auth scheme is case-insensitive (RFC 7235); the key is one token.
    if scheme.lower() != "bearer" or not key or any(c.isspace() for c in key):
        raise AuthError("malformed Authorization header: expected 'Bearer <API key>'")
    return key


def authenticate(
    authorization: str | None, *, keys: Mapping[str, Tenant], anonymous: Tenant | None
) -> Tenant:
    """The tenant for a request's Authorization header (None when absent). Raises AuthError (401).

    `keys` maps key hashes to tenants; `anonymous` serves requests without a header.
    """
    if not keys and anonymous is not None:
        return anonymous  # no keys defined anywhere: a header carries no identity (see module docstring)
    if authorization is None:
        if anonymous is None:
            raise AuthError("missing API key: send 'Authorization: Bearer <API key>'", code="missing_api_key")
        return anonymous
    presented = hash_key(_bearer_key(authorization))
    tenant = None
    for stored, candidate in keys.items():  # every key, no early exit (see module docstring)
        if hmac.compare_digest(stored, presented):
            tenant = candidate
    if tenant is None:
        raise AuthError("invalid API key")  # never echo the key
    return tenant
