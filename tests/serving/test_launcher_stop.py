"""A stop whose Serve shutdown overruns: the launcher kills Serve's controller at its deadline and waits
for serve.shutdown() to return before Ray is stopped. Stopping Ray while the Serve thread was still
inside Ray's core worker once crashed the process (exit 139) at the end of a 28-minute run.

Real Ray and Serve, in a child process (the session's gateway owns this process' Ray): one replica
holds a request for 300 s and may take 120 s to drain, so serve.shutdown() alone would wait out its
own 30 s timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

DEADLINE_S = 3.0


def test_an_overrunning_serve_shutdown_ends_before_ray_stops() -> None:
    # Without the Ray settings a gateway of this session put in our environment (throughput mode
    # changes how a handle is called from a plain script).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=300, env=env)
    report = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stderr[-3000:]
    elapsed, thread_alive = report[-2].split()
    assert thread_alive == "False", report  # serve.shutdown() had returned when Ray was stopped
    # Cut short at the deadline by the controller's kill, not waited out (Serve's own bound is 30 s).
    assert DEADLINE_S <= float(elapsed) < 20.0, report
    assert report[-1] == "ray stopped"
    assert "stopping its controller" in done.stderr


def _overrun() -> None:
    import ray
    from ray import serve

    from serving import launcher

    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(proxy_location="Disabled")  # no HTTP proxy: nothing here needs a port (8000 may be taken)

    @serve.deployment(graceful_shutdown_timeout_s=120, graceful_shutdown_wait_loop_s=1)
    class Slow:
        async def __call__(self, request: object) -> str:
            import asyncio

            await asyncio.sleep(300)
            return "late"

    handle = serve.run(Slow.bind(), name="slow", route_prefix=None)
    handle.remote(None)  # in flight when the stop begins
    time.sleep(2)
    started = time.monotonic()
    launcher._shutdown_serve(timeout_s=DEADLINE_S)
    alive = any(t.name == "serve-shutdown" and t.is_alive() for t in threading.enumerate())
    print(f"{time.monotonic() - started:.1f} {alive}", flush=True)
    ray.shutdown()
    print("ray stopped", flush=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    _overrun()
