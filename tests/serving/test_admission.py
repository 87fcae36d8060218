"""Admission and failure answers at the ingress (pure logic; the real thing is in test_faults.py and
bench/load.py)."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError

from serving.admission import Admission, upstream_failure
from serving.config import AdmissionConfig
from serving.errors import GatewayError

CONFIG = AdmissionConfig(max_in_flight=2, retry_after_s=3)


def test_at_capacity_the_next_request_is_503_with_retry_after_and_a_release_admits_again() -> None:
    seen: list[int] = []
    admission = Admission(CONFIG, on_change=seen.append)
    first, _second = admission.enter(), admission.enter()
    with pytest.raises(GatewayError) as e:
        admission.enter()
    assert (e.value.error.status, e.value.error.code, e.value.headers) == (503, "server_overloaded",
                                                                          {"Retry-After": "3"})
    first.release()
    first.release()  # idempotent: a request is given back once
    admission.enter()
    assert seen == [1, 2, 1, 2] and admission.in_flight == 2


@pytest.mark.parametrize(("exc", "status", "code"), [
    (BackPressureError(num_queued_requests=9, max_queued_requests=8), 503, "server_overloaded"),
    (ActorDiedError(), 503, "model_unavailable"),
    (ActorUnavailableError("gone", None), 503, "model_unavailable"),
    (asyncio.TimeoutError(), 504, "request_timeout"),
])
def test_model_server_failures_are_retryable_answers(exc: BaseException, status: int, code: str) -> None:
    failure = upstream_failure(exc, CONFIG)
    assert failure is not None and (failure.error.status, failure.error.code) == (status, code)
    body = failure.error.body()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["type"] == "server_error"
    if status == 503:
        assert int(failure.headers["Retry-After"]) >= 1


def test_a_bug_is_not_dressed_up_as_unavailability() -> None:
    assert upstream_failure(KeyError("x"), CONFIG) is None
