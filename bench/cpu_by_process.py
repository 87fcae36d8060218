"""Who used the CPU: every process's share of the machine over a time window, read from /proc.

On a 2-core box the engine's two OpenMP threads need both cores; anything else that runs takes
time from them (and a preempted thread stalls its partner at the next barrier). To see what a
gateway runs beside the engine, record while a benchmark runs, then report a phase's window:

    python -m bench.cpu_by_process record --out cpu.jsonl &          # every 5 s, until killed
    python -m bench.cpu_by_process report cpu.jsonl --from 13:24:00 --to 13:27:00

Shares are of one core (200% = both cores of a 2-core machine), with each process's nice value.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[str, tuple[str, float, int]]:
    """pid -> (command line, CPU seconds so far (user + system), nice) of every process."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on: utime 14, stime 15, nice 19
        out[pid] = (cmd[:100] or name, (int(rest[11]) + int(rest[12])) / HZ, int(rest[16]))
    return out


def record(path: Path, every_s: float) -> None:
    with path.open("a") as f:
        while True:
            f.write(json.dumps({"t": time.time(), "p": snapshot()}) + "\n")
            f.flush()
            time.sleep(every_s)


def report(path: Path, start: str, end: str, top: int) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    day = dt.datetime.fromtimestamp(rows[0]["t"]).date()

    def nearest(hms: str) -> dict:
        t = dt.datetime.combine(day, dt.time.fromisoformat(hms)).timestamp()
        return min(rows, key=lambda r: abs(r["t"] - t))

    a, b = nearest(start), nearest(end)
    span = b["t"] - a["t"]
    used = sorted(((b["p"][pid][1] - a["p"][pid][1], pid) for pid in b["p"] if pid in a["p"]), reverse=True)
    total = sum(d for d, _ in used)
    print(f"{span:.0f} s window, all processes {total / span:.0%} of one core\n")
    print("| share of one core | nice | pid | process |\n|---|---|---|---|")
    for d, pid in used[:top]:
        print(f"| {d / span:.1%} | {b['p'][pid][2]} | {pid} | `{b['p'][pid][0][:80].strip()}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="append a snapshot every --every seconds until killed")
    r.add_argument("--out", type=Path, default=Path("cpu.jsonl"))
    r.add_argument("--every", type=float, default=5.0)
    p = sub.add_parser("report", help="each process's share of one core between two times (HH:MM:SS)")
    p.add_argument("file", type=Path)
    p.add_argument("--from", dest="start", required=True)
    p.add_argument("--to", dest="end", required=True)
    p.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    if args.cmd == "record":
        record(args.out, args.every)
    else:
        report(args.file, args.start, args.end, args.top)


if __name__ == "__main__":
    main()
