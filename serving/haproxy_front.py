"""Ray Serve's HAProxy front, started the way a gateway on a shared machine needs it.

Ray Serve (RAY_SERVE_ENABLE_HA_PROXY=1) renders an HAProxy config and runs HAProxy from its
HAProxy-manager actor. Two things in that config and that process do not fit a gateway:
- besides the HTTP port, HAProxy opens a stats page (8404) and a Prometheus exporter (9101) on
  fixed ports bound to every interface, whatever host the gateway was given: a second gateway on
  the machine cannot start, and anyone on the network reads HAProxy's metrics;
- HAProxy is a child of the manager actor only: when that actor is killed rather than stopped
  (the gateway's launcher dies, Ray's raylet goes first), HAProxy lives on, holding the port.

Ray lets an operator name the HAProxy binary (RAY_SERVE_HAPROXY_BINARY_PATH). The launcher points
it at a small shim (`write_shim`) that calls `run_haproxy`: it asks the kernel to kill HAProxy when
its parent dies (PR_SET_PDEATHSIG), removes the stats and exporter sections or binds them to the
gateway's host on the configured ports (`rewrite_config`, into a copy of Ray's file), and execs
the real binary in the same process (Ray checks HAProxy's pid on its admin socket).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

__all__ = ["rewrite_config", "run_haproxy", "write_shim"]

# HAProxy config sections as Ray Serve 2.60 names them (ray/serve/_private/haproxy_templates.py).
STATS_SECTION = ("listen", "stats")
EXPORTER_SECTION = ("frontend", "prometheus")
_PR_SET_PDEATHSIG = 1


def _bind_address(host: str, port: int) -> str:
    return f"ipv6@{host}:{port}" if ":" in host else f"{host}:{port}"


def rewrite_config(text: str, host: str, stats_port: int | None, metrics_port: int | None) -> str:
    """Ray's HAProxy config with the stats and exporter sections dropped (port None) or bound to `host`.

    A section starts at an unindented line and runs until the next one.
    """
    wanted = {STATS_SECTION: stats_port, EXPORTER_SECTION: metrics_port}
    out: list[str] = []
    port: int | None = None
    dropping = False
    for line in text.splitlines(keepends=True):
        if line.strip() and not line[0].isspace():  # a section header (or a top-level keyword)
            header = tuple(line.split()[:2])
            dropping = header in wanted and wanted[header] is None
            port = wanted.get(header)
        if dropping:
            continue
        if port is not None and line.split()[:1] == ["bind"]:
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}bind {_bind_address(host, port)}\n"
        out.append(line)
    return "".join(out)


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
        rewritten.write_text(rewrite_config(original.read_text(), host, stats_port, metrics_port))
        args[i] = str(rewritten)
    os.execv(real_binary, [real_binary, *args])
