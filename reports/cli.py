"""`steergate report`: an experiment's per-arm table, tests against the control, JSON and a plot."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_commands"]

EPILOG = """\
sources:
  http://HOST:PORT/metrics   a gateway's own /metrics (one ingress replica's totals since it started)
  http://HOST:9090           a Prometheus server that scrapes the gateway (every replica; --window)

examples:
  steergate report --source http://127.0.0.1:8000/metrics
  steergate report --source http://127.0.0.1:9090 --experiment strength --window 24h --json
"""


def _report(args: argparse.Namespace) -> int:
    from reports.plot import plot_report
    from reports.report import build_report, render
    from reports.sources import SourceError, read_totals

    try:
        experiment, arms = read_totals(args.source, args.experiment, policy=args.policy, window=args.window,
                                       timeout_s=args.timeout)
        report = build_report(experiment, arms, source=args.source, window=args.window, control=args.control)
    except (SourceError, ValueError) as e:
        print(f"steergate report: {e}", file=sys.stderr)
        return 1
    plot = None if args.plot == "" else plot_report(report, args.plot or f"steergate-report-{experiment}.png")
    if args.json:
        out: dict[str, Any] = report.to_json() | {"plot": None if plot is None else str(plot)}
        print(json.dumps(out, indent=2))
    else:
        print(render(report))
        if plot is not None:
            print(f"\nplot: {plot}")
    return 0


def add_commands(sub: Any) -> None:
    """Register `report` on the `steergate` command's subparsers."""
    report = sub.add_parser(
        "report", help="per-arm report of an A/B experiment, from Prometheus or a gateway's /metrics",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("--source", required=True,
                        help="a gateway's /metrics URL, or a Prometheus server's base URL (see below)")
    report.add_argument("--experiment", help="experiment name (default: the only one the source has)")
    report.add_argument("--policy", help="only this policy's traffic (default: every policy running it)")
    report.add_argument("--control", help="arm to compare against (default: the policy file's control)")
    report.add_argument("--window", help="Prometheus only: a range like 1h or 7d (increase() over it); "
                        "default: the counters' totals")
    report.add_argument("--json", action="store_true", help="print JSON instead of the table")
    report.add_argument("--plot", help="PNG path for toxicity vs perplexity per arm "
                        "(default: steergate-report-EXPERIMENT.png; '' for none)")
    report.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP call (default 30)")
    report.set_defaults(func=_report)
