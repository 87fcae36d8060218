"""Where each process's CPU goes under load: py-spy samples every Python process during a phase.

`bench.peer --profile DIR` records one phase at a time with this module; to summarise a recording:

    .venv/bin/python -m bench.py_profile DIR/gateway-default-16          # top functions per process

Each process's share of one core comes from /proc (all its threads, native ones included); py-spy
(installed with Ray) samples its Python stacks `RATE` times a second without pausing it
(--nonblocking) and, without --idle, only threads that are running, which says where that share
went. Threads without Python frames (the engine's OpenMP workers, Ray's C++ event loops) count in
the share but not in the functions; the engine's main thread is seen with the torch call it is in
on top. Sampling costs CPU (one py-spy per process), so a profiled phase is slower than an
unprofiled one: read shares and functions, not throughput.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu_by_process import snapshot

__all__ = ["Profiler", "ProcessProfile", "format_report", "load_profiles", "python_processes"]

RATE = 10  # samples per second per process: ~15 processes on 2 cores, so keep py-spy's own share small
PY_SPY = Path(sys.executable).with_name("py-spy")
OUR_PACKAGES = ("serving/", "middleware/", "policies/")


def _label(argv: list[str]) -> str:
    """A readable name from a command line: Ray's and vLLM's process titles, else the script or module."""
    if argv[0].startswith(("ray::", "VLLM::")):
        return argv[0]
    args = argv[1:]
    if "-m" in args:
        return args[args.index("-m") + 1]
    script = next((a for a in args if not a.startswith("-")), argv[0])
    return Path(script).name


def python_processes() -> dict[int, str]:
    """pid -> label of every Python process on the machine (by executable)."""
    out: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            argv = Path(f"/proc/{entry}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if Path(exe).name.startswith("python") and argv and argv[0]:
            out[int(entry)] = _label([a for a in argv if a])
    return out


class Profiler:
    """py-spy on every Python process, from start() to stop(); one raw (collapsed-stack) file each."""

    def __init__(self, directory: Path, rate: int = RATE, pids: set[int] | None = None) -> None:
        self.directory = directory
        self.rate = rate
        self.pids = pids  # None: every Python process
        self.running: list[subprocess.Popen[bytes]] = []
        self.started = 0.0
        self.cpu: dict[str, float] = {}  # pid -> CPU seconds at start, every process
        self.profiled: set[str] = set()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for pid, label in python_processes().items():
            if self.pids is not None and pid not in self.pids:
                continue
            self.profiled.add(str(pid))
            name = f"{label.replace('/', '_').replace(':', '_')}.{pid}.txt"
            self.running.append(subprocess.Popen(
                [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(self.rate), "--nonblocking",
                 "--format", "raw", "--output", str(self.directory / name)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.cpu = {pid: cpu for pid, (_, cpu, _) in snapshot().items()}
        self.started = time.monotonic()

    def stop(self) -> None:
        seconds = time.monotonic() - self.started
        now = snapshot()
        used = {pid: cpu - self.cpu[pid] for pid, (_, cpu, _) in now.items() if pid in self.cpu}
        # What the profile cannot see, so the machine's budget adds up: py-spy itself, and the
        # processes it does not sample (Ray's C++ daemons, HAProxy, ...), by program name.
        spies = {str(p.pid) for p in self.running}
        others: Counter[str] = Counter()
        for pid, s in used.items():
            if pid not in self.profiled:
                others["py-spy (the profiler)" if pid in spies else Path(now[pid][0].split(" ")[0]).name] += s
        for p in self.running:  # py-spy writes its file on SIGINT
            p.send_signal(signal.SIGINT)
        for p in self.running:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.running = []
        (self.directory / "seconds").write_text(f"{seconds:.2f} {self.rate}\n")
        (self.directory / "cpu").write_text("".join(f"{pid} {s:.2f}\n" for pid, s in used.items()
                                                    if pid in self.profiled))
        (self.directory / "others").write_text("".join(f"{s:.2f} {name}\n"
                                                       for name, s in others.most_common()))


@dataclass
class ProcessProfile:
    label: str
    cpu_seconds: float  # all its threads, from /proc, over the phase
    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)  # leaf frame -> samples (time in that function)
    within: Counter[str] = field(default_factory=Counter)  # frame anywhere on the stack -> samples

    def share(self, seconds: float) -> float:
        """Share of one core it used (200% = both cores of a 2-core machine)."""
        return self.cpu_seconds / seconds


def _frame(text: str) -> str:
    """'send (ray/_private/worker.py:123)' -> 'send (ray/_private/worker.py)': one name per function."""
    name, _, where = text.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", os.getcwd() + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    path = re.sub(r"^.*/lib/python3\.\d+/", "", path)  # the standard library, e.g. asyncio/runners.py
    return f"{name} ({path})" if path else name


def _ours(frame: str) -> bool:
    return frame.endswith(".py)") and frame.split(" (", 1)[1].startswith(OUR_PACKAGES)


def _cpu_seconds(directory: Path) -> dict[str, float]:
    """pid -> CPU seconds over the phase, for every process that was profiled."""
    lines = directory.joinpath("cpu").read_text().splitlines()
    return {pid: float(s) for pid, s in (line.split() for line in lines)}


def load_profiles(directory: Path) -> tuple[list[ProcessProfile], float, int]:
    """The profiles with samples in `directory`, most CPU first; (profiles, seconds, rate)."""
    seconds, rate = directory.joinpath("seconds").read_text().split()
    cpu = _cpu_seconds(directory)
    profiles = []
    for path in sorted(directory.glob("*.txt")):
        label, pid, _ = path.name.rsplit(".", 2)
        prof = ProcessProfile(label, cpu.get(pid, 0.0))
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [_frame(f) for f in stack.split(";")]
            n = int(count)
            prof.samples += n
            prof.own[frames[-1]] += n
            for f in set(frames):
                prof.within[f] += n
        if prof.samples:
            profiles.append(prof)
    return sorted(profiles, key=lambda p: -p.cpu_seconds), float(seconds), int(rate)


def format_report(directory: Path, top: int = 6, min_share: float = 0.01) -> str:
    """Markdown: each process's share of one core and the functions its samples were in."""
    profiles, seconds, rate = load_profiles(directory)
    lines = [f"{directory.name}: {seconds:.0f} s at {rate} samples/s per process "
             f"(processes under {min_share:.0%} of a core left out)", "",
             "| process | share of one core | top functions (self time, share of the process's samples) "
             "| steergate's functions on the stack (share of samples) |",
             "|---|---|---|---|"]
    for p in profiles:
        if p.share(seconds) < min_share:
            continue
        tops = "; ".join(f"`{f}` {n / p.samples:.0%}" for f, n in p.own.most_common(top))
        ours = [(f, n) for f, n in p.within.most_common() if _ours(f)][:3]
        mine = "; ".join(f"`{f}` {n / p.samples:.0%}" for f, n in ours) or "none"
        lines.append(f"| `{p.label}` | {p.share(seconds):.1%} | {tops} | {mine} |")
    others = [line.split(" ", 1) for line in directory.joinpath("others").read_text().splitlines()]
    total = sum(_cpu_seconds(directory).values()) + sum(float(s) for s, _ in others)
    shown = [f"{name} {float(s) / seconds:.1%}" for s, name in others if float(s) / seconds >= min_share]
    lines += ["", f"Not sampled: {'; '.join(shown) or 'nothing over the threshold'}. All processes: "
              f"{total / seconds:.0%} of one core ({os.cpu_count()} cores here)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", type=Path, nargs="+", help="directories bench.peer --profile wrote")
    parser.add_argument("--top", type=int, default=6, help="functions per process")
    args = parser.parse_args(argv)
    for d in args.directories:
        print(format_report(d, args.top) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
