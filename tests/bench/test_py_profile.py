"""bench/py_profile.py with the real py-spy on a real busy process (what bench.peer --profile records)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.py_profile import Profiler, format_report, load_profiles, python_processes

BUSY = "def spin_here():\n    while True:\n        sum(range(1000))\nspin_here()\n"


def test_profiles_a_busy_process(tmp_path: Path) -> None:
    script = tmp_path / "busy_worker.py"
    script.write_text(BUSY)
    child = subprocess.Popen([sys.executable, str(script)])
    try:
        time.sleep(0.5)
        assert python_processes()[child.pid] == "busy_worker.py"
        profiler = Profiler(tmp_path / "phase", rate=50, pids={child.pid})
        profiler.start()
        time.sleep(3)
        profiler.stop()
    finally:
        child.kill()
        child.wait()
    profiles, seconds, rate = load_profiles(tmp_path / "phase")
    assert [p.label for p in profiles] == ["busy_worker.py"] and rate == 50 and seconds >= 3
    (busy,) = profiles
    # it spins the whole time, on a machine other work shares: most of a core, and never more than one
    assert 0.3 < busy.share(seconds) <= 1.05
    assert busy.samples > 0.5 * seconds * rate
    # every sample is in spin_here, called from the module
    assert busy.own == {"spin_here (busy_worker.py)": busy.samples}
    assert busy.within["<module> (busy_worker.py)"] == busy.samples
    report = format_report(tmp_path / "phase")
    assert "`busy_worker.py`" in report and "spin_here" in report
    assert "py-spy (the profiler)" in (tmp_path / "phase" / "others").read_text()  # its own cost is counted


def test_labels_name_ray_and_vllm_processes() -> None:
    from bench.py_profile import _label

    assert _label(["ray::ServeReplica:default:Ingress"]) == "ray::ServeReplica:default:Ingress"
    assert _label(["/usr/bin/python3", "-u", "/x/ray/dashboard/agent.py", "--a"]) == "agent.py"
    assert _label(["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"]) == \
        "vllm.entrypoints.openai.api_server"
