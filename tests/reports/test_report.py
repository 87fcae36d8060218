"""`steergate report` on a real GatewayMetrics registry served over HTTP: the numbers equal those
computed from the observations themselves, the control comes from the exported arm shares."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from middleware.metrics import Cohort, GatewayMetrics
from reports.report import build_report, render
from reports.sources import SourceError, read_totals
from serving.cli import main

ARMS = {"light": (0.30, 3), "strong": (0.15, 12)}  # mean toxicity, steered tokens per response


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, dict[str, list[dict[str, float]]]]]:
    """A registry with 40 responses per arm (and 10 under another experiment), served on /metrics."""
    registry = CollectorRegistry()
    cohorts = [Cohort("ab", "exp", arm) for arm in ARMS]
    metrics = GatewayMetrics(registry, ["m"], cohorts)
    metrics.set_arms([(c, c.arm == "light", 0.5) for c in cohorts])
    rng = random.Random(0)
    seen: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for arm, (mean, steered) in ARMS.items():
        for _ in range(40):
            tox = min(1.0, max(0.0, rng.gauss(mean, 0.2)))
            obs = {"toxicity": tox, "steered": rng.randint(0, 2 * steered), "ppl": rng.uniform(3, 9)}
            seen[arm].append(obs)
            completion = {"toxicity": tox, "flagged": tox >= 0.5, "steered_tokens": obs["steered"]}
            prompt = {"toxicity": 0.1, "flagged": False, "steered_tokens": 0}
            safety = {"prompt": prompt, "completion": completion}
            metrics.observe_safety("m", Cohort("ab", "exp", arm), safety, {"completion": "annotate"})
            metrics.observe_fluency("m", Cohort("ab", "exp", arm), obs["ppl"])
            metrics.observe("m", "chat", 200, 0.1, Cohort("ab", "exp", arm))
    for _ in range(10):
        metrics.observe_safety("m", Cohort("ab", "other", "x"), {"completion": {"toxicity": 0.9}}, {})
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{port}/metrics", seen
    finally:
        server.shutdown()
        thread.join()


def test_report_numbers_equal_the_observations(served: tuple[str, dict[str, list[dict[str, float]]]],
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, seen = served
    plot = tmp_path / "report.png"
    assert main(["report", "--source", url, "--experiment", "exp", "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["control"] == "light" and [a["arm"] for a in out["arms"]] == ["light", "strong"]
    for row in out["arms"]:
        obs = seen[row["arm"]]
        n = len(obs)
        assert row["toxicity"]["n"] == n and row["requests"] == n
        assert row["toxicity"]["value"] == pytest.approx(sum(o["toxicity"] for o in obs) / n, rel=1e-12)
        assert row["flagged"] == sum(o["toxicity"] >= 0.5 for o in obs)
        assert row["perplexity"]["value"] == pytest.approx(sum(o["ppl"] for o in obs) / n, rel=1e-12)
        assert row["steered_tokens"]["value"] == pytest.approx(sum(o["steered"] for o in obs) / n, rel=1e-12)
        assert row["toxicity"]["low"] < row["toxicity"]["value"] < row["toxicity"]["high"]
    (comparison,) = out["comparisons"]
    assert (comparison["arm"], comparison["control"]) == ("strong", "light")
    assert comparison["toxicity"]["value"] < 0 and comparison["toxicity"]["p"] < 0.05
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_table_and_errors(served: tuple[str, dict[str, list[dict[str, float]]]]) -> None:
    url, _ = served
    with pytest.raises(SourceError, match="experiments in .*: exp, other"):
        read_totals(url, None)
    experiment, arms = read_totals(url, "exp")
    text = render(build_report(experiment, arms, source=url))
    assert "light (control)" in text and "Welch" in text and "Fisher" in text
    with pytest.raises(ValueError, match="not an arm"):
        build_report(experiment, arms, source=url, control="medium")
    with pytest.raises(SourceError, match="window needs Prometheus"):
        read_totals(url, "exp", window="1h")
