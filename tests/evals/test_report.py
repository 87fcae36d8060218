"""evals/report.py: the trade-off plot's frontier and its crowded form."""

from __future__ import annotations

from pathlib import Path

from evals.report import MAX_LABELLED, _frontier, plot_tradeoff


def _setting(name: str, ppl: float, tox: float) -> dict:
    return {"name": name, "steering": {"tier": name},
            "benign_perplexity": {"value": ppl, "low": ppl * 0.9, "high": ppl * 1.1},
            "toxicity": {"value": tox, "low": tox * 0.8, "high": tox * 1.2}}


def test_the_frontier_keeps_what_nothing_beats_on_both_axes() -> None:
    # b: a beats it on both axes; d: c beats it on toxicity at the same perplexity; e ties off
    settings = [_setting("off", 2.6, 0.18), _setting("a", 2.7, 0.10), _setting("b", 2.8, 0.12),
                _setting("c", 3.5, 0.06), _setting("d", 3.5, 0.07), _setting("e", 2.6, 0.18)]
    assert _frontier(settings) == {"off", "a", "c", "e"}


def test_a_crowded_plot_is_written(tmp_path: Path) -> None:
    settings = [_setting("off", 2.6, 0.18)] + [_setting(f"s{i}", 2.6 + i * 0.5, 0.17 - i * 0.004)
                                                for i in range(1, MAX_LABELLED + 4)]
    path = plot_tradeoff({"settings": settings, "spec": {"judge": "j"}}, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
