"""The environment the launcher gives Ray: with HAProxy in front, every gateway's fallback Serve proxy
gets ports of its own (a fixed one let a starting gateway's requests reach another gateway); Serve's
control loop runs every second, not ten times a second, unless the environment says otherwise."""

from __future__ import annotations

import socket

import pytest

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
