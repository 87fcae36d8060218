"""HAProxy's stats page and exporter: off, or bound to the gateway's host; the rest of Ray's config untouched."""

from __future__ import annotations

from serving.haproxy_front import rewrite_config

# The shape of the sections Ray Serve 2.60 renders (ray/serve/_private/haproxy_templates.py).
RAY_CONFIG = """\
global
    stats socket /tmp/haproxy-serve/admin.sock mode 666 level admin
defaults
    mode http
frontend prometheus
    bind :9101
    mode http
    http-request use-service prometheus-exporter if { path /metrics }
    no log
frontend http_frontend
    bind 127.0.0.1:8000
    default_backend steergate
backend steergate
    server s1 127.0.0.1:30001 check
listen stats
  bind *:8404
  stats enable
  stats uri /stats
"""


def test_off_by_default_drops_both_sections_only() -> None:
    out = rewrite_config(RAY_CONFIG, "127.0.0.1", None, None)
    assert "9101" not in out and "8404" not in out and "prometheus-exporter" not in out
    assert "bind 127.0.0.1:8000" in out and "server s1 127.0.0.1:30001 check" in out and "stats socket" in out


def test_configured_ports_bind_to_the_gateway_host() -> None:
    out = rewrite_config(RAY_CONFIG, "127.0.0.1", 18404, 19101)
    assert "    bind 127.0.0.1:19101\n    mode http\n    http-request use-service" in out
    assert "  bind 127.0.0.1:18404\n  stats enable" in out
    assert "bind 127.0.0.1:8000" in out  # the gateway's own frontend is Ray's business


def test_ipv6_host() -> None:
    assert "bind ipv6@::1:18404" in rewrite_config(RAY_CONFIG, "::1", 18404, None)
