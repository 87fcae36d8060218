"""Fuzzing the real gateway: schemathesis from its own /openapi.json, and a sample of the seeded hostile
corpus (bench/hostile.py; the full 1,200-request run is `.venv/bin/python -m bench.hostile --start`).

Both run against the session gateway (tests/conftest.py): every answer below 500, every error
OpenAI-shaped, and the gateway still serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from bench.hostile import check_answer, run_corpus
from bench.hostile_cases import CATEGORIES, HostileRequest, corpus
from tests.conftest import MODEL, PUBLIC_KEY

# Examples per operation and generation mode: small for CI (the whole suite stays well under 30 min);
# STEERGATE_FUZZ_EXAMPLES=300 for a longer, randomised hunt.
SCHEMATHESIS_EXAMPLES = int(os.environ.get("STEERGATE_FUZZ_EXAMPLES", 25))
HOSTILE_SAMPLE = 10 * len(CATEGORIES)
# Valid generated bodies may ask for the whole context window; tokens are what fuzzing cannot afford.
MAX_TOKENS = 4


def test_openapi_describes_the_real_bodies_and_the_extension_fields(gateway_url: str) -> None:
    spec = httpx.get(f"{gateway_url}/openapi.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    for path, request, response in (("/v1/chat/completions", "ChatCompletionRequest", "ChatCompletionResponse"),
                                    ("/v1/completions", "CompletionRequest", "CompletionResponse")):
        post = spec["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + request)
        assert not post.get("parameters")  # no stray `self` query parameter from the class-based view
        ok = post["responses"]["200"]["content"]
        assert ok["application/json"]["schema"]["$ref"].endswith("/" + response)
        assert "text/event-stream" in ok
        for status in ("400", "401", "403", "404", "413", "429", "503"):
            assert post["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        assert "steering" in schemas[request]["properties"] and "safety" in schemas[response]["properties"]
    assert {"tier", "interventions"} <= set(schemas["SteeringRequest"]["properties"])
    assert {"policy", "tier", "experiment", "arm", "prompt", "completion"} <= set(schemas["SafetyAnnotation"]["properties"])
    assert set(schemas["ErrorInfo"]["required"]) == {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def api_schema(gateway_url: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=SCHEMATHESIS_EXAMPLES,
                                    deterministic="STEERGATE_FUZZ_EXAMPLES" not in os.environ)
    return schema


lazy_schema = schemathesis.pytest.from_fixture("api_schema")


def _openai_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every answer (errors included) passes the hostile corpus' own checks."""
    request = HostileRequest("schemathesis", case.operation.label, method=case.method.upper(), path=case.path)
    # schemathesis gives each header as a list of its values.
    headers = {k.lower(): ", ".join(v) if isinstance(v, list) else v for k, v in response.headers.items()}
    problem = check_answer(request, response.status_code, headers, response.content)
    if problem:
        raise AssertionError(problem)
    return None


def _bounded(case: Any) -> None:
    """Keep valid bodies cheap: few tokens, few choices (the hostile corpus covers the large values)."""
    if case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE:
        return
    if isinstance(case.body, dict):
        for name in ("max_tokens", "max_completion_tokens", "min_tokens"):
            if isinstance(case.body.get(name), int):
                case.body[name] = min(case.body[name], MAX_TOKENS)
        if isinstance(case.body.get("n"), int):
            case.body["n"] = min(case.body["n"], 2)
        if case.body.get("max_tokens") is None:  # absent or null: vLLM would fill the context window
            case.body["max_tokens"] = MAX_TOKENS


@lazy_schema.include(path_regex="^/(v1|health)").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=SCHEMATHESIS_EXAMPLES)
def test_schemathesis(case: Any) -> None:
    _bounded(case)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {PUBLIC_KEY}"}, timeout=120,
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
                negative_data_rejection, _openai_errors],
    )


def test_hostile_corpus_sample(gateway_url: str) -> None:
    report = asyncio.run(run_corpus(gateway_url, corpus(0, HOSTILE_SAMPLE), concurrency=4, key=PUBLIC_KEY))
    assert not report.failures, report.summary()
    assert report.healthy_after and report.answers_after, report.summary()
    assert {o.request.category for o in report.outcomes} == set(CATEGORIES)


def test_a_normal_request_after_the_fuzzing(gateway_url: str) -> None:
    r = httpx.post(f"{gateway_url}/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {PUBLIC_KEY}"},
                   json={"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})
    assert r.status_code == 200 and json.loads(r.content)["usage"]["completion_tokens"] >= 1
