"""Finding a process tree by ancestry and stopping it; pids are never confused across reuse."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from serving.processes import Proc, descendants, terminate

# A child that starts a grandchild which ignores SIGTERM, then both wait.
TREE = """
import signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
time.sleep(600)
"""


def test_descendants_and_terminate_reach_a_grandchild_that_ignores_sigterm() -> None:
    child = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        deadline = time.monotonic() + 30
        while not (grandchildren := descendants([child.pid])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(grandchildren) == 1
        assert {child.pid, grandchildren[0].pid} <= {p.pid for p in descendants([os.getpid()])}
        stopped = terminate([*grandchildren, Proc.read(child.pid)], grace_s=0.5)  # the grandchild needs SIGKILL
        assert len(stopped) == 2
        child.wait(5)
        assert not any(p.alive() for p in stopped)
    finally:
        child.kill()


def test_a_reused_pid_is_not_the_same_process() -> None:
    me = Proc.read(os.getpid())
    assert me is not None and me.alive()
    assert not Proc(me.pid, me.start + 1).alive()
    assert Proc.read(2**22 + 12345) is None
