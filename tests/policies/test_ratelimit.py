"""Token-bucket rate limits with a fake clock: request and token limits, retry-after, refill, reloads."""

from __future__ import annotations

import pytest

from policies.ratelimit import RateLimiter, Refusal, retry_after_header
from policies.schema import Limits


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_unlimited(clock: FakeClock) -> None:
    limiter = RateLimiter(now=clock)
    for _ in range(1000):
        assert limiter.admit("t", Limits()) is None
    limiter.charge_tokens("t", Limits(), 10**9)
    assert limiter.check_tokens("t", Limits()) is None


def test_request_limit_and_refill(clock: FakeClock) -> None:
    limiter, limits = RateLimiter(now=clock), Limits(requests_per_minute=6)  # one per 10 s
    assert all(limiter.check_request("a", limits) is None for _ in range(6))  # a full minute's burst
    assert limiter.check_request("a", limits) == pytest.approx(10.0)
    assert limiter.check_request("b", limits) is None  # tenants have separate buckets
    clock.t += 4
    assert limiter.check_request("a", limits) == pytest.approx(6.0)
    clock.t += 6
    assert limiter.check_request("a", limits) is None
    clock.t += 3600
    assert all(limiter.check_request("a", limits) is None for _ in range(6))  # refill stops at capacity
    assert limiter.check_request("a", limits) is not None


def test_token_limit_charged_after_the_fact(clock: FakeClock) -> None:
    limiter, limits = RateLimiter(now=clock), Limits(tokens_per_minute=600)  # 10 tokens/s
    assert limiter.check_tokens("a", limits) is None
    limiter.charge_tokens("a", limits, 500)
    assert limiter.check_tokens("a", limits) is None  # 100 left
    limiter.charge_tokens("a", limits, 300)  # 200 in debt
    assert limiter.check_tokens("a", limits) == pytest.approx(20.1)  # until one whole token is back
    clock.t += 20
    assert limiter.check_tokens("a", limits) == pytest.approx(0.1)
    clock.t += 0.2
    assert limiter.check_tokens("a", limits) is None


def test_admit_does_not_count_a_request_refused_for_tokens(clock: FakeClock) -> None:
    limiter, limits = RateLimiter(now=clock), Limits(requests_per_minute=1, tokens_per_minute=60)
    limiter.charge_tokens("a", limits, 60)
    assert limiter.admit("a", limits) == pytest.approx(1.0)
    clock.t += 1
    assert limiter.admit("a", limits) is None
    assert limiter.admit("a", limits) == pytest.approx(60.0)


def test_refusal_names_the_limit_that_refused(clock: FakeClock) -> None:
    limiter, limits = RateLimiter(now=clock), Limits(requests_per_minute=1, tokens_per_minute=60)
    assert limiter.refusal("a", limits) is None
    assert limiter.refusal("a", limits) == Refusal("requests", pytest.approx(60.0))
    limiter.charge_tokens("a", limits, 61)
    assert limiter.refusal("a", limits) == Refusal("tokens", pytest.approx(2.0))


def test_capacity_follows_a_changed_limit(clock: FakeClock) -> None:
    limiter = RateLimiter(now=clock)
    assert limiter.check_request("a", Limits(requests_per_minute=100)) is None  # 99 left
    lowered = Limits(requests_per_minute=2)
    assert limiter.check_request("a", lowered) is None
    assert limiter.check_request("a", lowered) is None
    assert limiter.check_request("a", lowered) == pytest.approx(30.0)
    raised = Limits(requests_per_minute=120)
    clock.t += 30
    admitted = sum(limiter.check_request("a", raised) is None for _ in range(200))
    assert admitted == 60  # refilled at the new rate


def test_forget(clock: FakeClock) -> None:
    limiter, limits = RateLimiter(now=clock), Limits(requests_per_minute=1)
    limiter.check_request("gone", limits)
    limiter.forget(["kept"])
    assert limiter.check_request("gone", limits) is None  # a fresh, full bucket


@pytest.mark.parametrize("seconds, header", [(0.01, "1"), (1.0, "1"), (1.2, "2"), (59.9, "60")])
def test_retry_after_header(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header
