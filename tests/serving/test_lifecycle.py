"""Every way a gateway can end leaves nothing running, and a new one starts on the same port at once.

Real `steergate serve` processes (Ray, Serve's HAProxy front, vLLM, SmolLM2), each in a session of
its own like a service under a supervisor, stopped the ways a supervisor or an operator stops them:
SIGTERM or SIGINT to the launcher or to its whole process group, SIGKILL of the launcher, and
SIGKILL of the launcher together with its watchdog (then the next start finds and stops what was
left). The tests run in order: each starts the gateway the previous one checks, on the same port.
A small engine config (eager, small KV cache, no middleware) keeps each start short; what is
tested is the launcher's, which does not depend on it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from middleware.settings import runtime_dir
from serving.processes import REGISTRY_FILE
from tests.serving.subprocess_gateway import Gateway, free_port

STOP_BUDGET_S = 30.0  # Kubernetes' default grace period


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lifecycle")


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def running(port: int, workdir: Path) -> Iterator[dict[str, Gateway]]:
    """The gateway each test stops, and the next one started on the same port ("current")."""
    state: dict[str, Gateway] = {}
    yield state
    for gw in state.values():
        if gw.proc.poll() is None:
            os.killpg(gw.proc.pid, signal.SIGTERM)
            gw.proc.wait(60)


def _stop_and_restart(running: dict[str, Gateway], port: int, workdir: Path, how: str) -> Gateway:
    """Stop the current gateway `how`, check nothing is left, start the next on the same port."""
    gw = running["current"]
    pid = gw.proc.pid
    began = time.monotonic()
    match how:
        case "SIGTERM to the launcher":
            os.kill(pid, signal.SIGTERM)
        case "SIGINT to the launcher":
            os.kill(pid, signal.SIGINT)
        case "SIGTERM to the process group":
            os.killpg(pid, signal.SIGTERM)
        case "SIGINT to the process group":
            os.killpg(pid, signal.SIGINT)
        case "SIGKILL of the launcher":
            os.kill(pid, signal.SIGKILL)
    if how != "SIGKILL of the launcher":
        gw.proc.wait(STOP_BUDGET_S)
        assert gw.proc.returncode == 0, gw.tail()
        gw.assert_gone(within_s=max(1.0, STOP_BUDGET_S - (time.monotonic() - began)))
        # Right after the stop, with no wait: the next start on the same port.
    nxt = Gateway.start(port, workdir)
    running["current"] = nxt
    nxt.wait_healthy()
    assert nxt.answers()
    if how == "SIGKILL of the launcher":  # the watchdog stopped the rest; the new gateway has the port
        gw.proc.wait(5)
        gw.assert_gone(within_s=STOP_BUDGET_S, check_port=False)
    return nxt


def test_two_gateways_run_side_by_side(running: dict[str, Gateway], port: int, workdir: Path) -> None:
    """Different ports, one machine: neither takes a port of the other's (HAProxy's stats and exporter
    ports are off by default; they used to be fixed at 8404 and 9101 on every interface)."""
    first, second = Gateway.start(port, workdir), Gateway.start(free_port(), workdir)
    running["current"], running["second"] = first, second
    first.wait_healthy()
    second.wait_healthy()
    assert first.answers() and second.answers()
    # Ray's own ports (GCS, raylet, workers) are picked free per cluster; only HAProxy's used to be fixed.
    # Both serve on 127.0.0.1: what one listens on there (or on every interface) the other cannot use.
    for gw, other in ((first, second), (second, first)):
        taken = gw.listening_ports(reachable_at="127.0.0.1")
        assert other.port not in taken and not {8404, 9101} & taken


def test_sigint_to_the_group_of_one_leaves_the_other_serving(running: dict[str, Gateway]) -> None:
    second = running.pop("second")
    os.killpg(second.proc.pid, signal.SIGINT)
    second.proc.wait(STOP_BUDGET_S)
    second.assert_gone(within_s=STOP_BUDGET_S)
    assert running["current"].answers()


@pytest.mark.parametrize("how", ["SIGTERM to the process group", "SIGTERM to the launcher",
                                 "SIGINT to the launcher", "SIGKILL of the launcher"])
def test_stop_leaves_nothing_and_the_port_restarts(running: dict[str, Gateway], port: int, workdir: Path,
                                                   how: str) -> None:
    _stop_and_restart(running, port, workdir, how)


def test_a_start_recovers_what_a_killed_gateway_and_watchdog_left(running: dict[str, Gateway], port: int,
                                                                  workdir: Path) -> None:
    """Launcher and watchdog both SIGKILLed: nothing stops the rest, so the next start on the port
    must find it (from the registry the watchdog kept), say so, stop it and come up."""
    gw = running["current"]
    watchdog = next(p for p in gw.tree if "serving.processes" in Path(f"/proc/{p.pid}/cmdline").read_text())
    os.kill(watchdog.pid, signal.SIGKILL)
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait(5)
    assert (runtime_dir(port) / REGISTRY_FILE).exists()
    nxt = Gateway.start(port, workdir)
    running["current"] = nxt
    nxt.wait_healthy()
    assert "did not stop cleanly" in nxt.log.read_text()
    gw.tree = [p for p in gw.tree if p.pid != watchdog.pid]
    gw.assert_gone(within_s=1, check_port=False)
    # The last one stops cleanly too.
    os.kill(nxt.proc.pid, signal.SIGTERM)
    nxt.proc.wait(STOP_BUDGET_S)
    nxt.assert_gone(within_s=STOP_BUDGET_S)


def test_a_busy_port_is_a_clear_error(workdir: Path) -> None:
    # A port of its own: the shared one may still have connections in TIME_WAIT from the last stop.
    port = free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        gw = Gateway.start(port, workdir)
        assert gw.proc.wait(120) == 1
    assert f"port {port} on 127.0.0.1 is in use by pid {os.getpid()}" in gw.log.read_text()
