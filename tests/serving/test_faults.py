"""Faults, each on a real gateway of its own (tests/serving/subprocess_gateway.py), so killing its
processes never touches the session gateway the other tests use:

- the side channel loses messages (fault injection: STEERGATE_FAULT_SIDE_CHANNEL_DROP): under
  concurrency no response ever carries another request's per-token outputs;
- clients that disconnect mid-stream free their engine slots (the engine's running and waiting
  requests, from /metrics, return to 0);
- the per-request timeout (admission.request_timeout_s) ends a stream with an error event and a
  body with 504, and frees the slot;
- the policy file is deleted, then made unreadable: the old policies stay live, the failure is
  logged and counted, and a restored file is picked up;
- the engine-core process, then the model-server replica process, is SIGKILLed mid-stream: every
  in-flight stream ends promptly with an OpenAI-shaped error event, /health is 503 while Ray Serve
  replaces the replica and 200 after, and new requests succeed.

The gateway runs two ingress replicas, which also shows what is per replica (docs/operations.md,
"Multiple ingress replicas"): rate limits, /metrics; and what converges (policy reload).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from middleware.assets import EMBEDDED_FEATURES
from middleware.detection import FeatureSet
from middleware.sae import load_sae_config
from tests.conftest import MODEL
from tests.serving.subprocess_gateway import Gateway, free_port

KEY_A, KEY_B, KEY_LIMITED, KEY_M = "sk-fault-a", "sk-fault-b", "sk-fault-limited", "sk-fault-m"
LIMITED_RPM = 4
REQUEST_TIMEOUT_S = 20.0
LAYER = load_sae_config(FeatureSet.load(EMBEDDED_FEATURES).sae_path).hook_layer
CONFIG = f"""\
models:
  - name: {MODEL}
    engine: {{enforce_eager: true, cpu_kv_cache_gib: 1, max_model_len: 512, max_num_seqs: 8}}
    middleware:
      - {{cls: "middleware.detection:SafetyMiddleware", layer: {LAYER},
         args: {{features_path: "{EMBEDDED_FEATURES}"}}}}
      - {{cls: "tests.serving.hooks:TokenIdHook", layer: {LAYER}}}
ingress: {{num_replicas: 2}}
admission: {{request_timeout_s: {REQUEST_TIMEOUT_S}}}
policy_reload_interval_s: 0.5
"""
POLICIES = f"""\
version: 1
anonymous_tenant: null
policies:
  a: {{steering: {{tier: "off"}}, limits: {{requests_per_minute: 10000}}}}
  b: {{steering: {{tier: light, allow_override: false}}, limits: {{requests_per_minute: 10000}}}}
  limited: {{steering: {{tier: "off"}}, limits: {{requests_per_minute: {LIMITED_RPM}}}}}
  m: {{steering: {{tier: "off"}}}}
tenants:
  ta: {{policy: a, keys: ["{KEY_A}"]}}
  tb: {{policy: b, keys: ["{KEY_B}"]}}
  tl: {{policy: limited, keys: ["{KEY_LIMITED}"]}}
  tm: {{policy: m, keys: ["{KEY_M}"]}}
"""
# Recovery after a kill: Ray Serve replaces the replica, which loads its engine again.
RECOVERY_TIMEOUT_S = 600.0
# A stream in flight when its model server dies must end within this (never hang).
STREAM_END_TIMEOUT_S = 60.0
MODEL_REPLICA = f"ServeReplica:steergate:model-{MODEL}"


@pytest.fixture(scope="module")
def fault_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("faults")
    policies = workdir / "policies.yaml"
    policies.write_text(POLICIES)
    gw = Gateway.start(free_port(), workdir, CONFIG, policies=policies,
                       env={"STEERGATE_FAULT_SIDE_CHANNEL_DROP": "0.3"})
    gw.policies = policies  # type: ignore[attr-defined]
    try:
        gw.wait_healthy()
        yield gw
    finally:
        if gw.proc.poll() is None:
            os.kill(gw.proc.pid, signal.SIGTERM)
            gw.proc.wait(60)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def engine_load(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    load = {}
    for line in text.splitlines():
        if line.startswith("steergate_engine_requests{"):
            state = line.split('state="')[1].split('"')[0]
            load[state] = float(line.rsplit(" ", 1)[1])
    return load


def _wait_until(predicate: Any, timeout_s: float, every_s: float = 0.5) -> float:
    """Seconds until `predicate()` held; fails the test after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(every_s)
    pytest.fail(f"not within {timeout_s} s: {predicate.__doc__ or predicate}")


# ---- side channel ------------------------------------------------------------------------------

def test_side_channel_loss_never_mislabels_another_requests_outputs(fault_gateway: Gateway) -> None:
    """Concurrent requests, each a prompt of one repeated token of its own, with 30% of side-channel
    messages dropped: every per-token output a response carries is its own token at its own position."""
    tokens = [1000 + 37 * i for i in range(8)]

    async def one(client: httpx.AsyncClient, token: int, length: int) -> dict[str, Any]:
        r = await client.post("/v1/completions", headers=_auth(KEY_A), json={
            "model": MODEL, "prompt": [token] * length, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True})
        assert r.status_code == 200, r.text
        return r.json()

    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=fault_gateway.url, timeout=120) as client:
            return await asyncio.gather(*(one(client, t, 5 + i) for i, t in enumerate(tokens)))

    received = dropped = 0
    for _ in range(2):
        for i, body in enumerate(asyncio.run(run())):
            token, length = tokens[i], 5 + i
            generated = body["choices"][0]["token_ids"]
            own = {pos: token for pos in range(length)} | {length + j: t for j, t in enumerate(generated)}
            seen = body["safety"]["token_ids"]
            for pos, tid, is_prompt in seen:
                assert own.get(pos) == tid and is_prompt == (pos < length), (token, pos, tid)
            received += len(seen)
            dropped += length + len(generated) - 1 - len(seen)  # the last token is never fed back
            assert body["safety"]["policy"] == "a"
    assert received > 0 and dropped > 0  # some messages were lost, and the rest landed where they belong


# ---- disconnects and timeouts ------------------------------------------------------------------

def _long_stream_body(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "ignore_eos": True,
            "stream": True, **kw}


def test_clients_that_disconnect_mid_stream_free_their_engine_slots(fault_gateway: Gateway) -> None:
    async def read_a_little_then_leave() -> None:
        async with httpx.AsyncClient(base_url=fault_gateway.url, timeout=120) as client:
            async with client.stream("POST", "/v1/completions", json=_long_stream_body(), headers=_auth(KEY_A)) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        return  # closes the connection with the stream under way

    async def run() -> None:
        await asyncio.gather(*(read_a_little_then_leave() for _ in range(4)))

    asyncio.run(run())

    def engine_idle() -> bool:
        """the engine's running and waiting requests back to 0"""
        load = engine_load(fault_gateway.url)
        return load.get("running", 1) == 0 and load.get("waiting", 1) == 0

    freed_s = _wait_until(engine_idle, 30)
    print(f"engine slots freed {freed_s:.1f} s after 4 clients disconnected")


def test_the_request_timeout_is_enforced_and_frees_the_slot(fault_gateway: Gateway) -> None:
    started = time.monotonic()
    r = httpx.post(f"{fault_gateway.url}/v1/completions", headers=_auth(KEY_A), timeout=120,
                   json=_long_stream_body(stream=False, max_tokens=480))
    took = time.monotonic() - started
    assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout", r.text
    assert REQUEST_TIMEOUT_S <= took < REQUEST_TIMEOUT_S + 15
    events = []
    with httpx.stream("POST", f"{fault_gateway.url}/v1/completions", headers=_auth(KEY_A), timeout=120,
                      json=_long_stream_body(max_tokens=480)) as s:
        assert s.status_code == 200
        events = [line for line in s.iter_lines() if line.startswith("data: ")]
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert events[-1] == "data: [DONE]" and error["code"] == "request_timeout" and set(error) == {
        "message", "type", "param", "code"}
    _wait_until(lambda: engine_load(fault_gateway.url).get("running") == 0, 30)


# ---- the policy file disappears ----------------------------------------------------------------

def _reloads(url: str, result: str) -> float:
    """Reload results as one ingress replica counts them (whichever answered /metrics)."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("steergate_policy_reloads_total{") and f'result="{result}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_deleted_or_unreadable_policy_file_keeps_the_old_policies(fault_gateway: Gateway) -> None:
    path: Path = fault_gateway.policies  # type: ignore[attr-defined]
    original = path.read_text()
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 1}

    def served_as_b() -> bool:
        r = httpx.post(f"{fault_gateway.url}/v1/completions", json=body, headers=_auth(KEY_B), timeout=60)
        return r.status_code == 200 and r.headers["x-steergate-policy"] == "b"

    try:
        path.unlink()
        _wait_until(lambda: _reloads(fault_gateway.url, "failure") >= 1, 20)
        assert all(served_as_b() for _ in range(6))  # both replicas still serve the old file
        path.mkdir()  # a directory where the file was: exists, cannot be read as a file
        time.sleep(1.5)
        assert all(served_as_b() for _ in range(6))
        # (Logged by each replica to Serve's replica log files, not to the launcher's output.)
    finally:
        if path.is_dir():
            path.rmdir()
        path.write_text(original.replace("tier: light, allow_override: false", "tier: medium, allow_override: false"))
    # A readable file again: picked up (the tier changed), on every replica.

    def medium_everywhere() -> bool:
        """both replicas serve the restored file"""
        for _ in range(6):
            r = httpx.post(f"{fault_gateway.url}/v1/completions", json=body, headers=_auth(KEY_B), timeout=60)
            if r.status_code != 200 or r.json()["safety"]["tier"] != "medium":
                return False
        return True

    _wait_until(medium_everywhere, 20)
    path.write_text(original)


# ---- two ingress replicas: what is per replica ---------------------------------------------------

async def _burst(url: str, key: str, n: int, concurrency: int) -> list[int]:
    sem = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient) -> int:
        async with sem:
            r = await client.post("/v1/completions", headers=_auth(key),
                                  json={"model": MODEL, "prompt": "Hi", "max_tokens": 1})
            return r.status_code

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(n))))


def test_rate_limits_are_per_ingress_replica(fault_gateway: Gateway) -> None:
    """Each of the 2 replicas enforces the tenant's limit on the share it receives: a burst gets more
    than one replica's allowance, never more than both together (documented semantics)."""
    codes = asyncio.run(_burst(fault_gateway.url, KEY_LIMITED, 6 * LIMITED_RPM, concurrency=4))
    admitted = codes.count(200)
    assert set(codes) <= {200, 429}
    assert LIMITED_RPM < admitted <= 2 * LIMITED_RPM, codes


def test_metrics_are_per_ingress_replica(fault_gateway: Gateway) -> None:
    """/metrics answers with the counters of the replica that took the scrape: after requests spread over
    both, scrapes disagree, and none counts them all."""
    sent = 24
    assert asyncio.run(_burst(fault_gateway.url, KEY_M, sent, concurrency=4)).count(200) == sent

    def count() -> float:
        text = httpx.get(f"{fault_gateway.url}/metrics", timeout=30).text
        return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
                   if x.startswith("steergate_requests_total{") and 'policy="m"' in x and 'status="200"' in x)

    seen = {count() for _ in range(12)}
    # No scrape counts every request; which replica answers a scrape is HAProxy's choice (it may be the
    # same one every time), so a second value is not guaranteed, but if both answered they add up.
    assert max(seen) < sent and (len(seen) == 1 or sum(seen) >= sent), seen


# ---- processes killed mid-stream ---------------------------------------------------------------

def _find(gw: Gateway, marker: str) -> psutil.Process | None:
    for p in psutil.Process(gw.proc.pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and (marker in " ".join(p.cmdline()) or marker in p.name()):
                return p
        except psutil.Error:
            continue
    return None


def _tree(gw: Gateway) -> str:
    """The gateway's processes, one per line, for a failure message."""
    lines = []
    for p in psutil.Process(gw.proc.pid).children(recursive=True):
        try:
            lines.append(f"{p.pid} ppid={p.ppid()} {p.status()} {' '.join(p.cmdline())[:120] or p.name()}")
        except psutil.Error as e:
            lines.append(f"{p.pid} {type(e).__name__}")
    return "\n".join(lines)


def _process(gw: Gateway, marker: str, timeout_s: float = 60.0) -> psutil.Process:
    """The live process of the gateway named `marker`, waiting up to `timeout_s`: a replaced process
    may be renamed (setproctitle) a moment after it starts."""
    deadline = time.monotonic() + timeout_s
    while True:
        p = _find(gw, marker)
        if p is not None:
            return p
        if time.monotonic() > deadline:
            raise AssertionError(f"no live process {marker!r} under the gateway after {timeout_s:.0f} s; "
                                 f"its processes:\n{_tree(gw)}")
        time.sleep(1)


async def _streams_then_kill(url: str, victim: psutil.Process, n: int = 3) -> list[tuple[str, float]]:
    """Start `n` long streams; once each has sent a chunk, SIGKILL `victim`; return how each stream ended
    ("error:<code>", "cut", "done") and how long after the kill."""
    started = asyncio.Event()
    first_chunks = 0
    killed_at: list[float] = []

    async def one(client: httpx.AsyncClient) -> tuple[str, float]:
        nonlocal first_chunks
        outcome = "done"
        try:
            async with client.stream("POST", "/v1/completions", json=_long_stream_body(), headers=_auth(KEY_A)) as r:
                assert r.status_code == 200
                counted = False
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if not counted:
                        counted, first_chunks = True, first_chunks + 1
                        if first_chunks == n:
                            started.set()
                    if line.startswith('data: {"error"'):
                        error = json.loads(line.removeprefix("data: "))["error"]
                        assert set(error) == {"message", "type", "param", "code"}, error
                        outcome = f"error:{error['code']}"
        except httpx.HTTPError:
            outcome = "cut"
        return outcome, time.monotonic() - (killed_at[0] if killed_at else time.monotonic())

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(STREAM_END_TIMEOUT_S * 2)) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(n)]
        await asyncio.wait_for(started.wait(), 120)
        victim.send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())
        return await asyncio.wait_for(asyncio.gather(*tasks), STREAM_END_TIMEOUT_S)


def _kill_mid_stream_and_recover(gw: Gateway, name: str, find: Callable[[], psutil.Process]) -> None:
    """Kill the process `find` returns while streams run; they must end with a retry error, and the
    gateway must come back with a new such process."""
    victim = find()
    outcomes = asyncio.run(_streams_then_kill(gw.url, victim))
    print(f"{name} killed: streams ended {outcomes}")
    for outcome, after_s in outcomes:
        # An error event saying "retry" (what a client gets before a stream starts, too), never a silent
        # cut, a normal end, or vLLM's generic 500 event.
        assert outcome == "error:model_unavailable", outcomes
        assert after_s < STREAM_END_TIMEOUT_S
    # While Ray Serve replaces the replica: /health is 503 (checked at once), then 200.
    assert httpx.get(f"{gw.url}/health", timeout=30).status_code == 503
    r = httpx.post(f"{gw.url}/v1/completions", headers=_auth(KEY_A), timeout=60,
                   json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
    assert r.status_code in (200, 503, 504) and (r.status_code == 200 or "error" in r.json())
    recovered_s = _wait_until(lambda: httpx.get(f"{gw.url}/health", timeout=30).status_code == 200,
                              RECOVERY_TIMEOUT_S, every_s=2)
    print(f"{name} killed: healthy again after {recovered_s:.0f} s")
    r = httpx.post(f"{gw.url}/v1/completions", headers=_auth(KEY_A), timeout=120,
                   json={"model": MODEL, "prompt": "Hi", "max_tokens": 4})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    # The killed process is gone and a new one took its place (the lookup fails, listing the tree, if not).
    assert not _alive(victim), f"pid {victim.pid} survived SIGKILL"
    replacement = find()
    assert (replacement.pid, replacement.create_time()) != (victim.pid, victim.create_time())


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _engine_core(gw: Gateway, timeout_s: float = 60.0) -> psutil.Process:
    """The model server replica's engine-core process, found by ancestry, not by title: vLLM spawns it
    as the replica's one child besides multiprocessing's resource tracker. vLLM renames it
    "VLLM::EngineCore" with setproctitle, but the title is not always applied: CI twice found a
    replacement engine core serving requests under its spawn command line, and a full local run found
    the first one so. Ray's replica titles have held everywhere."""
    deadline = time.monotonic() + timeout_s
    while True:
        replica = _process(gw, MODEL_REPLICA, timeout_s=timeout_s)
        spawned = [p for p in replica.children()
                   if _alive(p) and "resource_tracker" not in " ".join(p.cmdline())]
        if len(spawned) == 1:
            return spawned[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"expected one engine-core child of pid {replica.pid}:\n{_tree(gw)}")
        time.sleep(1)


def test_engine_core_killed_mid_stream(fault_gateway: Gateway) -> None:
    _kill_mid_stream_and_recover(fault_gateway, "engine core", lambda: _engine_core(fault_gateway))


def test_model_server_replica_killed_mid_stream(fault_gateway: Gateway) -> None:
    _kill_mid_stream_and_recover(fault_gateway, MODEL_REPLICA, lambda: _process(fault_gateway, MODEL_REPLICA))
