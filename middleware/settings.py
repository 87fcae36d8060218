"""Every environment variable steergate reads, in one place (all `STEERGATE_`-prefixed).

At the bottom of the package stack (middleware/), so serving, discovery, evals and bench all import it
from below.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "runtime_dir", "side_channel_drop_rate", "trace_timings_file", "HEALTH_TIMEOUT_S"]

# How long `steergate serve` waits for the model servers to report healthy before giving up.
HEALTH_TIMEOUT_S = float(os.environ.get("STEERGATE_HEALTH_TIMEOUT_S", "900"))


def cache_dir() -> Path:
    """Where converted models live (STEERGATE_CACHE_DIR, default ~/.cache/steergate)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "steergate"
    return Path(os.environ.get("STEERGATE_CACHE_DIR", default)).expanduser()


def runtime_dir(port: int) -> Path:
    """Files of the gateway serving on `port` while it runs (STEERGATE_RUNTIME_DIR/<port>, default
    <tmp>/steergate-<uid>/<port>): the HAProxy shim and the registry of the gateway's processes
    (serving/processes.py). Per port, so gateways side by side do not share them."""
    default = Path(tempfile.gettempdir()) / f"steergate-{os.getuid()}"
    return Path(os.environ.get("STEERGATE_RUNTIME_DIR", default)) / str(port)


def side_channel_drop_rate() -> float:
    """Fault injection for tests only (STEERGATE_FAULT_SIDE_CHANNEL_DROP, default 0): the fraction of
    per-step side-channel messages the engine process drops instead of sending, to prove that a lost
    message never puts another request's scores on a response (tests/serving/test_faults.py)."""
    return float(os.environ.get("STEERGATE_FAULT_SIDE_CHANNEL_DROP", "0"))


def trace_timings_file() -> Path | None:
    """Opt-in TTFT breakdown (STEERGATE_TRACE_TIMINGS=FILE, default off): the ingress appends one JSON
    line per streamed request with wall-clock timestamps of its stages (serving/timing_trace.py), which
    `bench/peer.py --trace` reads. Off, the hot path pays one `is None` check per request and chunk."""
    value = os.environ.get("STEERGATE_TRACE_TIMINGS")
    return Path(value) if value else None
