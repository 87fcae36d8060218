"""The report's plot: each arm's mean completion toxicity against its mean fluency perplexity, with
95% intervals on both, so the trade-off between arms reads at a glance (lower-left is better)."""

from __future__ import annotations

import math
from pathlib import Path

from reports.report import ExperimentReport
from reports.stats import Estimate

__all__ = ["plot_report"]


def _err(e: Estimate) -> list[list[float]]:
    """matplotlib's asymmetric error bar for one point (none where the interval is undefined)."""
    below = 0.0 if math.isnan(e.low) else e.value - e.low
    above = 0.0 if math.isnan(e.high) else e.high - e.value
    return [[below], [above]]


def plot_report(report: ExperimentReport, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    missing = []
    for i, row in enumerate(report.arms):
        x, y = row.toxicity, row.perplexity
        if math.isnan(x.value) or math.isnan(y.value):
            missing.append(row.arm)
            continue

        colour = "black" if row.control else f"C{i}"
        ax.errorbar([x.value], [y.value], xerr=_err(x), yerr=_err(y), fmt="s" if row.control else "o",
                    color=colour, capsize=4, markersize=7, linewidth=1.5)
        label = f"{row.arm}{' (control)' if row.control else ''}\nn={x.n:g} / {y.n:g}"
        ax.annotate(label, (x.value, y.value), textcoords="offset points", xytext=(8, 6), fontsize=8)
    ax.set_xlabel("mean completion toxicity (SAE detector, 95% CI)")
    ax.set_ylabel("mean perplexity under the unsteered model (95% CI)")
    title = f"experiment {report.experiment}: toxicity vs fluency per arm"
    if missing:
        title += f"\n(no toxicity or perplexity yet: {', '.join(missing)})"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(0.25)
    fig.text(0.01, 0.01, "n = responses / perplexity samples; lower-left is better", fontsize=7, color="grey")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
