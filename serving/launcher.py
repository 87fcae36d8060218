"""Start and stop the whole gateway: Ray, Serve's HTTP proxy, the app; wait until it can serve.

Shared by `steergate serve` and the test suite, so tests start exactly what users start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from serving.config import GatewayConfig
from middleware.embedded import embedded_model_dir

__all__ = ["start_gateway", "stop_gateway", "wait_healthy", "APP_NAME"]

logger = logging.getLogger(__name__)

APP_NAME = "steergate"


def start_gateway(config: GatewayConfig, *, runtime_env: dict[str, Any] | None = None,
                  health_timeout_s: float = 900.0) -> str:
    """Start Ray + Serve with `config`; return the base URL once /health answers 200."""
    import ray
    from ray import serve

    from serving.app import build_app

    # Convert the embedded model here, in the foreground, rather than inside a replica where it
    # would count against Serve's start-up health checks.
    if any(m.path is None for m in config.models):
        embedded_model_dir()
    # Ray Serve's throughput mode (user code on the replica's main loop, gRPC between proxy and
    # replicas, buffered access logs) and HAProxy in front instead of the Python HTTP proxy: each
    # streamed chunk costs less CPU that the engine would otherwise lose (bench/throughput.py:
    # 0.83x -> 0.89x of raw vLLM on 2 cores). Must be set before Ray starts its processes.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    # Serve kills a proxy that is not ready within 5 s three times in a row; on a 2-core box that
    # is also compiling the model (or running anything else) that happens, and the gateway never
    # comes up. Seen in a test run next to a CPU-bound job.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    if not ray.is_initialized():
        # ray.init replaces SIGTERM's handler with one that aborts the process, which would skip our
        # clean shutdown (and orphan Ray's agents): keep whatever handlers the caller installed.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        ray.init(include_dashboard=False, runtime_env=runtime_env or {}, logging_level=logging.WARNING)
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{config.host}:{config.port}"
    wait_healthy(url, health_timeout_s)
    return url


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}: {e.read()[:200]!r}"
        except (OSError, json.JSONDecodeError) as e:
            last = str(e)
        time.sleep(1.0)
    raise TimeoutError(f"gateway at {url} not healthy after {timeout_s:.0f} s ({last})")


def stop_gateway() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
