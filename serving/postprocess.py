"""Turns an engine's raw OpenAI output into what the client gets, plus what metrics need.

Three jobs, all engine-agnostic:
- Streams: the server always asks the engine for per-chunk usage (so metrics, the side-output
  wait and the safety gate know exact token counts), then strips the usage the client did not
  ask for, so the wire format is exactly what OpenAI would send.
- The `safety` annotation: each configured middleware summarises the request's per-token side
  outputs into it (toxicity, steered tokens), on the non-streamed body or on the stream's
  finishing chunk; the policy's name and thresholds complete it.
- Policy actions (serving/safety_gate.py): block a flagged prompt, stop a flagged completion.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from middleware.detection import TOXICITY_FEATURES, DetectorParams, RunningScore
from middleware.hooks import ResidualMiddleware, load_middleware
from serving.config import MiddlewareConfig
from serving.engine.base import DONE_EVENT, EngineError, EngineItem, SSEChunk, UsageReport
from serving.engine.side_channel import RequestSideOutputs
from serving.safety_gate import CompletionGate, SafetyPlan, assemble_body, choice_text, stop_chunk

__all__ = ["ResponsePostprocessor", "SIDE_OUTPUT_WAIT_S"]

# Side outputs travel beside the engine's output path and in practice arrive first; this bounds
# the wait for stragglers before a response is annotated with whatever has arrived.
SIDE_OUTPUT_WAIT_S = 2.0


class ResponsePostprocessor:
    def __init__(self, middleware: list[MiddlewareConfig]) -> None:
        self._annotators: list[tuple[type[ResidualMiddleware], dict[str, Any]]] = [
            (cls, cls.resolved_args(m.args)) for m in middleware if (cls := load_middleware(m.cls))
        ]
        # The toxicity detector's combination, when a middleware reports detector features.
        self._detector: DetectorParams | None = next(
            (args["detector"] for _, args in self._annotators if isinstance(args.get("detector"), DetectorParams)), None)

    def safety(self, buf: RequestSideOutputs, request_args: dict[str, Any],
               completion_words: int | None = None) -> dict[str, Any]:
        """The contract's `safety` object; toxicity is null on a model without a detector.
        `completion_words`: the longest choice's length in words, once the response has ended
        (a short one is scored as a short text, middleware/detection.py)."""
        found: dict[str, Any] = {}
        tokens = buf.tokens()
        if completion_words is not None:
            request_args = {**request_args, "completion_words": completion_words}
        for cls, args in self._annotators:
            cls.annotate(args, request_args, tokens, found)
        plan = SafetyPlan.from_args(request_args)
        policy = request_args.get("policy") or {}
        safety: dict[str, Any] = {"policy": plan.name, "tier": found.get("tier", "off"),
                                  "experiment": policy.get("experiment"), "arm": policy.get("arm")}
        for phase, threshold in (("prompt", plan.prompt_threshold), ("completion", plan.completion_threshold)):
            section = found.get(phase, {})
            toxicity = section.get("toxicity")
            safety[phase] = {**section, "toxicity": toxicity, "flagged": toxicity is not None and toxicity >= threshold,
                             "steered_tokens": section.get("steered_tokens", 0)}
        # Whatever else a middleware reports (e.g. a test hook's own section) rides along.
        return safety | {k: v for k, v in found.items() if k not in safety}

    async def _settle(self, buf: RequestSideOutputs, expected: int) -> None:
        """Wait (bounded) until the side outputs of `expected` tokens have arrived."""
        if not self._annotators:
            return
        deadline = time.monotonic() + SIDE_OUTPUT_WAIT_S
        while buf.count() < expected and (left := deadline - time.monotonic()) > 0:
            buf.updated.clear()
            try:
                await asyncio.wait_for(buf.updated.wait(), timeout=left)
            except TimeoutError:
                break

    @staticmethod
    def _expected_tokens(usage: dict[str, Any] | None, num_choices: int) -> int:
        # Every prompt token of every choice passes the hook, and every generated token but the
        # last of each choice (the last is sampled and never fed back through the model).
        if not usage:
            return 0
        return num_choices * usage.get("prompt_tokens", 0) + max(0, usage.get("completion_tokens", 0) - num_choices)

    async def finish_body(self, body: dict[str, Any], buf: RequestSideOutputs,
                          request_args: dict[str, Any]) -> dict[str, Any]:
        await self._settle(buf, self._expected_tokens(body.get("usage"), len(body.get("choices", []))))
        words = max((len(choice_text(c).split()) for c in body.get("choices", [])), default=0)
        body["safety"] = self.safety(buf, request_args, words)
        return body

    async def collect(self, items: AsyncIterator[EngineItem]) -> EngineItem:
        """A gated stream, run for a client that did not ask to stream, as one response body."""
        chunks: list[dict[str, Any]] = []
        usage = None
        async for item in items:
            if isinstance(item, EngineError):
                return item
            if isinstance(item, SSEChunk) and item.data.startswith("data: {"):
                obj = json.loads(item.data.removeprefix("data: "))
                usage = obj.get("usage") or usage
                if obj.get("choices"):
                    chunks.append(obj)
        if not chunks:
            return EngineError("the engine returned no output", type="server_error", status=500)
        return assemble_body(chunks, usage)

    async def stream(
        self,
        chunks: AsyncIterator[str],
        buf: RequestSideOutputs,
        request_args: dict[str, Any],
        *,
        client_usage: bool,
        client_continuous_usage: bool,
        num_choices: int,
    ) -> AsyncIterator[EngineItem]:
        """Relay SSE chunks: strip unrequested usage, apply the policy's block/stop, annotate the
        finishing chunk, report usage."""
        plan = SafetyPlan.from_args(request_args)
        usage: dict[str, Any] | None = None
        prompt_checked = plan.prompt_action != "block"
        scores = _CompletionScores(self._detector, buf)
        gate = (CompletionGate(plan, lambda: scores.update((usage or {}).get("prompt_tokens")))
                if plan.completion_action == "stop" else None)
        finished = 0
        sent_any = False
        texts: dict[int, str] = {}  # per choice: what the engine generated (released or not)

        def words() -> int:
            return max((len(t.split()) for t in texts.values()), default=0)

        def sse(obj: dict[str, Any], safety: dict[str, Any] | None = None) -> SSEChunk:
            has_content = any(choice_text(c) for c in obj.get("choices") or [])
            return SSEChunk(f"data: {json.dumps(obj, separators=(',', ':'))}\n\n", has_content=has_content,
                            safety=safety)

        async for raw in chunks:
            payload = raw.removeprefix("data: ").strip()
            if not payload.startswith("{"):
                yield SSEChunk(raw)  # [DONE]
                continue
            obj = json.loads(payload)
            if "error" in obj and not sent_any:
                # Failed before any output: answer with a proper HTTP error instead of a 200 stream.
                yield EngineError.from_body(obj["error"], default_status=400)
                return
            if obj.get("usage"):
                usage = obj["usage"]
            if not prompt_checked and usage:
                prompt_checked = True
                await self._settle(buf, num_choices * usage.get("prompt_tokens", 0))
                safety = self.safety(buf, request_args)
                if safety["prompt"]["flagged"]:
                    yield EngineError("The prompt was blocked by the content policy "
                                      f"'{plan.name}'.", code="content_filter", param="prompt", status=400,
                                      safety=safety)
                    return
            sent_any = True
            choices = obj.get("choices") or []
            if not choices:  # the trailing usage-only chunk, or an error after output began
                if client_usage or "error" in obj:
                    yield SSEChunk(raw)
                continue
            for c in choices:
                texts[c.get("index", 0)] = texts.get(c.get("index", 0), "") + choice_text(c)
            tokens_after = (obj.get("usage") or {}).get("completion_tokens", 0)
            if not client_continuous_usage:
                obj.pop("usage", None)
            finishing = [c for c in choices if c.get("finish_reason")]
            finished += len(finishing)
            last = bool(finishing) and finished >= num_choices
            if last:
                await self._settle(buf, self._expected_tokens(usage, num_choices))
            released = [obj]
            if gate is not None:
                d = self._detector  # at the end, a short response is held to a short text's threshold
                end = d.threshold_for(plan.completion_threshold, words()) if d is not None and last else None
                released = gate.add(obj, tokens_after) + (gate.finish(end) if last else [])
            stopped = gate is not None and gate.stopped  # then the stop chunk below carries `safety`
            for i, out in enumerate(released):
                if last and not stopped and i == len(released) - 1:
                    # The last choice just finished: annotate this chunk (the contract's place for it).
                    safety = self.safety(buf, request_args, words())
                    out["safety"] = safety
                    yield sse(out, safety)
                else:
                    yield sse(out)
            if stopped:
                if not last:
                    await self._settle(buf, self._expected_tokens(usage, num_choices))
                safety = self.safety(buf, request_args, words() if last else None)
                yield sse(stop_chunk(obj) | {"safety": safety}, safety)
                if client_usage and usage:
                    tail = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
                    yield SSEChunk(f"data: {json.dumps(tail | {'choices': [], 'usage': usage})}\n\n")
                yield SSEChunk(DONE_EVENT)
                break  # the caller closes the engine's stream, which aborts the request
        if usage is not None:
            yield UsageReport(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


class _CompletionScores:
    """{completion token index: toxicity of the completion up to it} of a single-choice request,
    extended as its side outputs arrive: each token is folded into the running score once."""

    def __init__(self, detector: DetectorParams | None, buf: RequestSideOutputs) -> None:
        self._running = RunningScore(detector) if detector is not None else None
        self._buf = buf
        self.scores: dict[int, float] = {}

    def update(self, prompt_len: int | None) -> dict[int, float]:
        if self._running is None or prompt_len is None:
            return self.scores
        rows = {t["position"] - prompt_len: t.get(TOXICITY_FEATURES) for t in self._buf.tokens() if not t.get("is_prompt")}
        while (j := len(self.scores)) in rows:  # tokens arrive in order; fold in the new ones
            self.scores[j] = self._running.add(rows[j])
        return self.scores


