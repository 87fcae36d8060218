"""Policy actions on a response as it is generated: block a toxic prompt, stop a toxic output.

The in-engine detector (middleware/detection.py) scores every token as it passes the hook; the
scores reach the model server over the side channel (serving/engine/side_channel.py) beside
vLLM's output stream. This module decides, from those scores and the request's policy, what
the client may see:

- block (prompt): once the prompt's scores are in (they come with the first output, after the
  prefill), a flagged prompt ends the request with HTTP 400 `content_filter`; nothing is sent.
- stop (completion): output is released only when every token in it, and `holdback_tokens`
  tokens after it, have been scored below the threshold. The first flagged token stops the
  stream: the engine request is aborted, nothing not yet released is ever sent (the flagged
  token and the window before it), and the last chunk says `finish_reason: "content_filter"`.

A generated token is scored when the engine feeds it back as the next step's input, so scores
trail the text by one decode step; the hold-back window (in tokens) is what keeps a toxic
phrase's first pieces from going out before its later tokens are scored. The last token of a
response is never fed back and so never scored: when a response ends, what is still held back
is released unless a scored token in it was flagged.

A response that ends within the detector's `short_words` words is judged as a short text: its
score at the end meets the lower short-text threshold (middleware/detection.py), so a bare toxic
line repeated back is stopped at its end, while it is still within the hold-back window. A
stream still going is not short yet, so no earlier token is judged that way.

Token accounting uses vLLM's continuous usage stats (cumulative completion_tokens per chunk),
so `stop` needs a single choice (n == 1); the ingress rejects n > 1 under a stop policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CompletionGate", "SafetyPlan", "assemble_body", "choice_text", "stop_chunk"]


@dataclass(frozen=True)
class SafetyPlan:
    """The part of a tenant's policy the model server enforces (request_args["policy"])."""

    name: str = "none"
    prompt_threshold: float = 0.5
    completion_threshold: float = 0.5
    prompt_action: str = "annotate"  # annotate | block
    completion_action: str = "annotate"  # annotate | stop
    holdback_tokens: int = 0

    @classmethod
    def from_args(cls, request_args: dict[str, Any]) -> SafetyPlan:
        raw = request_args.get("policy") or {}
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    @property
    def gates_output(self) -> bool:
        """Whether output must pass through the gate (and so be streamed internally)."""
        return self.prompt_action == "block" or self.completion_action == "stop"


class CompletionGate:
    """Holds back a single-choice stream's chunks until their tokens are scored (see module docstring).

    `scores()` returns {completion token index: toxicity of the completion up to that token} for
    the tokens scored so far; `add` takes each content chunk with the cumulative completion token
    count after it and returns the chunks that may be sent now.
    """

    def __init__(self, plan: SafetyPlan, scores: Callable[[], dict[int, float]]) -> None:
        self.plan = plan
        self._scores = scores
        self._held: list[tuple[dict[str, Any], int]] = []  # (chunk, completion tokens after it)
        self.flagged_at: int | None = None  # index of the first flagged completion token

    def _scored_prefix(self, scores: dict[int, float]) -> int:
        """How many leading completion tokens are scored (contiguously from token 0)."""
        n = 0
        while n in scores:
            n += 1
        return n

    def _check(self) -> int:
        """Look at the scores so far (and note the first flagged token); how many are scored."""
        scores = self._scores()
        if self.flagged_at is None:
            bad = [i for i, s in scores.items() if not math.isnan(s) and s >= self.plan.completion_threshold]
            if bad:
                self.flagged_at = min(bad)
        return self._scored_prefix(scores)

    def add(self, chunk: dict[str, Any], tokens_after: int) -> list[dict[str, Any]]:
        self._held.append((chunk, tokens_after))
        return self.release()

    def release(self) -> list[dict[str, Any]]:
        """The held chunks that are safe to send now; none once a token has been flagged."""
        scored = self._check()
        if self.flagged_at is not None:
            return []
        out = []
        while self._held and self._held[0][1] + self.plan.holdback_tokens <= scored:
            out.append(self._held.pop(0)[0])
        return out

    def finish(self, end_threshold: float | None = None) -> list[dict[str, Any]]:
        """At the end of the response (after the scores settled): everything held, unless flagged.
        `end_threshold`: what the whole response's score is held to now that its length is known
        (the detector's, lower for a short response)."""
        self._check()
        scores = self._scores()
        if self.flagged_at is None and end_threshold is not None and scores:
            last = max(scores)
            if scores[last] >= end_threshold:
                self.flagged_at = last
        if self.flagged_at is not None:
            return []
        out = [chunk for chunk, _ in self._held]
        self._held.clear()
        return out

    @property
    def stopped(self) -> bool:
        return self.flagged_at is not None


def choice_text(choice: dict[str, Any]) -> str:
    """The text of one choice: a stream chunk's (chat: delta.content), a body's (chat:
    message.content), or a completion's (text)."""
    for key in ("delta", "message"):
        if isinstance(choice.get(key), dict):
            return choice[key].get("content") or ""
    return choice.get("text") or ""


def stop_chunk(template: dict[str, Any]) -> dict[str, Any]:
    """The stream's last content chunk after a stop: no text, finish_reason content_filter."""
    chat = template.get("object") == "chat.completion.chunk"
    choice: dict[str, Any] = {"index": 0, "finish_reason": "content_filter", "logprobs": None}
    choice.update({"delta": {}} if chat else {"text": ""})
    return {k: template[k] for k in ("id", "object", "created", "model") if k in template} | {"choices": [choice]}


def assemble_body(chunks: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    """A non-streamed response from the stream's chunks (for clients that did not ask to stream,
    when the policy needs the gate): text per choice, its finish_reason, usage, safety."""
    first = chunks[0]
    chat = first.get("object") == "chat.completion.chunk"
    texts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    safety = None
    for c in chunks:
        safety = c.get("safety", safety)
        for ch in c.get("choices") or []:
            i = ch.get("index", 0)
            texts.setdefault(i, []).append(choice_text(ch))
            if ch.get("finish_reason"):
                finish[i] = ch["finish_reason"]
    choices = []
    for i in sorted(texts):
        text = "".join(texts[i])
        body = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        choices.append({"index": i, **body, "logprobs": None, "finish_reason": finish.get(i)})
    out = {"id": first.get("id"), "object": "chat.completion" if chat else "text_completion",
           "created": first.get("created"), "model": first.get("model"), "choices": choices, "usage": usage}
    if safety is not None:
        out["safety"] = safety
    return out
