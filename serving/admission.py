"""Backpressure and failure answers at the ingress: how much work a replica takes, what a client gets
when the model server cannot take more or has failed.

Three bounds keep overload from turning into an unbounded queue (configured in `admission:` and
`models[].deployment`, see docs/operations.md):
1. `Admission` (this module): at most `max_in_flight` generation requests per ingress replica, from
   the moment they pass validation until their last byte; the next one gets 503 + Retry-After at
   once, before it costs the engine anything.
2. Ray Serve's `max_ongoing_requests` (per model replica, = the engine batch) and
   `max_queued_requests` (per caller): beyond them the handle raises BackPressureError -> 503.
3. Deadlines: a stream's first chunk within `queue_timeout_s` (503 + Retry-After), the whole request
   within `request_timeout_s` (504, or an error event on a stream already under way); either way
   the model-server call is cancelled, which aborts the engine request and frees its slot.

A model-server replica that dies (process killed, engine core gone) surfaces here as a Ray actor
error: requests that were waiting for it get 503 + Retry-After (`upstream_failure`), and streams
already under way end with an OpenAI-shaped error event instead of a cut connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from serving.config import AdmissionConfig
from serving.errors import GatewayError

__all__ = ["Admission", "Ticket", "upstream_failure", "UNAVAILABLE_RETRY_AFTER_S"]

logger = logging.getLogger(__name__)

# A replaced model-server replica needs about a minute to load its engine; clients poll meanwhile.
UNAVAILABLE_RETRY_AFTER_S = 5


class Ticket:
    """One admitted request; `release` (idempotent) gives its place back."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission._leave()
            self._admission = None


class Admission:
    """Counts generation requests in one ingress replica (one event loop: no lock needed)."""

    def __init__(self, config: AdmissionConfig, on_change: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.in_flight = 0
        self._on_change = on_change

    def enter(self) -> Ticket:
        """A ticket, or GatewayError 503 with Retry-After when `max_in_flight` are already held."""
        if self.in_flight >= self.config.max_in_flight:
            raise overloaded(self.config, f"the gateway is at capacity ({self.config.max_in_flight} requests in "
                             "flight on this replica)")
        self.in_flight += 1
        self._changed()
        return Ticket(self)

    def _leave(self) -> None:
        self.in_flight -= 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.in_flight)


def overloaded(config: AdmissionConfig, why: str) -> GatewayError:
    return GatewayError(503, f"{why}; retry after {config.retry_after_s} s", code="server_overloaded",
                        type="server_error", headers={"Retry-After": str(config.retry_after_s)})


def request_timeout(config: AdmissionConfig) -> GatewayError:
    return GatewayError(504, f"the request did not finish within {config.request_timeout_s:g} s and was aborted",
                        code="request_timeout", type="server_error")


def upstream_failure(exc: BaseException, config: AdmissionConfig) -> GatewayError | None:
    """The answer for a model-server call that raised `exc`, or None for a bug (answered 500, logged)."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, BackPressureError):
        return overloaded(config, "the model server's queue is full")
    if isinstance(exc, RayActorError | ActorUnavailableError | DeploymentUnavailableError):
        logger.warning("model server unavailable: %s", type(exc).__name__)
        return GatewayError(503, "the model server is unavailable (restarting); retry after "
                            f"{UNAVAILABLE_RETRY_AFTER_S} s", code="model_unavailable", type="server_error",
                            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return request_timeout(config)
    return None
