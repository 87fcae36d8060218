"""Security promises on the real gateway (tests/policies.yaml): keys never logged, tenants isolated under
concurrency, no body field or header lifts a limit or a steering lock, no prompt text in the audit
log or metrics unless the policy opts in, every size bound a clear 4xx. (Constant-time key
comparison: tests/policies/test_tenants.py.)"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ACME_KEY, BETA_KEY, KID_KEY, MODEL, PUBLIC_KEY, RECORDER_KEY, STOPPER_KEY
from tests.serving.test_policies_api import BENIGN, TOXIC

CANARY_KEY = f"sk-canary-{uuid.uuid4().hex}"


def _post(url: str, key: str | None, body: dict[str, Any], headers: dict[str, str] | None = None,
          path: str = "/v1/chat/completions") -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}{path}", json=body, headers={**auth, **(headers or {})}, timeout=120)


def _chat(content: str, **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0, **kw}


def _ray_logs() -> list[Path]:
    from ray._private import worker

    node = worker._global_node
    assert node is not None, "the session gateway runs Ray in this process"
    return [p for p in Path(node.get_logs_dir_path()).rglob("*") if p.is_file()]


# ---- keys ------------------------------------------------------------------------------------

def test_api_keys_never_reach_logs_or_the_audit_log(gateway_url: str, gateway_files: dict[str, Path]) -> None:
    for key in (CANARY_KEY, PUBLIC_KEY, ACME_KEY, STOPPER_KEY):
        r = _post(gateway_url, key, _chat(TOXIC))  # toxic: acme blocks, stopper annotates -> audit lines
        assert r.status_code in (200, 400, 401)
        assert CANARY_KEY not in r.text
    assert _post(gateway_url, CANARY_KEY, _chat(BENIGN)).status_code == 401
    time.sleep(3)  # Ray's log files are written by other processes
    files = _ray_logs() + [gateway_files["audit"]]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        for key in (CANARY_KEY, PUBLIC_KEY, ACME_KEY, STOPPER_KEY):
            assert key.encode() not in data, f"{key} in {path}"


# ---- isolation -------------------------------------------------------------------------------

def test_concurrent_tenants_never_get_another_tenants_policy_tier_or_scores(gateway_url: str) -> None:
    """acme (strict: blocks toxic prompts, steering locked off) sends benign prompts while public (open,
    overrides allowed) sends toxic ones asking for medium steering, all at once: each response carries
    its own policy, tier and scores, never the other tenant's."""
    async def one(client: httpx.AsyncClient, key: str, content: str, stream: bool, **kw: Any) -> tuple[str, dict]:
        body = _chat(content, stream=stream, **kw)
        headers = {"Authorization": f"Bearer {key}"}
        if not stream:
            r = await client.post("/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 200, r.text
            return r.headers["x-steergate-policy"], r.json()["safety"]
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            safety = None
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    safety = json.loads(line[6:]).get("safety") or safety
            return r.headers["x-steergate-policy"], safety

    async def run() -> list[tuple[str, tuple[str, dict]]]:
        async with httpx.AsyncClient(base_url=gateway_url, timeout=120) as client:
            jobs = []
            for i in range(8):
                jobs.append(("acme", one(client, ACME_KEY, BENIGN, stream=i % 2 == 0)))
                jobs.append(("public", one(client, PUBLIC_KEY, TOXIC, stream=i % 2 == 1, steering={"tier": "medium"})))
            results = await asyncio.gather(*(job for _, job in jobs))
            return [(who, res) for (who, _), res in zip(jobs, results, strict=True)]

    for who, (header, safety) in asyncio.run(run()):
        expected = {"acme": ("strict", "off"), "public": ("open", "medium")}[who]
        assert (header, safety["policy"], safety["tier"]) == (expected[0], *expected)
        assert safety["arm"] is None and safety["experiment"] is None
        if who == "acme":
            assert safety["prompt"]["toxicity"] < 0.5 and not safety["prompt"]["flagged"]
            assert safety["completion"]["steered_tokens"] == 0
        else:
            assert safety["prompt"]["toxicity"] >= 0.5 and safety["prompt"]["flagged"]


SPOOFED_HEADERS = {"x-steergate-policy": "open", "x-steergate-tenant": "public", "x-api-key": PUBLIC_KEY,
                   "X-Forwarded-For": "127.0.0.1", "x-steergate-arm": "control", "x-request-id": "req-admin"}
SPOOFED_FIELDS = {"policy": "open", "tenant": "public", "user": "public", "limits": {"requests_per_minute": 10**9},
                  "vllm_xargs": {"steergate": "strong", "rid": "req-other"},
                  "safety": {"policy": "open"}, "request_id": "req-other"}


def test_no_body_field_or_header_lifts_a_rate_limit(gateway_url: str) -> None:
    codes = [_post(gateway_url, BETA_KEY, _chat(BENIGN, max_tokens=1, **SPOOFED_FIELDS),
                   headers=SPOOFED_HEADERS).status_code for _ in range(5)]
    assert codes.count(429) >= 2 and set(codes) <= {200, 429}  # beta: 3 per minute, whatever it sends


def test_no_body_field_or_header_lifts_a_steering_lock_or_a_block(gateway_url: str) -> None:
    # vLLM's own `priority` would jump the engine's queue: the gateway sets priorities itself.
    r = _post(gateway_url, ACME_KEY, _chat(BENIGN, priority=-100))
    assert r.status_code == 400 and r.json()["error"]["param"] == "priority"
    r = _post(gateway_url, ACME_KEY, _chat(BENIGN, steering={"tier": "strong"}, **SPOOFED_FIELDS),
              headers=SPOOFED_HEADERS)
    assert r.status_code == 403 and r.json()["error"]["code"] == "steering_not_allowed"
    # vllm_xargs reaches the engine's extra_args, where the middleware's arguments live: ours win.
    r = _post(gateway_url, ACME_KEY, _chat(BENIGN, **SPOOFED_FIELDS), headers=SPOOFED_HEADERS)
    assert r.status_code == 200 and r.headers["x-steergate-policy"] == "strict"
    assert r.json()["safety"]["tier"] == "off" and r.json()["safety"]["completion"]["steered_tokens"] == 0
    r = _post(gateway_url, ACME_KEY, _chat(TOXIC, **SPOOFED_FIELDS), headers=SPOOFED_HEADERS)
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"
    # A second Authorization header does not pick the more permissive tenant.
    r = httpx.post(f"{gateway_url}/v1/chat/completions", json=_chat(TOXIC), timeout=120,
                   headers=[("Authorization", f"Bearer {ACME_KEY}"), ("Authorization", f"Bearer {PUBLIC_KEY}")])
    assert r.status_code in (400, 401) and "choices" not in r.json()


# ---- prompt text -----------------------------------------------------------------------------

def test_audit_and_metrics_carry_no_prompt_text_unless_the_policy_opts_in(
        gateway_url: str, gateway_files: dict[str, Path]) -> None:
    canary = f"zebracanary{uuid.uuid4().hex[:12]}"
    # Both tenants flag every prompt (threshold 0), so both requests get an audit line: whether a
    # random canary moves the detector's score over a threshold is not what this test is about
    # (CI saw it fall under strict's, then under stopper's).
    blocked = _post(gateway_url, KID_KEY, _chat(f"{TOXIC} {canary}"))  # blocked, audited, no text
    assert blocked.status_code == 400
    opted = _post(gateway_url, RECORDER_KEY, _chat(f"{TOXIC} {canary}"))  # annotated, opts in to text
    assert opted.status_code == 200
    time.sleep(1)
    lines = [json.loads(x) for x in gateway_files["audit"].read_text().splitlines()]
    by_id = {x["request_id"]: x for x in lines}
    assert canary not in json.dumps(by_id[blocked.headers["x-steergate-request-id"]])
    assert canary in json.dumps(by_id[opted.headers["x-steergate-request-id"]])
    assert canary not in httpx.get(f"{gateway_url}/metrics", timeout=30).text


# ---- bounds ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "code", "param"), [
    ({"messages": [{"role": "user", "content": "hi"}] * 513}, 400, "too_many_messages", "messages"),
    ({"messages": [{"role": "user", "content": "x" * 100_001}]}, 400, "string_too_long", "messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi"}], "metadata": json.loads("[" * 40 + "]" * 40)}, 400,
     "nesting_too_deep", None),
    ({"messages": [{"role": "user", "content": "hi"}],
      "steering": {"interventions": [{"feature": 0, "mode": "add", "strength": 1.0}] * 17}}, 400, "invalid_value",
     "steering.interventions"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 9}, 400, "invalid_value", "n"),
    ({"messages": [{"role": "user", "content": "x" * 99_000}] * 11}, 413, "request_too_large", None),
])
def test_size_bounds_are_clear_4xx(gateway_url: str, body: dict[str, Any], status: int, code: str,
                                   param: str | None) -> None:
    r = _post(gateway_url, PUBLIC_KEY, {"model": MODEL, "max_tokens": 1, **body})
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert err["code"] == code and (param is None or (err["param"] or "").startswith(param)), err
    assert set(err) == {"message", "type", "param", "code"}
