"""A real `steergate serve` in a process (and session) of its own, for tests that stop, kill or
overload a gateway: tests/serving/test_lifecycle.py and test_faults.py. The session gateway of
tests/conftest.py runs in the pytest process; these never touch it.

The default config is small (eager engine, small KV cache, no middleware) so a start is short.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from serving.launcher import child_env
from serving.processes import Proc, descendants

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 600.0
CONFIG = """\
models:
  - name: smollm2-135m-instruct
    engine: {enforce_eager: true, cpu_kv_cache_gib: 1, max_model_len: 512, max_num_seqs: 4}
    middleware: []
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Gateway:
    """One `steergate serve` run in a session of its own."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    tree: list[Proc]  # its processes once healthy (launcher's descendants)

    @classmethod
    def start(cls, port: int, workdir: Path, config_text: str = CONFIG, policies: Path | None = None,
              env: dict[str, str] | None = None) -> Gateway:
        config = workdir / f"gateway-{port}.yaml"
        config.write_text(config_text)
        log = workdir / f"serve-{port}-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port), "--config", str(config)]
        args += ["--policies", str(policies)] if policies else []
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=child_env(PYTHONPATH=str(ROOT), **(env or {})),
            )
        return cls(port, proc, log, [])

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited ({self.proc.returncode}):\n{self.tail()}"
            # Its own "ready" line first: right after a SIGKILL, what the killed one left may still answer.
            if "steergate: ready on" in self.log.read_text(errors="replace"):
                try:
                    if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(1)
        else:
            pytest.fail(f"gateway on {self.port} not healthy after {START_TIMEOUT_S} s:\n{self.tail()}")
        # Everything it started, to check after the stop (the watchdog, in its own session, included).
        self.tree = descendants([self.proc.pid])
        assert any(p.name == "haproxy" for p in self.tree), [str(p) for p in self.tree]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        r = httpx.post(f"{self.url}/v1/completions", timeout=120,
                       json={"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})
        return r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def assert_gone(self, within_s: float, check_port: bool = True) -> float:
        """Every process it had is gone (and its port free) within `within_s`; returns how long it took."""
        started = time.monotonic()
        while time.monotonic() - started < within_s:
            left = [str(p) for p in self.tree if p.alive()] + (["launcher"] if self.proc.poll() is None else [])
            if not left and (not check_port or port_free(self.port)):
                return time.monotonic() - started
            time.sleep(0.25)
        pytest.fail(f"after {within_s} s still running: {left}; port {self.port} free: {port_free(self.port)}\n"
                    f"{self.tail()}")

    def listening_ports(self, reachable_at: str = "127.0.0.1") -> set[int]:
        """TCP ports its processes listen on where a client of `reachable_at` would reach them: on that
        address or a wildcard. Ray binds its own servers to the node's address too, where a port the
        kernel hands out may equal another gateway's loopback port without taking it from its clients."""
        ports = set()
        for p in self.tree:
            try:
                ports |= {c.laddr.port for c in psutil.Process(p.pid).net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN and c.laddr.ip in (reachable_at, "0.0.0.0", "::")}
            except psutil.Error:
                continue
        return ports
