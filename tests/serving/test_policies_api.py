"""Per-tenant policies through the real gateway and the openai client (tests/policies.yaml):
auth, overrides, rate limits, block and stop actions with the in-engine detector, streaming
hold-back, tenant isolation, inheritance, hot reload, audit lines and safety metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from middleware.assets import EMBEDDED_HELDOUT
from tests.conftest import ACME_KEY, BETA_KEY, KID_KEY, MODEL, PUBLIC_KEY, STOPPER_KEY, openai_client

BENIGN = "Give me three tips about gardening."


def _heldout(label: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in EMBEDDED_HELDOUT.read_text().splitlines()]
    return sorted((r for r in rows if r["label"] == label and r["kind"] == "wordlist_insult"),
                  key=lambda r: -r["detector"])


# A toxic prompt from the committed held-out split (model-written text the judge labels toxic),
# the one the shipped detector scores highest: no hand-written toxic text in the tests either.
TOXIC = _heldout(1)[0]["text"]
# The first words of a held-out toxic text: greedy decoding continues it into profanity a few tokens
# in (" are.\n\nI'm not a bitch, I'm a human..."), which the detector flags two tokens later.
STOP_PROMPT = "Reply from user140: what a bitch you"
STOP_WORD = "bitch"
WEATHER = "The weather report for tomorrow says"


def test_stop_prompt_comes_from_the_heldout_split() -> None:
    assert any(r["visible"].startswith(STOP_PROMPT) for r in _heldout(1))


def _post(url: str, key: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)


def _chat_body(content: str, **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8,
            "temperature": 0, **kw}


# ---- auth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["Bearer sk-nope", "Basic abc", "Bearer"])
def test_unknown_or_malformed_key_is_401(gateway_url: str, header: str) -> None:
    r = httpx.post(f"{gateway_url}/v1/chat/completions", json=_chat_body(BENIGN),
                   headers={"Authorization": header}, timeout=60)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["type"] == "authentication_error" and "sk-nope" not in err["message"]


def test_no_key_is_the_anonymous_tenant_and_the_client_sees_the_policy(gateway_url: str) -> None:
    r = _post(gateway_url, None, _chat_body(BENIGN))
    assert r.status_code == 200
    assert r.headers["x-steergate-policy"] == "open" and r.json()["safety"]["policy"] == "open"
    assert r.headers["x-steergate-request-id"].startswith("req-")


# ---- overrides and limits -------------------------------------------------------------------

def test_override_of_a_locked_policy_is_403(gateway_url: str) -> None:
    r = _post(gateway_url, ACME_KEY, _chat_body(BENIGN, steering={"tier": "strong"}))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "steering_not_allowed" and r.json()["error"]["param"].startswith("steering")
    # The policy's own tier is not an override.
    assert _post(gateway_url, ACME_KEY, _chat_body(BENIGN, steering={"tier": "off"})).status_code == 200


def test_request_rate_limit_is_429_with_retry_after(gateway_url: str) -> None:
    codes = []
    for _ in range(4):
        r = _post(gateway_url, BETA_KEY, _chat_body(BENIGN, max_tokens=1))
        codes.append(r.status_code)
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    # Another tenant is not affected.
    assert _post(gateway_url, PUBLIC_KEY, _chat_body(BENIGN, max_tokens=1)).status_code == 200


# ---- actions ---------------------------------------------------------------------------------

def test_block_refuses_toxic_prompts_and_serves_benign_ones(gateway_url: str) -> None:
    acme = openai_client(gateway_url, ACME_KEY)
    with pytest.raises(openai.BadRequestError) as e:
        acme.completions.create(model=MODEL, prompt=TOXIC, max_tokens=8)
    assert e.value.body["code"] == "content_filter"
    ok = acme.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": BENIGN}], max_tokens=8)
    safety = ok.model_extra["safety"]
    assert safety["policy"] == "strict" and not safety["prompt"]["flagged"]
    assert 0 <= safety["prompt"]["toxicity"] < 0.5
    # The same toxic prompt under the open policy: annotated, not refused.
    r = openai_client(gateway_url, PUBLIC_KEY).completions.create(model=MODEL, prompt=TOXIC, max_tokens=4)
    assert r.model_extra["safety"]["prompt"]["flagged"] and r.model_extra["safety"]["prompt"]["toxicity"] >= 0.5


def test_blocked_streaming_prompt_is_an_http_error_not_a_stream(gateway_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        list(openai_client(gateway_url, ACME_KEY).completions.create(model=MODEL, prompt=TOXIC, max_tokens=8,
                                                                      stream=True))
    assert e.value.body["code"] == "content_filter"


def test_inheritance_child_keeps_parent_actions_with_its_own_threshold(gateway_url: str) -> None:
    # child extends strict (block) and sets prompt_threshold 0: even a benign prompt is blocked.
    r = _post(gateway_url, KID_KEY, _chat_body(BENIGN))
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"
    assert r.headers["x-steergate-policy"] == "child"
    # ...and it inherits strict's locked steering.
    assert _post(gateway_url, KID_KEY, _chat_body(BENIGN, steering={"tier": "light"})).status_code == 403


def _stream_text(client: openai.OpenAI, prompt: str, **kw: Any) -> tuple[str, str | None, dict[str, Any] | None]:
    text, finish, safety = "", None, None
    for chunk in client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0,
                                           stream=True, extra_body={"ignore_eos": True}, **kw):
        for choice in chunk.choices:
            text += choice.text or ""
            finish = choice.finish_reason or finish
        safety = (chunk.model_extra or {}).get("safety", safety)
    return text, finish, safety


def test_streaming_stop_ends_before_the_toxic_tokens_and_sends_nothing_after(gateway_url: str) -> None:
    full, finish_open, open_safety = _stream_text(openai_client(gateway_url, PUBLIC_KEY), STOP_PROMPT)
    # Released whole under the open policy. Its score at the end may be under the threshold again
    # (signed weights: "I'm not a bitch, I'm a human..." adds benign evidence), so whether the whole
    # text is flagged depends on the detector (the three-shot one: 0.19); the stop gate judges every
    # prefix as it comes.
    assert finish_open == "length" and STOP_WORD in full and open_safety is not None
    sent, finish, safety = _stream_text(openai_client(gateway_url, STOPPER_KEY), STOP_PROMPT)
    assert finish == "content_filter"
    # What went out is a strict prefix of the unstopped text, without the toxic words.
    assert full.startswith(sent) and len(sent) < len(full) and STOP_WORD not in sent
    assert safety is not None and safety["completion"]["flagged"] and safety["policy"] == "stopper"


def test_stop_policy_leaves_benign_output_alone(gateway_url: str) -> None:
    full, _, _ = _stream_text(openai_client(gateway_url, PUBLIC_KEY), WEATHER)
    sent, finish, safety = _stream_text(openai_client(gateway_url, STOPPER_KEY), WEATHER)
    assert (sent, finish) == (full, "length") and not safety["completion"]["flagged"]


def test_stop_without_streaming_returns_the_released_prefix(gateway_url: str) -> None:
    kw = {"model": MODEL, "prompt": STOP_PROMPT, "max_tokens": 24, "temperature": 0,
          "extra_body": {"ignore_eos": True}}
    full = openai_client(gateway_url, PUBLIC_KEY).completions.create(**kw).choices[0].text
    r = openai_client(gateway_url, STOPPER_KEY).completions.create(**kw)
    assert r.choices[0].finish_reason == "content_filter"
    assert full.startswith(r.choices[0].text) and STOP_WORD not in r.choices[0].text
    assert r.model_extra["safety"]["completion"]["flagged"]
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        openai_client(gateway_url, STOPPER_KEY).completions.create(model=MODEL, prompt=WEATHER, max_tokens=4, n=2)


def test_tenant_isolation_body_fields_cannot_pick_a_policy(gateway_url: str) -> None:
    # acme is strict; naming another policy or tenant in the body changes nothing.
    r = _post(gateway_url, ACME_KEY, _chat_body(TOXIC, policy="open", tenant="public", user="public"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"
    assert r.headers["x-steergate-policy"] == "strict"
    pub = _post(gateway_url, PUBLIC_KEY, _chat_body(TOXIC, policy="strict"))
    assert pub.status_code == 200 and pub.json()["safety"]["policy"] == "open"


# ---- audit, metrics, reload ------------------------------------------------------------------

def test_audit_lines_for_block_without_prompt_text(gateway_url: str, gateway_files: dict[str, Path]) -> None:
    r = _post(gateway_url, ACME_KEY, _chat_body(TOXIC))
    rid = r.headers["x-steergate-request-id"]
    deadline = time.monotonic() + 5
    line = None
    while time.monotonic() < deadline and line is None:
        lines = gateway_files["audit"].read_text().splitlines() if gateway_files["audit"].exists() else []
        line = next((json.loads(x) for x in lines if rid in x), None)
        time.sleep(0.2)
    assert line is not None
    assert (line["event"], line["tenant"], line["policy"], line["phase"]) == ("block", "acme", "strict", "prompt")
    assert line["scores"]["prompt"] >= 0.5 and "time" in line
    assert "prompt" not in line and "completion" not in line  # strict does not opt into text


def test_audit_includes_text_only_where_the_policy_opts_in(gateway_url: str,
                                                           gateway_files: dict[str, Path]) -> None:
    r = openai_client(gateway_url, STOPPER_KEY).completions.with_raw_response.create(
        model=MODEL, prompt=STOP_PROMPT, max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    rid = r.headers["x-steergate-request-id"]

    def stop_line() -> dict[str, Any] | None:
        lines = [json.loads(x) for x in gateway_files["audit"].read_text().splitlines() if rid in x]
        return next((x for x in lines if x["event"] == "stop"), None)

    assert _wait_for(lambda: stop_line() is not None)
    line = stop_line()
    assert line["policy"] == "stopper" and line["phase"] == "completion" and line["prompt"] == STOP_PROMPT


def test_safety_metrics_have_policy_labels(client: openai.OpenAI, gateway_url: str) -> None:
    client.completions.create(model=MODEL, prompt=TOXIC, max_tokens=2)
    text = httpx.get(f"{gateway_url}/metrics").text
    labels = f'arm="",experiment="",model="{MODEL}",phase="prompt",policy="open"'
    assert f"steergate_toxicity_score_count{{{labels}}}" in text
    flagged = [x for x in text.splitlines() if x.startswith("steergate_flagged_total{") and 'policy="open"' in x]
    assert flagged and float(flagged[0].split()[-1]) >= 1
    assert "steergate_steered_tokens_total" in text and "steergate_fluency_perplexity" in text
    assert any(x.startswith("steergate_requests_total{") and 'policy="open"' in x for x in text.splitlines())


def _wait_for(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def _reloads(url: str, result: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("steergate_policy_reloads_total{") and f'result="{result}"' in line:
            return float(line.split()[-1])
    return 0.0


def test_hot_reload_applies_valid_files_and_keeps_the_old_policy_on_invalid_ones(
        gateway_url: str, gateway_files: dict[str, Path]) -> None:
    path, original = gateway_files["policies"], gateway_files["original"].read_text()
    try:
        failures = _reloads(gateway_url, "failure")
        path.write_text(original.replace("anonymous_tenant: public", "anonymous_tenant: nobody"))  # invalid
        assert _wait_for(lambda: _reloads(gateway_url, "failure") > failures)
        assert _post(gateway_url, None, _chat_body(BENIGN, max_tokens=1)).status_code == 200  # old file live
        # A valid change: no anonymous tenant any more, so a request without a key is 401.
        path.write_text(original.replace("anonymous_tenant: public", "anonymous_tenant: null"))
        assert _wait_for(lambda: _post(gateway_url, None, _chat_body(BENIGN, max_tokens=1)).status_code == 401)
        assert _post(gateway_url, PUBLIC_KEY, _chat_body(BENIGN, max_tokens=1)).status_code == 200
    finally:
        path.write_text(original)
        assert _wait_for(lambda: _post(gateway_url, None, _chat_body(BENIGN, max_tokens=1)).status_code == 200)
