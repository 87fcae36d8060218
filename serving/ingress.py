"""The HTTP surface: OpenAI-compatible routes on a FastAPI app, served by a Ray Serve ingress.

The router converts HTTP to and from model-server calls and applies the caller's policy
(policies/): authenticate the key to a tenant, pick the tenant's policy for the model, rate-limit,
decide the request's steering (403 for an override the policy locks; the arm of the policy's
experiment, policies/experiments.py), hand the policy's thresholds and actions to the model server
(which enforces block/stop, serving/safety_gate.py), then relay its items (a JSON body or SSE
chunks), record metrics and audit safety events, and queue sampled responses for live fluency
scoring (serving/fluency.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from ray import cloudpickle

from middleware.hooks import load_middleware
from middleware.metrics import REJECTION_REASONS, Cohort, GatewayMetrics
from policies import (
    AuditLog,
    AuthError,
    OverrideForbidden,
    Policy,
    PolicyStore,
    RateLimiter,
    Tenant,
    audit_event,
    effective_steering,
    retry_after_header,
)
from policies.experiments import Assignment, assign, shares
from policies.experiments import labels as arm_labels
from serving.admission import (
    UNAVAILABLE_RETRY_AFTER_S,
    Admission,
    Ticket,
    overloaded,
    request_timeout,
    upstream_failure,
)
from serving.config import GatewayConfig
from serving.engine.base import DONE_EVENT, EngineError, FluencySample, SSEChunk, UsageReport
from serving.errors import (
    GatewayError,
    error_event,
    error_response,
    from_validation_error,
    install_error_handlers,
)
from serving.fluency import FluencyScorer
from serving.openapi import install_openapi
from serving.protocol import ChatCompletionRequest, CompletionRequest, GatewayRequest, SteeringRequest
from serving.request_limits import read_body
from serving.timing_trace import TimingTrace, stamp

__all__ = ["app", "Ingress"]

logger = logging.getLogger(__name__)

# No redirect from /v1/completions/ to /v1/completions: an unknown path is an OpenAI-shaped 404, as at OpenAI.
app = FastAPI(title="steergate", description="OpenAI-compatible gateway with SAE-based safety steering",
              redirect_slashes=False)
install_error_handlers(app)
install_openapi(app)

HEALTH_PROBE_TIMEOUT_S = 5.0
# /metrics asks each model server for its engine's queue; a slow answer leaves the last value.
LOAD_PROBE_TIMEOUT_S = 2.0
# A non-streamed response's fluency sample is its second item, read after the body is sent.
FLUENCY_SAMPLE_WAIT_S = 30.0


class Ingress:
    """Wrapped by `serve.deployment` + `serve.ingress(app)` in serving/app.py."""

    def __init__(self, config: GatewayConfig, model_handles: dict[str, Any]) -> None:
        self.config = config
        self.handles = model_handles
        # Each model's middleware may check the per-request args it will get (e.g. steering
        # feature indices against its SAE) so bad ones are a 400 here, not a surprise in the engine.
        classes = {m.name: [(cls, cls.resolved_args(mw.args)) for mw in m.middleware
                            if (cls := load_middleware(mw.cls))] for m in config.models}
        self.validators = {
            name: [v for cls, args in mws if (v := cls.request_validator(args))] for name, mws in classes.items()
        }
        self.steerable = {name: any(cls.handles_steering for cls, _ in mws) for name, mws in classes.items()}
        self.registry = CollectorRegistry()
        self.model_names = [m.name for m in config.models]
        # Every replica watches the policy file itself and swaps its PolicySet in one assignment;
        # a file that does not parse is logged, counted, and the old policies stay live.
        self.policies = PolicyStore(config.policies, on_reload=self._on_policy_reload)
        self.metrics = GatewayMetrics(self.registry, self.model_names, self._cohorts())
        self.metrics.set_arms(self._arms())
        self.policies.start_watching(config.policy_reload_interval_s)
        self.fluency = FluencyScorer(config.fluency, self.handles, self.metrics)
        self.limiter = RateLimiter()
        self.admission = Admission(config.admission, on_change=self.metrics.in_flight.set)
        self.audit = AuditLog(config.audit_log)
        self.created = int(time.time())
        self.trace = TimingTrace.from_settings()  # None unless STEERGATE_TRACE_TIMINGS is set

    def _on_policy_reload(self, ok: bool, message: str | None) -> None:
        self.metrics.policy_reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.metrics.add_cohorts(self.model_names, self._cohorts())
            self.metrics.set_arms(self._arms())
            logger.info("policy file reloaded")
        else:
            logger.error("policy file rejected, previous policies stay live: %s", message)

    def _cohorts(self) -> list[Cohort]:
        """Every (policy, experiment, arm) the current file can report: the metrics' bounded label sets."""
        return [Cohort(name, *pair) for name, policy in self.policies.current.policies.items()
                for pair in arm_labels(policy)]

    def _arms(self) -> list[tuple[Cohort, bool, float]]:
        """(cohort, is control, share) of every arm of every policy's experiment (the base policy's)."""
        policies = self.policies.current.policies
        return [(Cohort(name, e.name, arm), arm == e.control, share)
                for name, policy in policies.items() if (e := policy.experiment) is not None
                for arm, share in shares(e).items()]

    # ---- plain endpoints -------------------------------------------------------------------

    @app.get("/health")
    async def health(self) -> Response:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(h.ready.remote() for h in self.handles.values())), HEALTH_PROBE_TIMEOUT_S
            )
        except Exception as e:  # not started yet, or a replica is down
            return JSONResponse({"status": "unavailable", "detail": str(e) or type(e).__name__}, status_code=503)
        return JSONResponse({"status": "ok", "models": list(self.handles)})

    @app.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m.name, "object": "model", "created": self.created, "owned_by": "steergate",
                 "max_model_len": m.engine.max_model_len}
                for m in self.config.models
            ],
        }

    @app.get("/metrics")
    async def metrics(self) -> Response:
        await self._sample_engine_load()
        return PlainTextResponse(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _sample_engine_load(self) -> None:
        for name, handle in self.handles.items():
            try:
                load = await asyncio.wait_for(handle.load.remote(), LOAD_PROBE_TIMEOUT_S)
            except Exception:  # restarting or busy: keep the last value
                continue
            for state, count in load.items():
                self.metrics.engine_requests.labels(name, state).set(count)

    # ---- generation ------------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat_completions(self, raw: Request) -> Response:
        return await self._generate(raw, ChatCompletionRequest, "chat")

    @app.post("/v1/completions")
    async def completions(self, raw: Request) -> Response:
        return await self._generate(raw, CompletionRequest, "completions")

    async def _generate(self, raw: Request, model_cls: type[GatewayRequest], endpoint: str) -> Response:
        started = time.monotonic()
        ctx = _Call(endpoint=endpoint, request_id=f"req-{uuid.uuid4().hex}")
        ctx.stamps = {"arrived": time.time()} if self.trace else None
        ticket: Ticket | None = None
        try:
            policies = self.policies.current  # one consistent policy set for the whole request
            try:
                ctx.tenant = policies.authenticate(raw.headers.get("authorization"))
            except AuthError as e:
                raise GatewayError(401, e.message, code=e.code) from None
            body = await read_body(raw, self.config.limits)
            ctx.model = self._resolve_model(body)
            ctx.policy = policies.policy_for(ctx.tenant, ctx.model)
            ctx.headers["x-steergate-policy"] = ctx.policy.name
            self._rate_limit(ctx)
            ctx.assignment = assign(ctx.policy, ctx.tenant.name, body, raw.headers, ctx.request_id)
            rate = ctx.policy.fluency.sample_rate
            ctx.fluency = rate > 0 and random.random() < rate
            request = self._validate(body, model_cls, ctx.model, ctx.policy, ctx)
            ctx.prompt_text = _prompt_text(body) if ctx.policy.audit.log_prompt_text else None
            stamp(ctx.stamps, "policy_validated")
            ticket = self.admission.enter()
            handle = getattr(self.handles[ctx.model].options(stream=True), endpoint)
            items = handle.remote(request)
            first = await self._first_item(items, bool(request.stream))
        except Exception as e:
            if ticket is not None:
                ticket.release()
            failure = e if isinstance(e, GatewayError) else upstream_failure(e, self.config.admission)
            if failure is None:  # a bug, not a state of the model server: counted, answered by the 500 handler
                self._observe(ctx, ctx.model, 500, started)
                raise
            # Unknown models are not a label value: they would make the label set unbounded.
            model = ctx.model if ctx.model in self.handles else "unknown"
            self._count_refusal(model, failure.error)
            self._observe(ctx, model, failure.error.status, started)
            return error_response(failure.error, {**ctx.headers, **(failure.headers or {})})
        if not isinstance(first, SSEChunk | UsageReport):
            ticket.release()  # a whole body or an error: the request is done
        if isinstance(first, EngineError):
            if first.safety is not None:  # refused by the policy (a blocked prompt)
                self._record_safety(ctx, first.safety, body_text=None)
            self._count_refusal(ctx.model, first)
            self._observe(ctx, ctx.model, first.status, started)
            retry = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)} if first.status == 503 else {}
            return error_response(first, {**ctx.headers, **retry})
        if isinstance(first, dict):
            usage = first.get("usage") or {}
            self._account(ctx, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            if first.get("safety") is not None:
                self._record_safety(ctx, first["safety"], body_text=_completion_text(first))
            self._observe(ctx, ctx.model, 200, started)
            if ctx.fluency:
                asyncio.get_running_loop().create_task(self._fluency_after_body(items, ctx))
            return JSONResponse(first, headers=ctx.headers)
        return StreamingResponse(
            self._relay(first, items, ctx, started, ticket), media_type="text/event-stream", headers=ctx.headers
        )

    async def _first_item(self, items: Any, stream: bool) -> Any:
        """The model server's first item (a stream's first chunk, or a whole body), within its deadline;
        past it the call is cancelled (the engine request aborted). Counted as queued until then."""
        cfg = self.config.admission
        self.metrics.queued.inc()
        try:
            return await asyncio.wait_for(items.__anext__(), cfg.queue_timeout_s if stream else cfg.request_timeout_s)
        except TimeoutError:
            items.cancel()
            if stream:
                raise overloaded(cfg, f"no capacity to start the request within {cfg.queue_timeout_s:g} s") from None
            raise request_timeout(cfg) from None
        finally:
            self.metrics.queued.dec()

    def _count_refusal(self, model: str, error: EngineError) -> None:
        if error.code in REJECTION_REASONS and error.status >= 500:
            self.metrics.rejected.labels(model, str(error.code)).inc()

    async def _relay(self, first: Any, items: Any, ctx: _Call, started: float, ticket: Ticket) -> AsyncIterator[str]:
        """Send SSE chunks as they come; on client disconnect, cancel the model-server call
        (which aborts the engine request). A model server that fails mid-stream, or a request past
        its deadline, ends the stream with an OpenAI-shaped error event and [DONE]."""
        first_token_seen = False
        item = first
        deadline = started + self.config.admission.request_timeout_s
        status = 200
        # [DONE] is held back until the items after it (usage, fluency sample) are in: clients close the
        # connection on [DONE], which would close this generator before they are recorded.
        done: SSEChunk | None = None
        try:
            while True:
                if isinstance(item, SSEChunk) and item.is_done:
                    done = item
                elif isinstance(item, SSEChunk):
                    if item.has_content and not first_token_seen:
                        first_token_seen = True
                        ttft = time.monotonic() - started
                        self.metrics.observe_ttft(ctx.model, ctx.endpoint, ctx.cohort, ttft)
                        if ctx.stamps is not None and self.trace is not None:
                            stamp(ctx.stamps, "ingress_first_content")
                            self.trace.write(ctx.stamps | (item.timings or {}))
                    if item.safety is not None:
                        self._record_safety(ctx, item.safety, body_text=None)
                    yield item.data
                elif isinstance(item, UsageReport):
                    self._account(ctx, item.prompt_tokens, item.completion_tokens)
                elif isinstance(item, FluencySample):
                    self.fluency.submit(ctx.model, ctx.cohort, item)
                try:
                    item = await asyncio.wait_for(items.__anext__(), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    break
            if done is not None:
                yield done.data
        except Exception as e:  # not GeneratorExit/CancelledError (client gone): those only clean up
            if done is not None:  # the answer is complete; only its usage/fluency bookkeeping failed
                logger.warning("stream %s: failure after its last chunk: %r", ctx.request_id, e)
                yield done.data
                return
            failure = upstream_failure(e, self.config.admission)
            if failure is None:
                logger.exception("stream %s failed", ctx.request_id)
                failure = GatewayError(500, "internal server error", code="internal_error", type="server_error")
            status = failure.error.status
            self._count_refusal(ctx.model, failure.error)
            yield error_event(failure.error)
            yield DONE_EVENT
        finally:
            items.cancel()
            ticket.release()
            self._observe(ctx, ctx.model, status, started)

    async def _fluency_after_body(self, items: Any, ctx: _Call) -> None:
        """Queue a non-streamed response's fluency sample: the item after its body, if it comes."""
        async def drain() -> None:
            async for item in items:
                if isinstance(item, FluencySample):
                    self.fluency.submit(ctx.model, ctx.cohort, item)

        try:
            await asyncio.wait_for(drain(), FLUENCY_SAMPLE_WAIT_S)
        except Exception:  # a sample lost is only a sample: never an error for anyone
            logger.exception("fluency sample of %s not received", ctx.request_id)

    # ---- policy ----------------------------------------------------------------------------

    def _rate_limit(self, ctx: _Call) -> None:
        assert ctx.tenant is not None and ctx.policy is not None
        limits = ctx.policy.limits
        refused = self.limiter.refusal(ctx.tenant.name, limits)
        if refused is not None:
            kind, retry = refused.limit, retry_after_header(refused.retry_after_s)
            self.metrics.rate_limited.labels(ctx.policy.name, kind).inc()
            per_minute = limits.tokens_per_minute if kind == "tokens" else limits.requests_per_minute
            raise GatewayError(429, f"Rate limit reached for tenant '{ctx.tenant.name}': {per_minute} {kind} per "
                               f"minute. Retry after {retry} s.", code="rate_limit_exceeded",
                               type=kind, headers={"Retry-After": retry})

    def _account(self, ctx: _Call, prompt_tokens: int, completion_tokens: int) -> None:
        self.metrics.observe_usage(ctx.model, ctx.cohort, prompt_tokens, completion_tokens)
        if ctx.tenant is not None and ctx.policy is not None:
            self.limiter.charge_tokens(ctx.tenant.name, ctx.policy.limits, prompt_tokens + completion_tokens)

    def _record_safety(self, ctx: _Call, safety: dict[str, Any], body_text: str | None) -> None:
        """Metrics for every response; an audit line for each flagged phase."""
        assert ctx.policy is not None and ctx.tenant is not None
        # A flagged phase got its policy's action: annotate, block (prompt) or stop (completion).
        taken = {"prompt": ctx.policy.actions.prompt, "completion": ctx.policy.actions.completion}
        self.metrics.observe_safety(ctx.model, ctx.cohort, safety, taken)
        for phase in ("prompt", "completion"):
            if not (safety.get(phase) or {}).get("flagged"):
                continue
            event = {"annotate": "flag"}.get(taken[phase], taken[phase])
            self.audit.write(audit_event(
                request_id=ctx.request_id, tenant=ctx.tenant.name, policy=ctx.policy.name, event=event,
                phase=phase, action=taken[phase], model=ctx.model,
                prompt_score=(safety.get("prompt") or {}).get("toxicity"),
                completion_score=(safety.get("completion") or {}).get("toxicity"),
                experiment=safety.get("experiment"), arm=safety.get("arm"),
                prompt_text=ctx.prompt_text, completion_text=body_text,
                include_text=ctx.policy.audit.log_prompt_text,
            ))

    # ---- helpers ---------------------------------------------------------------------------

    def _resolve_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if model is None:  # OpenAI requires it; we default to the first configured model
            model = body["model"] = self.config.models[0].name
        if not isinstance(model, str):
            raise GatewayError(400, "model must be a string", param="model", code="invalid_value")
        if model not in self.handles:
            raise GatewayError(404, f"The model '{model}' does not exist. Available: {sorted(self.handles)}",
                               param="model", code="model_not_found", type="invalid_request_error")
        return model

    def _validate(self, body: dict[str, Any], model_cls: type[GatewayRequest], model: str,
                  policy: Policy, ctx: _Call) -> GatewayRequest:
        n = body.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n > self.config.limits.max_n:
            raise GatewayError(400, f"n must be at most {self.config.limits.max_n}, got {n}", param="n",
                               code="invalid_value")
        try:
            # Strict JSON validation: a JSON type is never coerced into another (`false` is not token id 0,
            # "4" is not 4), as the OpenAI API and our OpenAPI schema say (schemathesis' negative cases).
            # JSON mode, not Python mode: strict Python mode would refuse objects for vLLM's dataclass
            # fields (`structured_outputs`) and strings for its enums.
            request = model_cls.model_validate_json(json.dumps(body), strict=True)
        except ValidationError as e:
            raise from_validation_error(e) from e
        except Exception as e:  # VLLMClientError, ValueError, TypeError, OverflowError, AttributeError...
            # Only client data is being validated here, so whatever fails is the client's 400. vLLM's
            # validators raise VLLMValidationError through pydantic as is (its str() echoes the value),
            # and some assume the types pydantic has not checked yet ("structured_outputs": [] raised
            # AttributeError in a vLLM model validator: found by schemathesis).
            message = str(e.args[0]) if e.args else type(e).__name__
            raise GatewayError(400, message[:500], param=getattr(e, "parameter", None), code="invalid_value") from e
        try:  # Ray pickles the request to the model server: a value it cannot carry is the client's 400
            cloudpickle.dumps(request)  # (schemathesis: an Iterable field left as a pydantic ValidatorIterator)
        except Exception as e:
            raise GatewayError(400, f"request cannot be processed: {e}"[:500], code="invalid_value") from None
        if policy.actions.completion == "stop" and (request.n or 1) > 1:
            raise GatewayError(400, f"policy '{policy.name}' stops toxic output, which needs one choice per "
                               "request: n must be 1", param="n", code="invalid_value")
        requested = request.steering.model_dump(exclude_none=True) if request.steering is not None else None
        try:
            if ctx.assignment is None:
                effective = effective_steering(policy, requested)
            else:
                effective, ctx.arm = ctx.assignment.steering(policy, requested)
                ctx.headers["x-steergate-arm"] = ctx.arm
        except OverrideForbidden as e:
            raise GatewayError(403, e.message, param=e.param, code=e.code) from None
        if not self.steerable[model] and requested is None and ctx.assignment is None:
            effective = None  # the policy's default tier needs steering; this model has none
        request.steering = None if effective is None else SteeringRequest.model_validate(effective)
        request.set_policy({
            "name": policy.name,
            "prompt_threshold": policy.detection.prompt_threshold,
            "completion_threshold": policy.detection.completion_threshold,
            "prompt_action": policy.actions.prompt,
            "completion_action": policy.actions.completion,
            "holdback_tokens": policy.stream.holdback_tokens,
            "experiment": ctx.experiment,
            "arm": ctx.arm,
            "fluency": ctx.fluency,
        })
        if request.steering is not None and request.steering.tier != "off":
            if not self.steerable[model]:
                raise GatewayError(400, f"steering is not configured for model '{model}' (no SAE steering "
                                   "middleware in its config)", param="steering", code="steering_unavailable")
            request_args = request.middleware_args()
            for validate in self.validators[model]:
                try:
                    validate(request_args)
                except ValueError as e:
                    raise GatewayError(400, str(e), param="steering", code="invalid_value") from e
        return request

    def _observe(self, ctx: _Call, model: str, status: int, started: float) -> None:
        self.metrics.observe(model, ctx.endpoint, status, time.monotonic() - started, ctx.cohort)


class _Call:
    """What the ingress learns about one request as it goes (for errors, metrics and audit)."""

    def __init__(self, endpoint: str, request_id: str) -> None:
        self.endpoint = endpoint
        self.request_id = request_id
        self.model = "unknown"
        self.tenant: Tenant | None = None
        self.policy: Policy | None = None
        self.prompt_text: str | None = None
        self.headers: dict[str, str] = {"x-steergate-request-id": request_id}
        self.assignment: Assignment | None = None
        self.arm: str | None = None  # the arm reported: the assigned one, or "override"
        self.fluency = False  # sampled for live fluency scoring
        self.stamps: dict[str, float] | None = None  # stage timestamps when traced (serving/timing_trace.py)

    @property
    def experiment(self) -> str | None:
        # Only once the arm is decided: a request refused before that counts outside the experiment.
        if self.assignment is None or self.arm is None:
            return None
        return self.assignment.experiment.name

    @property
    def cohort(self) -> Cohort:
        if self.policy is None:
            return Cohort()
        return Cohort(self.policy.name, self.experiment or "", self.arm or "")


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return json.dumps(body["messages"], ensure_ascii=False)
    return body.get("prompt") if isinstance(body.get("prompt"), str) else json.dumps(body.get("prompt"))


def _completion_text(body: dict[str, Any]) -> str:
    parts = []
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        parts.append(message.get("content") or choice.get("text") or "")
    return "\n".join(parts)
