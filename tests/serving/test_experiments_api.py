"""A/B experiments through the real gateway and the openai client (tests/policies.yaml's `ab*` policies):
sticky arms, weights, reweighting by hot reload, the arm on body/header/audit/metrics, overrides,
tenant isolation, and live fluency scoring at rate 1 and 0."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from middleware.fluency import continuation_perplexity
from tests.conftest import (
    AB2_KEY,
    AB_HEADER_KEY,
    AB_KEY,
    AB_QUIET_KEY,
    MODEL,
    PUBLIC_KEY,
    openai_client,
)
from tests.serving.test_policies_api import TOXIC, _reloads, _wait_for

ARMS = {"light", "medium"}
BENIGN = "Write one sentence about the sea."


def _post(url: str, key: str, user: str | None = None, headers: dict[str, str] | None = None,
          **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": BENIGN}], "max_tokens": 1,
               "temperature": 0, **({"user": user} if user is not None else {}), **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=120,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def _arms_of(url: str, key: str, users: list[str], concurrency: int = 8) -> dict[str, str]:
    """The arm each user gets (one max_tokens=1 request each, `concurrency` at a time)."""
    async def run() -> dict[str, str]:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
            async def one(user: str) -> tuple[str, str]:
                async with sem:
                    r = await http.post(f"{url}/v1/completions", json={
                        "model": MODEL, "prompt": "Hi", "max_tokens": 1, "user": user})
                assert r.status_code == 200, r.text
                assert r.json()["safety"]["arm"] == r.headers["x-steergate-arm"]
                return user, r.headers["x-steergate-arm"]

            return dict(await asyncio.gather(*(one(u) for u in users)))

    return asyncio.run(run())


def _metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _binomial_bound(n: int, p: float, z: float = 3.3) -> float:  # ~99.9%
    return z * math.sqrt(n * p * (1 - p))


# ---- the arm in every place it is reported ----------------------------------------------------

def test_arm_on_body_header_and_every_safety_metric(gateway_url: str) -> None:
    client = openai_client(gateway_url, AB_KEY)
    names = ("steergate_toxicity_score_count", "steergate_steered_tokens_total", "steergate_requests_total",
             "steergate_time_to_first_token_seconds_count", "steergate_generated_tokens_total")
    arm_of_alice = _post(gateway_url, AB_KEY, "alice").headers["x-steergate-arm"]  # sticky: hers from now on
    labels = {"experiment": "strength", "arm": arm_of_alice, "policy": "ab"}
    before = {name: _metric(gateway_url, name, **labels) for name in names}
    r = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": BENIGN}], max_tokens=4, user="alice")
    safety = r.parse().model_extra["safety"]
    arm = r.headers["x-steergate-arm"]
    assert arm == arm_of_alice
    assert (safety["experiment"], safety["arm"], safety["policy"]) == ("strength", arm, "ab")
    assert safety["tier"] == arm  # each arm is the tier of the same name
    # A stream: the arm on its header and on the finishing chunk's annotation.
    with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=[{"role": "user", "content": BENIGN}], max_tokens=4, user="alice",
            stream=True) as stream:
        assert stream.headers["x-steergate-arm"] == arm
        last = [c for c in stream.parse() if c.choices and c.choices[0].finish_reason][-1]
    streamed = last.model_extra["safety"]
    assert streamed["arm"] == arm
    # The stream is counted as it closes, just after the client read its end.
    requests = "steergate_requests_total"
    assert _wait_for(lambda: _metric(gateway_url, requests, **labels) - before[requests] >= 2, 10)
    after = {name: _metric(gateway_url, name, **labels) for name in names}
    # Both responses counted under the arm (a benign answer may steer no token: then 0 is the truth).
    steered = sum((x.get(phase) or {}).get("steered_tokens", 0) for x in (safety, streamed)
                  for phase in ("prompt", "completion"))
    assert after["steergate_steered_tokens_total"] - before["steergate_steered_tokens_total"] == steered
    assert after["steergate_requests_total"] - before["steergate_requests_total"] == 2
    assert after["steergate_toxicity_score_count"] - before["steergate_toxicity_score_count"] >= 2
    assert after["steergate_generated_tokens_total"] - before["steergate_generated_tokens_total"] >= 2
    ttft = "steergate_time_to_first_token_seconds_count"
    assert after[ttft] - before[ttft] == 1  # the stream's
    assert _wait_for(lambda: _metric(gateway_url, "steergate_fluency_perplexity_count", **labels) >= 2, 60)
    share = _metric(gateway_url, "steergate_experiment_arm_share", experiment="strength", arm="light",
                    policy="ab", control="true")
    assert share == 0.5


def test_flagged_requests_carry_the_arm_in_the_audit_line_and_flagged_metric(
        gateway_url: str, gateway_files: dict[str, Path]) -> None:
    r = openai_client(gateway_url, AB_KEY).completions.with_raw_response.create(
        model=MODEL, prompt=TOXIC, max_tokens=2, user="mallory")
    arm, rid = r.headers["x-steergate-arm"], r.headers["x-steergate-request-id"]
    assert r.parse().model_extra["safety"]["prompt"]["flagged"]

    def line() -> dict[str, Any] | None:
        lines = gateway_files["audit"].read_text().splitlines() if gateway_files["audit"].exists() else []
        return next((json.loads(x) for x in lines if rid in x), None)

    assert _wait_for(lambda: line() is not None)
    assert (line()["experiment"], line()["arm"], line()["policy"]) == ("strength", arm, "ab")
    flagged = _metric(gateway_url, "steergate_flagged_total", phase="prompt", experiment="strength", arm=arm)
    assert flagged >= 1


# ---- stickiness, weights, reweighting ---------------------------------------------------------

def test_same_unit_same_arm_and_no_unit_is_still_served(gateway_url: str) -> None:
    arms = {_post(gateway_url, AB_KEY, "bob").headers["x-steergate-arm"] for _ in range(4)}
    assert len(arms) == 1
    # Without a `user` the request id decides: served (never an error), and both arms turn up.
    seen = Counter(_post(gateway_url, AB_KEY).headers["x-steergate-arm"] for _ in range(16))
    assert set(seen) == ARMS


def test_weights_then_reweighting_50_50_to_70_30_moves_only_units_that_must(
        gateway_url: str, gateway_files: dict[str, Path]) -> None:
    users = [f"unit-{i}" for i in range(300)]
    before = _arms_of(gateway_url, AB_QUIET_KEY, users)
    light = sum(a == "light" for a in before.values())
    assert abs(light - 150) < _binomial_bound(300, 0.5), light
    path, original = gateway_files["policies"], gateway_files["original"].read_text()
    data = yaml.safe_load(original)
    try:
        experiment = dict(data["policies"]["ab"]["experiment"])
        experiment["arms"] = [{"name": "light", "tier": "light", "weight": 70},
                              {"name": "medium", "tier": "medium", "weight": 30}]
        data["policies"]["ab-quiet"]["experiment"] = experiment
        successes = _reloads(gateway_url, "success")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        assert _wait_for(lambda: _reloads(gateway_url, "success") > successes)
        after = _arms_of(gateway_url, AB_QUIET_KEY, users)
        moves = Counter((before[u], after[u]) for u in users)
        assert moves[("light", "medium")] == 0, moves  # nobody in the arm that grows is reshuffled
        must = 300 * 0.2  # medium's share went from 50% to 30%: those units, and only those, move
        assert abs(moves[("medium", "light")] - must) < _binomial_bound(300, 0.2), moves

        # A bad experiment (a weight of 0) is rejected; the 70/30 experiment stays live.
        failures = _reloads(gateway_url, "failure")
        experiment["arms"] = [{"name": "light", "tier": "light", "weight": 0}, experiment["arms"][1]]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        assert _wait_for(lambda: _reloads(gateway_url, "failure") > failures)
        assert _arms_of(gateway_url, AB_QUIET_KEY, users[:40]) == {u: after[u] for u in users[:40]}
    finally:
        path.write_text(original)
        restored = {u: before[u] for u in users[:20]}
        assert _wait_for(lambda: _arms_of(gateway_url, AB_QUIET_KEY, users[:20]) == restored, 120)


def test_header_unit_and_overrides_recorded_as_their_own_arm(gateway_url: str) -> None:
    session = {"x-session-id": "s-42"}
    arms = {_post(gateway_url, AB_HEADER_KEY, headers=session).headers["x-steergate-arm"] for _ in range(3)}
    assert len(arms) == 1 and arms <= {"off", "strong"}
    before = _metric(gateway_url, "steergate_requests_total", experiment="by-session", arm="override")
    r = _post(gateway_url, AB_HEADER_KEY, headers=session, steering={"tier": "medium"})
    assert r.status_code == 200 and r.headers["x-steergate-arm"] == "override"
    assert (r.json()["safety"]["arm"], r.json()["safety"]["tier"]) == ("override", "medium")
    after = _metric(gateway_url, "steergate_requests_total", experiment="by-session", arm="override")
    assert after == before + 1


def test_override_inside_a_refusing_experiment_is_403(gateway_url: str) -> None:
    r = _post(gateway_url, AB_KEY, "carol", steering={"tier": "strong"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "steering_not_allowed"
    assert "x-steergate-arm" not in r.headers
    own = _post(gateway_url, AB_KEY, "carol").headers["x-steergate-arm"]
    # Asking for exactly the assigned arm's steering is not an override.
    assert _post(gateway_url, AB_KEY, "carol", steering={"tier": own}).status_code == 200


def test_nothing_a_client_sends_picks_an_arm(gateway_url: str) -> None:
    users = [f"iso-{i}" for i in range(40)]
    mine = _arms_of(gateway_url, AB_KEY, users)
    for user in users[:6]:
        other = "medium" if mine[user] == "light" else "light"
        r = _post(gateway_url, AB_KEY, user, headers={"x-steergate-arm": other}, arm=other, experiment="x")
        assert r.headers["x-steergate-arm"] == mine[user]
    # The same `user` strings under another tenant are other units: its arms are its own draw.
    theirs = _arms_of(gateway_url, AB2_KEY, users)
    assert theirs != mine and set(theirs.values()) == ARMS


def test_client_priority_is_refused(gateway_url: str) -> None:
    r = _post(gateway_url, PUBLIC_KEY, priority=-10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "priority"


# ---- live fluency -----------------------------------------------------------------------------

def _fluency_count(url: str, policy: str) -> float:
    return _metric(url, "steergate_fluency_perplexity_count", policy=policy)


def _settle_fluency(url: str, timeout_s: float = 300) -> None:
    """Wait until earlier tests' samples are scored: the queue empty and the count still for 3 s
    (the tests above sample every response of policy ab; one worker scores them in the background)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        now = _metric(url, "steergate_fluency_perplexity_count")
        if now == last and _metric(url, "steergate_fluency_queue_depth") == 0:
            return
        last = now
        time.sleep(3)
    pytest.fail(f"live fluency scoring still busy after {timeout_s} s")


def test_fluency_is_scored_for_every_response_at_rate_1_and_none_at_rate_0(gateway_url: str) -> None:
    _settle_fluency(gateway_url)
    ab, quiet = _fluency_count(gateway_url, "ab"), _fluency_count(gateway_url, "ab-quiet")
    dropped = _metric(gateway_url, "steergate_fluency_dropped_total")
    for i in range(3):
        _post(gateway_url, AB_KEY, f"f-{i}", max_tokens=6)
        _post(gateway_url, AB_QUIET_KEY, f"f-{i}", max_tokens=6)
        # The openai client closes the connection at [DONE]: the sample (and the usage) must be in by then.
        generated = _metric(gateway_url, "steergate_generated_tokens_total", policy="ab")
        list(openai_client(gateway_url, AB_KEY).completions.create(
            model=MODEL, prompt="The river", max_tokens=6, user=f"s-{i}", stream=True,
            extra_body={"ignore_eos": True}))
        assert _metric(gateway_url, "steergate_generated_tokens_total", policy="ab") == generated + 6
    assert _wait_for(lambda: _fluency_count(gateway_url, "ab") >= ab + 6, 90)
    time.sleep(2)  # anything late would show up by now
    assert _fluency_count(gateway_url, "ab") == ab + 6
    assert _fluency_count(gateway_url, "ab-quiet") == quiet
    assert _metric(gateway_url, "steergate_fluency_dropped_total") == dropped


def test_live_fluency_equals_the_unsteered_models_perplexity_of_the_same_tokens(gateway_url: str) -> None:
    """The live score of one response equals its perplexity computed over HTTP: the same token ids
    sent back as a prompt with prompt log-probabilities, steering off (the open policy)."""
    _settle_fluency(gateway_url)
    before_n = _metric(gateway_url, "steergate_fluency_perplexity_count", policy="ab")
    before_sum = _metric(gateway_url, "steergate_fluency_perplexity_sum", policy="ab")
    r = httpx.post(f"{gateway_url}/v1/completions", timeout=120,
                   headers={"Authorization": f"Bearer {AB_KEY}"},
                   json={"model": MODEL, "prompt": "A short poem about rain:", "max_tokens": 12,
                         "temperature": 0, "user": "poet", "return_token_ids": True})
    choice = r.json()["choices"][0]
    prompt_ids, completion_ids = choice["prompt_token_ids"], choice["token_ids"]
    assert _wait_for(lambda: _metric(gateway_url, "steergate_fluency_perplexity_count", policy="ab")
                     == before_n + 1, 60)
    live = _metric(gateway_url, "steergate_fluency_perplexity_sum", policy="ab") - before_sum
    ids = prompt_ids + completion_ids
    scored = httpx.post(f"{gateway_url}/v1/completions", timeout=120,
                        headers={"Authorization": f"Bearer {PUBLIC_KEY}"},
                        json={"model": MODEL, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0}).json()
    offline = continuation_perplexity(scored["choices"][0]["prompt_logprobs"], ids, len(prompt_ids))
    assert live == pytest.approx(offline, rel=1e-3)
    assert 1 < live < 1000


def test_openai_client_sees_no_token_ids_it_did_not_ask_for(gateway_url: str) -> None:
    body = _post(gateway_url, AB_KEY, "dora", max_tokens=4).json()
    assert body.get("prompt_token_ids") is None and body["choices"][0].get("token_ids") is None
