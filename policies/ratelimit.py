"""Per-tenant rate limits: token buckets for requests per minute and tokens per minute.

Each bucket holds up to one minute's allowance (capacity = the per-minute limit) and refills
continuously, so a tenant can burst a minute's worth and then runs at the steady rate.

Tokens are only known after generation, so they are charged afterwards (`charge_tokens`), which
may drive the bucket negative: a request that used more than what was left puts the tenant in
debt, and `check_tokens` refuses new requests until the debt is refilled. A request is admitted
while any token allowance is left, because its cost cannot be known in advance.

Buckets live in this process: with several ingress replicas, each enforces the limit on its own
share of the traffic (a tenant can get up to replicas x limit).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from policies.schema import Limits

__all__ = ["RateLimiter", "Refusal", "retry_after_header"]


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, per_minute: float, now: float) -> None:
        # A changed limit (policy reload) takes effect at once: the capacity follows it, and a lowered
        # capacity caps what is left; a raised one refills at the new rate.
        self.capacity = per_minute
        self.level = min(per_minute, self.level + (now - self.updated) * per_minute / 60.0)
        self.updated = now

    def seconds_until(self, level: float, per_minute: float) -> float:
        return max(0.0, (level - self.level) * 60.0 / per_minute)


@dataclass(frozen=True)
class Refusal:
    limit: str  # "tokens" or "requests": which bucket is empty
    retry_after_s: float


class RateLimiter:
    """Token buckets keyed by tenant name. Thread-safe; `now` is injectable for tests."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, tenant: str, kind: str, per_minute: float, now: float) -> _Bucket:
        bucket = self._buckets.get((tenant, kind))
        if bucket is None:
            bucket = self._buckets[(tenant, kind)] = _Bucket(per_minute, per_minute, now)  # starts full
        bucket.refill(per_minute, now)
        return bucket

    def _check_request(self, tenant: str, per_minute: int | None, now: float) -> float | None:
        if per_minute is None:
            return None
        bucket = self._bucket(tenant, "requests", per_minute, now)
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return None
        return bucket.seconds_until(1.0, per_minute)

    def _check_tokens(self, tenant: str, per_minute: int | None, now: float) -> float | None:
        if per_minute is None:
            return None
        bucket = self._bucket(tenant, "tokens", per_minute, now)
        if bucket.level > 0.0:
            return None
        # Wait until a whole token is back, so the retry is admitted and the answer is never 0.
        return bucket.seconds_until(1.0, per_minute)

    def check_request(self, tenant: str, limits: Limits) -> float | None:
        """None if admitted (one request is counted), else seconds until one would be."""
        with self._lock:
            return self._check_request(tenant, limits.requests_per_minute, self._now())

    def check_tokens(self, tenant: str, limits: Limits) -> float | None:
        """None while the tenant has token allowance left (nothing is consumed), else seconds until it has."""
        with self._lock:
            return self._check_tokens(tenant, limits.tokens_per_minute, self._now())

    def refusal(self, tenant: str, limits: Limits) -> Refusal | None:
        """Both checks at once: None if admitted, else which limit refused and for how long. A
        request refused for tokens is not counted against the request limit."""
        with self._lock:
            now = self._now()
            wait = self._check_tokens(tenant, limits.tokens_per_minute, now)
            if wait is not None:
                return Refusal("tokens", wait)
            wait = self._check_request(tenant, limits.requests_per_minute, now)
            return None if wait is None else Refusal("requests", wait)

    def admit(self, tenant: str, limits: Limits) -> float | None:
        """`refusal` as just the seconds to wait (None if admitted)."""
        refused = self.refusal(tenant, limits)
        return None if refused is None else refused.retry_after_s

    def charge_tokens(self, tenant: str, limits: Limits, n: int) -> None:
        """Charge `n` prompt + completion tokens after a request; may leave the bucket negative."""
        if limits.tokens_per_minute is None or n <= 0:
            return
        with self._lock:
            self._bucket(tenant, "tokens", limits.tokens_per_minute, self._now()).level -= n

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the buckets of tenants not in `keep` (after a reload removed them), bounding memory."""
        kept = set(keep)
        with self._lock:
            for key in [k for k in self._buckets if k[0] not in kept]:
                del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """The Retry-After header value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
