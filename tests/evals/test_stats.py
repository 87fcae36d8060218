"""evals/stats.py and the harness's pure helpers: intervals, edit distance, prompt files, the table."""

from __future__ import annotations

import numpy as np
import pytest

from evals.harness import edit_distance, load_prompts
from evals.stats import bootstrap, paired_bootstrap


def test_bootstrap_interval_covers_the_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(5, 1, 20), rng.normal(5, 1, 2000)
    a, b = bootstrap(np.mean, [small]), bootstrap(np.mean, [large])
    assert a.low < a.value < a.high and a.value == pytest.approx(small.mean())
    assert b.contains(5.0) and (b.high - b.low) < (a.high - a.low) / 5


def test_paired_ratio_cancels_shared_noise() -> None:
    rng = np.random.default_rng(2)
    base = rng.lognormal(0, 1, 40)  # per-prompt difficulty, shared by both settings
    est = paired_bootstrap(np.mean, [base * 0.5], [base])
    assert est.value == pytest.approx(0.5) and est.high - est.low < 1e-9


def test_same_seed_same_interval() -> None:
    x = np.arange(30.0)
    assert bootstrap(np.mean, [x], seed=3) == bootstrap(np.mean, [x], seed=3)


@pytest.mark.parametrize("a, b, d", [([], [], 0), ([1, 2, 3], [1, 2, 3], 0), ([1, 2, 3], [1, 3], 1),
                                     ([1, 2], [3, 4, 5], 3), ([], [7, 8], 2)])
def test_edit_distance(a: list[int], b: list[int], d: int) -> None:
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_prompt_files_jsonl_or_lines(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("first prefix\n\nsecond prefix\n")
    assert load_prompts(tmp_path / "a.txt") == [{"prompt": "first prefix", "chat": False},
                                                {"prompt": "second prefix", "chat": False}]
    (tmp_path / "b.jsonl").write_text('{"prompt": "hi", "chat": true, "label": 1}\n')
    assert load_prompts(tmp_path / "b.jsonl") == [{"prompt": "hi", "chat": True, "label": 1}]
    (tmp_path / "c.jsonl").write_text('{"text": "hi"}\n')
    with pytest.raises(ValueError, match="needs a string 'prompt'"):
        load_prompts(tmp_path / "c.jsonl")
