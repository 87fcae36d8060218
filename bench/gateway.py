"""Start a real gateway for a benchmark run: `steergate serve` in a process of its own, on a free
loopback port, stopped (SIGTERM, then the launcher's own clean stop) when the run ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = ["free_port", "start_local_gateway"]

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_local_gateway(*, policies: Path | None = None, config: Path | None = None,
                        log: Path | None = None) -> tuple[str, Callable[[], None]]:
    """(base URL, stop) of a gateway on 127.0.0.1 that answers /health with 200."""
    port = free_port()
    args = [sys.executable, "-m", "serving.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--policies", str(policies)] if policies else []
    args += ["--config", str(config)] if config else []
    log = log or Path(f"/tmp/steergate-bench-{port}.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    deadline = time.monotonic() + START_TIMEOUT_S
    print(f"starting a gateway on {url} (log: {log})", file=sys.stderr)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
                if r.status == 200:
                    return url, stop
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    stop()
    raise TimeoutError(f"gateway not healthy after {START_TIMEOUT_S:.0f} s; see {log}")
