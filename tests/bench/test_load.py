"""bench/load.py on tiny inputs against the session gateway: phases run and end by themselves, every
request is accounted for, and the gateway's queue gauge is sampled and back at 0 afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from bench.load import _metric, main


def _gauge(url: str, name: str) -> float | None:
    return _metric(httpx.get(f"{url}/metrics", timeout=30).text, name)


def test_a_tiny_load_run_reports_every_phase(gateway_url: str, tmp_path: Path) -> None:
    out = tmp_path / "load"
    assert main(["--url", gateway_url, "--clients", "3", "--steady-seconds", "4", "--overload-clients", "6",
                 "--overload-seconds", "3", "--recovery-clients", "1", "--recovery-seconds", "2",
                 "--tokens", "4", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    phases = {p["phase"]: p for p in report["phases"]}
    assert list(phases) == ["steady", "overload", "recovery"]
    for p in phases.values():
        # The session gateway admits 128 at once: a few clients are served, none refused, none failed.
        assert p["requests"] >= 1 and p["ok"] == p["requests"] and p["errors"] == 0, p
        assert p["ttft_p50_s"] > 0 and p["tokens_per_s"] > 0
    assert len(report["requests"]) == sum(p["requests"] for p in phases.values())
    assert all(r["tokens"] == 4 for r in report["requests"])
    assert report["samples"] and all(s["queued"] is not None and s["queued"] >= 0 for s in report["samples"])
    assert out.with_suffix(".png").stat().st_size > 0
    assert _gauge(gateway_url, "steergate_requests_queued") == 0
    assert _gauge(gateway_url, "steergate_requests_in_flight") == 0
