"""Ray Serve's HAProxy front, started the way a gateway on a shared machine needs it.

Ray Serve (RAY_SERVE_ENABLE_HA_PROXY=1) renders an HAProxy config and runs HAProxy from its
HAProxy-manager actor. Two things in that config and that process do not fit a gateway:
- besides the HTTP port, HAProxy opens a stats page (8404) and a Prometheus exporter (9101) on
  fixed ports bound to every interface, whatever host the gateway was given: a second gateway on
  the machine cannot start, and anyone on the network reads HAProxy's metrics;
- HAProxy is a child of the manager actor only: when that actor is killed rather than stopped
  (the gateway's launcher dies, Ray's raylet goes first), HAProxy lives on, holding the port;
- the answers HAProxy makes itself (a request that is not valid HTTP, a client too slow to send
  its request, no replica to take it) are HTML or plain text, and Ray turns 502/503/504 into a
  bare 500, where clients of an OpenAI API expect `{"error": {...}}` and a status they can act on;
  and no `timeout http-request` is set, so a client that announces a body and never sends it
  holds a connection for an hour (`timeout client`).

Ray lets an operator name the HAProxy binary (RAY_SERVE_HAPROXY_BINARY_PATH). The launcher points
it at a small shim (`write_shim`) that calls `run_haproxy`: it asks the kernel to kill HAProxy when
its parent dies (PR_SET_PDEATHSIG), removes the stats and exporter sections or binds them to the
gateway's host on the configured ports, answers its own errors with OpenAI-shaped bodies and
bounds how long a request may take to arrive (`rewrite_config`, into a copy of Ray's file), and execs
the real binary in the same process (Ray checks HAProxy's pid on its admin socket).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

__all__ = ["ERRORS", "HTTP_REQUEST_TIMEOUT_S", "error_file", "rewrite_config", "run_haproxy", "write_shim"]

# HAProxy config sections as Ray Serve 2.60 names them (ray/serve/_private/haproxy_templates.py).
STATS_SECTION = ("listen", "stats")
EXPORTER_SECTION = ("frontend", "prometheus")
_PR_SET_PDEATHSIG = 1
# How long a client may take to send a whole request (headers and body) before HAProxy answers 408.
HTTP_REQUEST_TIMEOUT_S = 30
# The errors HAProxy answers itself: status -> (reason, OpenAI error type, code, message).
ERRORS: dict[int, tuple[str, str, str, str]] = {
    400: ("Bad Request", "invalid_request_error", "invalid_http_request", "the request is not valid HTTP/1.1"),
    408: ("Request Timeout", "invalid_request_error", "request_timeout",
          f"the request did not arrive within {HTTP_REQUEST_TIMEOUT_S} s"),
    413: ("Payload Too Large", "invalid_request_error", "request_too_large", "the request is too large"),
    500: ("Internal Server Error", "server_error", "internal_error", "internal server error"),
    501: ("Not Implemented", "invalid_request_error", "not_implemented", "the request uses an unsupported HTTP feature"),
    502: ("Bad Gateway", "server_error", "bad_gateway", "the gateway's replica failed while answering; retry"),
    503: ("Service Unavailable", "server_error", "service_unavailable", "no replica can take the request now; retry"),
    504: ("Gateway Timeout", "server_error", "gateway_timeout", "the gateway's replica did not answer in time"),
}
# Statuses a client may retry after a while (Retry-After on the answer).
_RETRYABLE = (502, 503)


def _bind_address(host: str, port: int) -> str:
    return f"ipv6@{host}:{port}" if ":" in host else f"{host}:{port}"


def error_file(status: int) -> str:
    """The raw HTTP answer HAProxy sends for its own error `status` (an `errorfile`)."""
    reason, kind, code, message = ERRORS[status]
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
    retry = "Retry-After: 1\r\n" if status in _RETRYABLE else ""
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nCache-Control: no-cache\r\n"
            f"{retry}Connection: close\r\nContent-Length: {len(body)}\r\n\r\n{body}")


def rewrite_config(text: str, host: str, stats_port: int | None, metrics_port: int | None,
                   error_files: dict[int, Path] | None = None) -> str:
    """Ray's HAProxy config with the stats and exporter sections dropped (port None) or bound to `host`;
    with `error_files` (status -> file), HAProxy's own errors come from them instead of Ray's
    (which turn 502/503/504 into a bare 500), and a request must arrive within HTTP_REQUEST_TIMEOUT_S.

    A section starts at an unindented line and runs until the next one.
    """
    wanted = {STATS_SECTION: stats_port, EXPORTER_SECTION: metrics_port}
    out: list[str] = []
    port: int | None = None
    dropping = False
    section: tuple[str, ...] = ()
    for line in text.splitlines(keepends=True):
        if line.strip() and not line[0].isspace():  # a section header (or a top-level keyword)
            header = tuple(line.split()[:2])
            if section == ("defaults",) and error_files:
                out += _defaults_additions(error_files, text)
            section = header
            dropping = header in wanted and wanted[header] is None
            port = wanted.get(header)
        if dropping:
            continue
        if error_files and section == ("defaults",) and line.split()[:1] == ["errorfile"]:
            continue  # replaced by ours
        if port is not None and line.split()[:1] == ["bind"]:
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}bind {_bind_address(host, port)}\n"
        out.append(line)
    if section == ("defaults",) and error_files:
        out += _defaults_additions(error_files, text)
    return "".join(out)


def _defaults_additions(error_files: dict[int, Path], text: str) -> list[str]:
    lines = [f"    errorfile {status} {path}\n" for status, path in sorted(error_files.items())]
    if "timeout http-request" not in text:
        lines.append(f"    timeout http-request {HTTP_REQUEST_TIMEOUT_S}s\n")
    return lines


def write_shim(path: Path, real_binary: str, host: str, stats_port: int | None, metrics_port: int | None) -> Path:
    """Write the executable Ray runs as HAProxy (see module docstring); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from serving.haproxy_front import run_haproxy\n"
        f"run_haproxy({real_binary!r}, {host!r}, {stats_port!r}, {metrics_port!r}, sys.argv[1:])\n"
    )
    path.chmod(0o755)
    return path


def run_haproxy(real_binary: str, host: str, stats_port: int | None, metrics_port: int | None,
                argv: list[str]) -> None:
    """Become HAProxy (never returns): die with the parent, rewritten config, same pid."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the kernel was told
        sys.exit(1)
    args = list(argv)
    if "-f" in args:
        i = args.index("-f") + 1
        original = Path(args[i])
        rewritten = original.with_name(original.name + ".steergate")
        errors = {}
        for status in ERRORS:
            errors[status] = original.with_name(f"steergate-{status}.http")
            errors[status].write_text(error_file(status))
        rewritten.write_text(rewrite_config(original.read_text(), host, stats_port, metrics_port, errors))
        args[i] = str(rewritten)
    os.execv(real_binary, [real_binary, *args])
