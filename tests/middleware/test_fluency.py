"""Perplexity from prompt log-probabilities, in both forms callers have them (JSON and vLLM objects)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from middleware.fluency import continuation_perplexity, perplexity, token_logprobs


@dataclass
class Logprob:  # the shape of vllm.logprobs.Logprob that matters here
    logprob: float


def test_json_and_object_forms_agree() -> None:
    ids = [5, 7, 9]
    as_json = [None, {"7": {"logprob": -1.0}, "3": {"logprob": -0.5}}, {"9": {"logprob": -2.0}}]
    as_objects = [None, {7: Logprob(-1.0), 3: Logprob(-0.5)}, {9: Logprob(-2.0)}]
    assert token_logprobs(as_json, ids) == token_logprobs(as_objects, ids) == [None, -1.0, -2.0]


def test_continuation_perplexity_counts_only_the_continuation() -> None:
    ids = [1, 2, 3, 4]
    lps = [None, {2: -5.0}, {3: -1.0}, {4: -3.0}]
    assert continuation_perplexity(lps, ids, start=2) == pytest.approx(math.exp(2.0))
    assert perplexity([]) != perplexity([])  # NaN for nothing to score


def test_missing_token_or_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="missing"):
        token_logprobs([None, {8: -1.0}], [1, 2])
    with pytest.raises(ValueError, match="2 prompt log-probabilities for 3 tokens"):
        token_logprobs([None, {2: -1.0}], [1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        continuation_perplexity([None, {2: -1.0}], [1, 2], start=0)
