"""The environment the launcher gives Ray: with HAProxy in front, every gateway's fallback Serve proxy
gets ports of its own (a fixed one let a starting gateway's requests reach another gateway); Serve's
control loop runs every second, not ten times a second, and Ray's workers (the engine among them) run
at the niceness of everything else, not Ray's 15, unless the environment says otherwise."""

from __future__ import annotations

import os
import socket

import pytest

from serving import processes
from serving.config import GatewayConfig
from serving.launcher import _ray_env


def test_each_gateway_gets_free_fallback_proxy_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP", "GRPC"):
        monkeypatch.delenv(f"RAY_SERVE_FALLBACK_PROXY_{name}_PORT", raising=False)
    first, second = _ray_env(GatewayConfig()), _ray_env(GatewayConfig(port=8001))
    ports = [int(env[f"RAY_SERVE_FALLBACK_PROXY_{name}_PORT"]) for env in (first, second) for name in ("HTTP", "GRPC")]
    assert 8500 not in ports and 9500 not in ports
    for port in ports:  # free when chosen
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_environment_may_name_the_fallback_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "18500")
    assert _ray_env(GatewayConfig())["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == "18500"


def test_serves_control_loop_runs_once_a_second_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", raising=False)
    assert _ray_env(GatewayConfig())["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "1.0"
    monkeypatch.setenv("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.1")
    assert _ray_env(GatewayConfig())["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.1"


def test_ray_workers_run_at_niceness_zero_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    assert _ray_env(GatewayConfig())["RAY_worker_niceness"] == "0"
    monkeypatch.setenv("RAY_worker_niceness", "15")
    assert _ray_env(GatewayConfig())["RAY_worker_niceness"] == "15"


def test_the_engine_and_replicas_run_at_the_launchers_niceness(gateway_url: str) -> None:
    """The real session gateway: vLLM's engine processes and Serve's replicas, all descendants of this
    process (which started the gateway), are not deprioritised below it."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    workers = [p for p in processes.descendants([os.getpid()])
               if p.name.startswith(("VLLM::", "ray::ServeRepli"))]
    assert {p.name for p in workers} >= {"VLLM::Worker", "ray::ServeRepli"}, [p.name for p in workers]
    niceness = {str(p): os.getpriority(os.PRIO_PROCESS, p.pid) for p in workers}
    assert niceness == {str(p): mine for p in workers}
