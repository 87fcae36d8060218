"""`steergate report` against the real gateway: traffic through a two-arm experiment (tests/policies.yaml's
`ab-report`: light vs strong, every response scored for fluency), then the report, from the gateway's
/metrics and from a real Prometheus that scraped it while the traffic flowed, must give exactly the
numbers this test computes from the same responses.

Perplexities are recomputed here over HTTP: each response's token ids sent back as a prompt with
prompt log-probabilities under a policy without steering, the same computation the gateway does off
the request path (so they agree to float rounding of a differently batched forward pass).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from middleware.assets import EMBEDDED_HELDOUT
from middleware.fluency import continuation_perplexity
from tests.conftest import AB_REPORT_KEY, MODEL, PUBLIC_KEY
from tests.deploy.test_deploy import dashboard_expressions

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "report"
USERS = 24  # one request per unit: about half per arm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prompts() -> list[str]:
    """Held-out texts (no hand-written toxic text): toxic and benign in turn, cut to a prompt."""
    rows = [json.loads(line) for line in EMBEDDED_HELDOUT.read_text().splitlines()]
    toxic = [r["text"] for r in rows if r["label"] == 1][: USERS // 2]
    benign = [r["text"] for r in rows if r["label"] == 0][: USERS // 2]
    return [" ".join(t.split()[:8]) for pair in zip(toxic, benign, strict=True) for t in pair]


@pytest.fixture(scope="module")
def prometheus(gateway_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A real Prometheus on loopback scraping the gateway every second with the deploy/ rules; None
    (and the reason printed) where the binary is not installed (`make test` installs it with apt)."""
    binary = shutil.which("prometheus")
    if binary is None:
        print("\nprometheus not installed (`make test-tools` installs Debian's package): "
              "the real-Prometheus test skips; the /metrics test still checks the report", file=sys.stderr)
        yield None
        return
    d = tmp_path_factory.mktemp("prometheus")
    target = gateway_url.removeprefix("http://")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(ROOT / "deploy" / "prometheus-rules.yml")],
              "scrape_configs": [{"job_name": "steergate", "metrics_path": "/metrics",
                                  "static_configs": [{"targets": [target]}]}]}
    (d / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (d / "prometheus.log").open("wb")
    args = [binary, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _up(url), 60, f"prometheus did not scrape {target}: see {d / 'prometheus.log'}")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _wait(predicate: Any, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, ValueError):  # not up yet; a starting Prometheus answers 503 in plain text
            pass
        time.sleep(0.5)
    pytest.fail(message)


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _up(url: str) -> bool:
    return any(r["value"][1] == "1" for r in _query(url, 'up{job="steergate"}'))


def _fluency_count(gateway_url: str) -> float:
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("steergate_fluency_perplexity_count{")
               and f'experiment="{EXPERIMENT}"' in line)


@pytest.fixture(scope="module")
def traffic(gateway_url: str, prometheus: str | None) -> dict[str, list[dict[str, Any]]]:
    """One request per unit through the experiment; per arm: each response's safety and perplexity."""
    by_arm: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=gateway_url, timeout=120) as http:
        for i, prompt in enumerate(_prompts()):
            r = http.post("/v1/completions", headers={"Authorization": f"Bearer {AB_REPORT_KEY}"}, json={
                "model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0,
                "user": f"report-{i}", "return_token_ids": True})
            assert r.status_code == 200, r.text
            body = r.json()
            choice = body["choices"][0]
            ids = choice["prompt_token_ids"] + choice["token_ids"]
            scored = http.post("/v1/completions", headers={"Authorization": f"Bearer {PUBLIC_KEY}"}, json={
                "model": MODEL, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0}).json()
            start = len(choice["prompt_token_ids"])
            ppl = continuation_perplexity(scored["choices"][0]["prompt_logprobs"], ids, start)
            by_arm.setdefault(body["safety"]["arm"], []).append({"safety": body["safety"], "perplexity": ppl})
    assert set(by_arm) == {"light", "strong"}, by_arm.keys()
    # Every response is sampled (rate 1.0): wait until the gateway has scored them all.
    _wait(lambda: _fluency_count(gateway_url) == USERS, 120, "not every response was scored for fluency")
    return by_arm


def _expected(responses: list[dict[str, Any]]) -> dict[str, float]:
    n = len(responses)
    completion = [r["safety"]["completion"] for r in responses]
    prompt = [r["safety"]["prompt"] for r in responses]
    return {
        "n": n,
        "toxicity": sum(c["toxicity"] for c in completion) / n,
        "flagged": sum(c["flagged"] for c in completion),
        "steered_tokens": sum(c["steered_tokens"] + p["steered_tokens"]
                              for c, p in zip(completion, prompt, strict=True)) / n,
        "perplexity": sum(r["perplexity"] for r in responses) / n,
    }


def _report(source: str, tmp_path: Path) -> dict[str, Any]:
    plot = tmp_path / "report.png"
    command = [sys.executable, "-m", "serving.cli", "report", "--source", source, "--experiment", EXPERIMENT,
               "--json", "--plot", str(plot)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")
    return json.loads(out.stdout)


def _check(report: dict[str, Any], traffic: dict[str, list[dict[str, Any]]]) -> None:
    assert report["control"] == "light" and {a["arm"] for a in report["arms"]} == {"light", "strong"}
    for row in report["arms"]:
        want = _expected(traffic[row["arm"]])
        assert row["toxicity"]["n"] == want["n"] and row["perplexity"]["n"] == want["n"]
        # Sums and counts travel exactly: the means are the test's own, to float rounding.
        assert row["toxicity"]["value"] == pytest.approx(want["toxicity"], rel=1e-9)
        assert row["flagged"] == want["flagged"]
        assert row["flagged_rate"]["value"] == pytest.approx(want["flagged"] / want["n"], rel=1e-9)
        assert row["steered_tokens"]["value"] == pytest.approx(want["steered_tokens"], rel=1e-9)
        assert row["perplexity"]["value"] == pytest.approx(want["perplexity"], rel=1e-3)
    (comparison,) = report["comparisons"]
    assert comparison["arm"] == "strong" and 0 <= comparison["toxicity"]["p"] <= 1


def test_report_from_the_gateways_metrics_equals_the_responses(
        gateway_url: str, traffic: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    _check(_report(f"{gateway_url}/metrics", tmp_path), traffic)


def test_report_from_a_real_prometheus_equals_the_responses(
        prometheus: str | None, traffic: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    if prometheus is None:
        pytest.skip("prometheus is not installed (`make test-tools` installs Debian's package)")
    # Wait for a scrape after the last score landed.
    selector = f'sum(steergate_fluency_perplexity_count{{experiment="{EXPERIMENT}"}})'
    _wait(lambda: (r := _query(prometheus, selector)) and float(r[0]["value"][1]) == USERS, 30,
          "Prometheus has not scraped the final counters")
    _check(_report(prometheus, tmp_path), traffic)
    # The deploy/ rules evaluate on real gateway series: a flagged-rate series for each arm.
    # (0 for an arm nothing was flagged in; evaluated at the rules' own interval, so maybe not yet.)
    rule = f'experiment_arm:steergate_flagged:ratio_rate15m{{experiment="{EXPERIMENT}"}}'
    _wait(lambda: {r["metric"]["arm"] for r in _query(prometheus, rule)} == {"light", "strong"}, 30,
          "the flagged-rate recording rule has no series for each arm")
    # Every query of the Grafana dashboard runs; its per-arm toxicity panel shows both arms.
    for expr in dashboard_expressions():
        result = _query(prometheus, expr.replace("$experiment", EXPERIMENT))
        if "steergate_toxicity_score_sum" in expr and "by (arm)" in expr:
            assert {r["metric"]["arm"] for r in result} == {"light", "strong"}, expr
