"""Sticky arms without shared state: the same unit gets the same arm from either of two ingress
replicas, and from a gateway started afresh on the same port.

Its own small gateway (eager, small KV cache, no middleware: both arms are tier "off", since what is
tested is the assignment, not the steering), run as `steergate serve` like tests/serving/test_lifecycle.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.subprocess_gateway import Gateway, free_port
from tests.serving.test_lifecycle import STOP_BUDGET_S

POLICIES = """\
version: 1
anonymous_tenant: public
policies:
  ab:
    steering: {tier: "off"}
    experiment:
      name: sticky
      control: a
      arms:
        - {name: a, tier: "off", weight: 1}
        - {name: b, tier: "off", weight: 1}
tenants:
  public: {policy: ab}
"""
CONFIG = """\
models:
  - name: smollm2-135m-instruct
    engine: {enforce_eager: true, cpu_kv_cache_gib: 1, max_model_len: 512, max_num_seqs: 4}
    middleware: []
ingress: {num_replicas: %d}
"""
USERS = [f"sticky-{i}" for i in range(30)]


def _arm(url: str, user: str) -> str:
    r = httpx.post(f"{url}/v1/completions", timeout=120,
                   json={"prompt": "Hi", "max_tokens": 1, "user": user})
    assert r.status_code == 200, r.text
    assert r.json()["safety"]["arm"] == r.headers["x-steergate-arm"]
    return r.headers["x-steergate-arm"]


def _replica_and_count(url: str) -> tuple[float, float]:
    """(an id of the ingress replica that answered this scrape, its count of requests in the experiment).
    The id is when that replica created its series (`_created`): each replica has its own registry."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    ours = [line for line in text.splitlines() if 'experiment="sticky"' in line]
    created = min(float(x.rsplit(" ", 1)[1]) for x in ours if x.startswith("steergate_requests_created{"))
    count = sum(float(x.rsplit(" ", 1)[1]) for x in ours if x.startswith("steergate_requests_total{"))
    return created, count


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sticky")
    (d / "policies.yaml").write_text(POLICIES)
    return d


@pytest.fixture(scope="module")
def gateways(workdir: Path) -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gw in started:
        if gw.proc.poll() is None:
            os.killpg(gw.proc.pid, signal.SIGTERM)
            gw.proc.wait(60)


def test_same_unit_same_arm_across_ingress_replicas_and_a_restart(workdir: Path,
                                                                   gateways: list[Gateway]) -> None:
    port = free_port()
    policies = workdir / "policies.yaml"
    first = Gateway.start(port, workdir, CONFIG % 2, policies)
    gateways.append(first)
    first.wait_healthy()
    arms = {u: _arm(first.url, u) for u in USERS}
    assert set(arms.values()) == {"a", "b"}
    for _ in range(2):
        assert {u: _arm(first.url, u) for u in USERS} == arms
    # Both ingress replicas served part of those requests (each /metrics answer is one replica's).
    counts = dict(_replica_and_count(first.url) for _ in range(30))
    assert len(counts) == 2 and min(counts.values()) > 0 and sum(counts.values()) == 3 * len(USERS), counts

    os.kill(first.proc.pid, signal.SIGTERM)
    first.proc.wait(STOP_BUDGET_S)
    second = Gateway.start(port, workdir, CONFIG % 1, policies)
    gateways.append(second)
    second.wait_healthy()
    assert {u: _arm(second.url, u) for u in USERS} == arms
