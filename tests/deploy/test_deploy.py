"""deploy/: the Prometheus config and rules pass promtool (the rules' unit tests included), and the
Grafana dashboard queries only metrics the gateway exports. (The dashboard's queries also run against a
real Prometheus in tests/reports/test_report_gateway.py.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from middleware.metrics import Cohort, GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "steergate.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (`make test-tools` installs Debian's prometheus package)")
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_prometheus_config_and_rules_pass_promtool() -> None:
    out = promtool("check", "config", "deploy/prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "prometheus-rules.yml" in out.stdout + out.stderr  # the rules file was found and checked
    out = promtool("check", "rules", "deploy/prometheus-rules.yml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_alert_rules_fire_on_their_cases() -> None:
    """Flagged rate of an arm above its bound, an arm's perplexity above the control's by the ratio,
    a failing scrape: each fires, only after its `for`, and only for the arm concerned."""
    out = promtool("test", "rules", "tests/deploy/rules_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_dashboard_queries_only_exported_metrics_and_has_per_arm_panels() -> None:
    registry = CollectorRegistry()
    GatewayMetrics(registry, ["m"], [Cohort("p", "e", "a")])
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {f.name + x for f in registry.collect() for x in suffixes[f.type]}
    used = {m for expr in dashboard_expressions() for m in re.findall(r"steergate_[a-z_]+", expr)}
    assert used and used <= exported, used - exported
    per_arm = [e for e in dashboard_expressions() if "by (arm)" in e or "by (le, arm)" in e]
    for metric in ("steergate_toxicity_score", "steergate_fluency_perplexity", "steergate_flagged_total",
                   "steergate_steered_tokens_total", "steergate_time_to_first_token_seconds",
                   "steergate_generated_tokens_total"):
        assert any(metric in e for e in per_arm), metric
