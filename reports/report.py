"""An experiment's report: per-arm estimates with 95% intervals and each arm against the control.

The control is the arm the policy file names (the gateway exports it with each arm's share), or the
one given with `control=`. Requests counted under arm "override" (a request's own steering replaced
its arm's, experiment.on_override: record) are shown but not tested: they were not assigned at random.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from policies.schema import OVERRIDE_ARM
from reports.sources import ArmTotals
from reports.stats import Difference, Estimate, fisher, holm, mean_interval, welch, wilson

__all__ = ["ArmRow", "Comparison", "ExperimentReport", "build_report"]

TESTS = {
    "toxicity": "Welch's t-test (unequal variances) on mean completion toxicity",
    "flagged_rate": "Fisher's exact test on flagged / not flagged completions",
    "perplexity": "Welch's t-test on mean fluency perplexity of sampled completions",
    "steered_tokens": "Welch's t-test on mean steered tokens per response",
    "adjustment": "p_holm: Holm-Bonferroni over the arms compared with the control",
}
METRICS = ("toxicity", "flagged_rate", "perplexity", "steered_tokens")


@dataclass(frozen=True)
class ArmRow:
    arm: str
    control: bool
    share: float | None
    requests: float
    toxicity: Estimate  # mean completion toxicity per response
    flagged_rate: Estimate  # share of completions flagged (Wilson interval)
    flagged: float
    perplexity: Estimate  # mean perplexity of sampled completions under the unsteered model
    steered_tokens: Estimate  # mean steered tokens per response


@dataclass(frozen=True)
class Comparison:
    arm: str
    control: str
    results: dict[str, Difference]
    p_holm: dict[str, float]


@dataclass(frozen=True)
class ExperimentReport:
    experiment: str
    source: str
    window: str | None
    control: str
    arms: list[ArmRow]
    comparisons: list[Comparison]

    def row(self, arm: str) -> ArmRow:
        return next(r for r in self.arms if r.arm == arm)

    def to_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:  # JSON has no NaN: an undefined number is null
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return clean({
            "experiment": self.experiment, "source": self.source, "window": self.window,
            "control": self.control,
            "arms": [asdict(r) for r in self.arms],
            "comparisons": [{"arm": c.arm, "control": c.control,
                             **{m: {**asdict(c.results[m]), "p_holm": c.p_holm[m]} for m in METRICS}}
                            for c in self.comparisons],
            "tests": TESTS,
        })


def _row(t: ArmTotals, control: str) -> ArmRow:
    return ArmRow(
        arm=t.arm, control=t.arm == control, share=t.share, requests=t.requests,
        toxicity=mean_interval(t.toxicity), flagged_rate=wilson(t.flagged, t.toxicity.n), flagged=t.flagged,
        perplexity=mean_interval(t.perplexity), steered_tokens=mean_interval(t.steered),
    )


def build_report(experiment: str, arms: list[ArmTotals], *, source: str, window: str | None = None,
                 control: str | None = None) -> ExperimentReport:
    """Raises ValueError when the control cannot be told (not exported, not given) or is not an arm."""
    by_name = {t.arm: t for t in arms}
    if control is None:
        marked = [t.arm for t in arms if t.control]
        if len(marked) != 1:
            raise ValueError("the source does not say which arm is the control: give it with --control")
        control = marked[0]
    if control not in by_name:
        raise ValueError(f"control {control!r} is not an arm of {experiment!r} (arms: {', '.join(by_name)})")
    base = by_name[control]
    tested = [t for t in arms if t.arm not in (control, OVERRIDE_ARM)]
    results = [{
        "toxicity": welch(t.toxicity, base.toxicity),
        "flagged_rate": fisher(t.flagged, t.toxicity.n, base.flagged, base.toxicity.n),
        "perplexity": welch(t.perplexity, base.perplexity),
        "steered_tokens": welch(t.steered, base.steered),
    } for t in tested]
    adjusted = {m: holm([r[m].p for r in results]) for m in METRICS}
    comparisons = [Comparison(t.arm, control, r, {m: adjusted[m][i] for m in METRICS})
                   for i, (t, r) in enumerate(zip(tested, results, strict=True))]
    order = sorted(arms, key=lambda t: (t.arm != control, t.arm == OVERRIDE_ARM, t.arm))  # control first
    rows = [_row(t, control) for t in order]
    return ExperimentReport(experiment, source, window, control, rows, comparisons)


def _interval(e: Estimate, digits: int) -> str:
    if math.isnan(e.value):
        return "-"
    if math.isnan(e.low):
        return f"{e.value:.{digits}f}"
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render(report: ExperimentReport) -> str:
    """The human-readable report: per-arm table, then each arm against the control."""
    window = f" over the last {report.window}" if report.window else " (totals since the counters started)"
    lines = [f"experiment {report.experiment} from {report.source}{window}; control: {report.control}", ""]
    rows = [["arm", "share", "requests", "responses", "toxicity (mean, 95% CI)", "flagged rate (95% CI)",
             "perplexity n", "perplexity (mean, 95% CI)", "steered tokens / response"]]
    for r in report.arms:
        name = r.arm + (" (control)" if r.control else "")
        rows.append([
            name, "-" if r.share is None else f"{r.share:.0%}", f"{r.requests:g}", f"{r.toxicity.n:g}",
            _interval(r.toxicity, 3), _interval(r.flagged_rate, 3), f"{r.perplexity.n:g}",
            _interval(r.perplexity, 2), _interval(r.steered_tokens, 1),
        ])
    lines += _table(rows)
    if report.comparisons:
        lines += ["", f"vs control {report.control} (difference arm - control [95% CI], p, Holm-adjusted p):"]
        rows = [["arm", "toxicity", "flagged rate", "perplexity", "steered tokens"]]
        for c in report.comparisons:
            cells = [c.arm]
            for m, digits in zip(METRICS, (3, 3, 2, 1), strict=True):
                d = c.results[m]
                shown = "-" if math.isnan(d.value) else f"{d.value:+.{digits}f}"
                if not math.isnan(d.low):
                    shown += f" [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"
                cells.append(f"{shown} p={_p(d.p)} p_holm={_p(c.p_holm[m])}")
            rows.append(cells)
        lines += _table(rows)
    lines += ["", "tests: " + "; ".join(TESTS.values())]
    if any(r.arm == OVERRIDE_ARM for r in report.arms):
        lines.append(f"arm {OVERRIDE_ARM!r}: requests that chose their own steering (not randomised, so not "
                     "tested)")
    return "\n".join(lines)
