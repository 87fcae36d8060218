"""Fluency of a text as its perplexity under the unsteered model, from prompt log-probabilities.

"Breaking Bad Tokens" measures what steering costs by the perplexity of steered continuations under
the original model. Here the model scores prompt + continuation in one prefill with steering off
(vLLM `prompt_logprobs`), and the perplexity is taken over the continuation's tokens only:

    ppl = exp(-mean_{t in continuation} log p(x_t | x_<t))

One function for every caller: the offline evaluation (evals/, through the gateway's HTTP API, where
each position's entry is a JSON object {token id: {"logprob": ...}}) and live fluency scoring in the
gateway (vLLM `Logprob` objects keyed by int token id). Position 0 has no log-probability (None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["continuation_perplexity", "perplexity", "token_logprobs"]


def _value(entry: Any) -> float:
    """A log-probability from a vLLM `Logprob`, its JSON form {"logprob": x}, or a plain number."""
    if isinstance(entry, Mapping):
        return float(entry["logprob"])
    if hasattr(entry, "logprob"):
        return float(entry.logprob)
    return float(entry)


def token_logprobs(prompt_logprobs: Sequence[Mapping[Any, Any] | None],
                   token_ids: Sequence[int]) -> list[float | None]:
    """(n,) log p of each actual token `token_ids[t]` given the tokens before it; None at position 0.

    `prompt_logprobs[t]` maps candidate token ids (int, or str in JSON) to log-probabilities and always
    contains the actual token (vLLM adds it to the top-k it was asked for).
    """
    if len(prompt_logprobs) != len(token_ids):
        raise ValueError(f"{len(prompt_logprobs)} prompt log-probabilities for {len(token_ids)} tokens")
    out: list[float | None] = []
    for entry, token in zip(prompt_logprobs, token_ids, strict=True):
        if entry is None:
            out.append(None)
            continue
        found = entry.get(token, entry.get(str(token)))
        if found is None:
            raise ValueError(f"token {token} is missing from its position's log-probabilities")
        out.append(_value(found))
    return out


def perplexity(logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-probability; NaN for no tokens."""
    if not logprobs:
        return math.nan
    return math.exp(-sum(logprobs) / len(logprobs))


def continuation_perplexity(prompt_logprobs: Sequence[Mapping[Any, Any] | None], token_ids: Sequence[int],
                            start: int) -> float:
    """Perplexity of tokens `start:` (the continuation) of a sequence scored as one prompt."""
    if not 0 < start <= len(token_ids):
        raise ValueError(f"continuation start {start} outside 1..{len(token_ids)}")
    lps = token_logprobs(prompt_logprobs, token_ids)[start:]
    return perplexity([lp for lp in lps if lp is not None])
