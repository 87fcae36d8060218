"""Start the servers a benchmark run measures, each in a process group of its own on a free loopback
port, and stop them when the run ends: a steergate gateway (`steergate serve`; SIGTERM, then the
launcher's own clean stop) and, as the peer a user would run instead, vLLM's own OpenAI server."""

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

from middleware.settings import HEALTH_TIMEOUT_S
from serving.config import ModelConfig
from serving.launcher import child_env

__all__ = ["free_port", "start_local_gateway", "start_vllm_server", "vllm_server_args"]

ROOT = Path(__file__).resolve().parents[1]
# How long a server may take to answer /health: the gateway's own start budget (STEERGATE_HEALTH_TIMEOUT_S).
START_TIMEOUT_S = HEALTH_TIMEOUT_S
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, what: str, log: Path,
                  stop: Callable[[], None]) -> None:
    """Return once `url`/health answers 200; stop the process and raise if it exits or never does."""
    deadline = time.monotonic() + START_TIMEOUT_S
    print(f"starting {what} on {url} (log: {log})", file=sys.stderr, flush=True)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop()
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    stop()
    raise TimeoutError(f"{what} not healthy after {START_TIMEOUT_S:.0f} s; see {log}")


def start_local_gateway(*, policies: Path | None = None, config: Path | None = None, log: Path | None = None,
                        env: dict[str, str] | None = None) -> tuple[str, Callable[[], None]]:
    """(base URL, stop) of a gateway on 127.0.0.1 that answers /health with 200; `env` adds to its environment."""
    port = free_port()
    args = [sys.executable, "-m", "serving.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--policies", str(policies)] if policies else []
    args += ["--config", str(config)] if config else []
    log = log or Path(f"/tmp/steergate-bench-{port}.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=child_env(**(env or {}), PYTHONPATH=str(ROOT)))
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    _wait_healthy(proc, url, "a gateway", log, stop)
    return url, stop


def vllm_server_args(model: ModelConfig, model_dir: str, port: int) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server` with the engine settings the gateway gives vLLM
    (serving/engine/vllm_engine.py), under the gateway's model name. What stays at vLLM's defaults is
    what a user of vLLM's server gets: prefix caching on, access log on."""
    e = model.engine
    if e.extra_engine_args:
        raise ValueError("engine.extra_engine_args has no vLLM server flags here; compare without it")
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
            "--port", str(port), "--model", model_dir, "--served-model-name", model.name, "--dtype", e.dtype,
            "--max-model-len", str(e.max_model_len), "--max-num-seqs", str(e.max_num_seqs),
            "--seed", str(e.seed), "--stream-interval", str(e.stream_interval),
            "--scheduling-policy", e.scheduling_policy]
    return args + (["--enforce-eager"] if e.enforce_eager else [])


def start_vllm_server(model: ModelConfig, *, log: Path | None = None) -> tuple[str, Callable[[], None]]:
    """(base URL, stop) of vLLM's own OpenAI server for `model` (the embedded SmolLM2 unless the model
    names a path), in the vLLM CPU environment the gateway's engine gets; stop ends its process group
    (the API server and its engine-core process)."""
    from middleware.embedded import embedded_model_dir
    from serving.engine.vllm_engine import cpu_env

    port = free_port()
    log = log or Path(f"/tmp/steergate-bench-vllm-{port}.log")
    args = vllm_server_args(model, model.path or str(embedded_model_dir()), port)
    with log.open("wb") as out:
        out.write((" ".join(args) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=child_env(**cpu_env(model)))
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:  # the engine-core process may outlive its parent by a moment
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    _wait_healthy(proc, url, "vLLM's OpenAI server", log, stop)
    return url, stop
