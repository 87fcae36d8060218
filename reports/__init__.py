"""Operator reports read from a running gateway's metrics (directly or through Prometheus):
`steergate report`, the per-arm comparison of an A/B experiment."""

from reports.report import ExperimentReport, build_report, render
from reports.sources import ArmTotals, Moments, SourceError, read_totals

__all__ = ["ArmTotals", "ExperimentReport", "Moments", "SourceError", "build_report", "read_totals", "render"]
