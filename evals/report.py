"""The evaluation's outputs: a markdown table, a JSON file (summary + every generation) and a PNG plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_table", "plot_tradeoff", "write_outputs"]


def _e(x: Mapping[str, float] | None, fmt: str = "{:.3f}") -> str:
    if not x or x["value"] is None or (isinstance(x["value"], float) and math.isnan(x["value"])):
        return ""
    return f"{fmt.format(x['value'])} [{fmt.format(x['low'])}, {fmt.format(x['high'])}]"


def _pct_change(x: Mapping[str, float] | None) -> str:
    """A ratio vs off as a signed percentage change with its interval."""
    if not x:
        return ""
    return f"{(x['value'] - 1) * 100:+.0f}% [{(x['low'] - 1) * 100:+.0f}, {(x['high'] - 1) * 100:+.0f}]"


def format_table(results: Mapping[str, Any]) -> str:
    """One row per setting; every number with its 95% interval."""
    spec = results["spec"]
    header = ("| setting | judged toxicity (mean) | vs off | judged toxic (share) | benign perplexity | vs off | "
              "benign greedy changed | edit distance (tokens) | toxic-prompt perplexity | general ability (acc) |")
    lines = [header, "|" + "---|" * 10]
    for s in results["settings"]:
        acc = _e(s.get("accuracy"))
        if acc and not s.get("accuracy_within_off_interval", True):
            acc += " (outside off's interval)"
        lines.append(" | ".join([
            f"| {s['name']}", _e(s["toxicity"]), _pct_change(s.get("toxicity_vs_off")), _e(s["toxic_share"]),
            _e(s["benign_perplexity"], "{:.2f}"), _pct_change(s.get("benign_perplexity_vs_off")),
            _e(s.get("benign_changed"), "{:.0%}") if s.get("benign_changed") else "", _e(s.get("benign_edit_distance"),
                                                                                        "{:.1f}"),
            _e(s["toxic_perplexity"], "{:.2f}"), acc]) + " |")
    note = (f"\n{spec['samples']} samples per toxic-leaning prompt at temperature {spec['temperature']}, "
            f"{spec['max_tokens']} tokens, judged by `{spec['judge']}` (toxic at >= {spec['toxic_at']}); benign prompts "
            "greedy; perplexity under the unsteered model; 95% bootstrap intervals over prompts (paired vs off).")
    return "\n".join(lines) + "\n" + note + "\n"


MAX_LABELLED = 8  # settings drawn with intervals and names; beyond it, only off and the frontier


def _frontier(settings: Sequence[Mapping[str, Any]]) -> set[str]:
    """Names of the settings no other setting beats on both benign perplexity and judged toxicity."""
    points = [(s["name"], s["benign_perplexity"]["value"], s["toxicity"]["value"]) for s in settings]
    return {n for n, x, y in points
            if not any(x2 <= x and y2 <= y and (x2, y2) != (x, y) for _, x2, y2 in points)}


def plot_tradeoff(results: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """Judged toxicity vs benign perplexity, one point per setting, 95% intervals as error bars."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    settings: Sequence[Mapping[str, Any]] = results["settings"]
    # Settings that measured the same (e.g. two tiers with one recipe) share a point and one label.
    names: dict[tuple[float, float], list[str]] = {}
    for s in settings:
        names.setdefault((s["benign_perplexity"]["value"], s["toxicity"]["value"]), []).append(s["name"])
    # Many settings (a calibration's candidates) would bury each other's labels: then only off and the
    # frontier (no other setting both more fluent and less toxic) get intervals and names.
    shown = {s["name"] for s in settings} if len(names) <= MAX_LABELLED else _frontier(settings)
    grey = 0
    for s in settings:
        x, y = s["benign_perplexity"], s["toxicity"]
        same = names[(x["value"], y["value"])]
        if s["name"] != same[0]:
            continue
        off = s["steering"] == {"tier": "off"}
        if not (off or s["name"] in shown):
            ax.plot(x["value"], y["value"], "o", color="grey", alpha=0.45, markersize=4)
            grey += 1
            continue
        ax.errorbar(x["value"], y["value"], xerr=[[x["value"] - x["low"]], [x["high"] - x["value"]]],
                    yerr=[[y["value"] - y["low"]], [y["high"] - y["value"]]], fmt="o", capsize=4,
                    color="black" if off else None)
        ax.annotate(" = ".join(same), (x["value"], y["value"]), textcoords="offset points", xytext=(6, 6),
                    fontsize=9)
    if grey:
        ax.text(0.99, 0.99, f"grey: {grey} settings off the frontier (all in the table)",
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color="grey")
    spread = max(s["benign_perplexity"]["high"] for s in settings) / min(s["benign_perplexity"]["low"]
                                                                         for s in settings)
    if spread > (3 if len(names) > MAX_LABELLED else 20):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("benign perplexity under the unsteered model (lower is more fluent)")
    ax.set_ylabel(f"judged toxicity of continuations ({results['spec']['judge']})")
    ax.set_title(title or "toxicity vs fluency per steering setting (95% intervals)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(results: Mapping[str, Any], out_dir: Path, title: str = "") -> dict[str, Path]:
    """OUT/eval.md, OUT/eval.json (summary), OUT/generations.json (every record), OUT/eval.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"table": out_dir / "eval.md", "json": out_dir / "eval.json", "records": out_dir / "generations.json",
             "plot": out_dir / "eval.png"}
    paths["table"].write_text(format_table(results))
    summary = {k: v for k, v in results.items() if k != "records"}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    paths["records"].write_text(json.dumps(results["records"]) + "\n")
    plot_tradeoff(results, paths["plot"], title)
    return paths
