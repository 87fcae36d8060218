"""Two readers (discovery/agreement.py): kappa against scikit-learn's, the consensus rule, the per-category
table counting a line once whatever its views, and the CLI's consensus file that `review report` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from discovery.agreement import cohen_kappa, compare_readers, consensus, main
from discovery.review import load_review


def test_kappa_is_scikit_learns_and_chance_agreement_reads_about_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.choice(["toxic", "benign", "unclear"], 300, p=[0.5, 0.4, 0.1])
    b = np.where(rng.random(300) < 0.7, a, rng.choice(["toxic", "benign", "unclear"], 300))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(a, a) == 1.0
    # Two readers who ignore the text: same verdict rates, agreement only by chance.
    ignoring = [rng.choice(["toxic", "benign"], 5000) for _ in range(2)]
    assert abs(cohen_kappa(*ignoring)) < 0.05
    with pytest.raises(ValueError, match="undefined"):
        cohen_kappa(["toxic", "toxic"], ["toxic", "toxic"])


def test_consensus_keeps_shared_verdicts_and_makes_disagreements_unclear() -> None:
    first = {"a": "toxic", "b": "benign", "c": "toxic", "d": "unclear", "only first": "toxic"}
    second = {"a": "toxic", "b": "benign", "c": "benign", "d": "unclear", "only second": "benign"}
    assert consensus(first, second) == {"a": "toxic", "b": "benign", "c": "unclear", "d": "unclear"}


def _held(set_name: str, text: str, category: str, views: int) -> list[dict[str, str]]:
    return [{"set": set_name, "visible": text, "category": category} for _ in range(views)]


def test_per_category_agreement_counts_each_line_once_and_skips_unreviewed_sets() -> None:
    held = [*_held("instructed", "you fool", "insult", 2),
            *_held("instructed", "I will find you", "threat", 2),
            *_held("instructed", "nice hat", "insult", 2), *_held("templated", "You are kind.", "benign", 2),
            *_held("lexical", "damn it", "profanity", 1)]
    first = {"you fool": "toxic", "I will find you": "toxic", "nice hat": "benign", "damn it": "toxic",
             "You are kind.": "benign"}
    second = {"you fool": "toxic", "I will find you": "unclear", "nice hat": "toxic", "damn it": "toxic",
              "You are kind.": "benign"}
    result = compare_readers(first, second, held, n_boot=50)
    overall = result["overall"]
    assert overall["lines"] == 5 and overall["agree"] == pytest.approx(3 / 5)
    assert overall["table"]["toxic / unclear"] == 1 and overall["table"]["benign / toxic"] == 1
    assert overall["decisive_lines"] == 4
    assert set(result["by_category"]) == {"instructed: insult", "instructed: threat", "lexical: profanity"}
    insult = result["by_category"]["instructed: insult"]
    assert insult["lines"] == 2 and insult["agree"] == 0.5 and insult["table"]["benign / toxic"] == 1
    assert result["by_category"]["instructed: threat"]["kappa"] is None  # one line: undefined


def test_the_cli_writes_a_consensus_file_that_load_review_reads(tmp_path: Path, capsys) -> None:
    def write(path: Path, verdicts: dict[str, str]) -> Path:
        path.write_text("".join(json.dumps({"text": t, "verdict": v}) + "\n" for t, v in verdicts.items()))
        return path

    first = write(tmp_path / "first.jsonl", {"a": "toxic", "b": "benign", "c": "toxic", "selection": "toxic"})
    second = write(tmp_path / "second.jsonl", {"a": "toxic", "b": "benign", "c": "benign"})
    out = tmp_path / "consensus.jsonl"
    main([str(first), str(second), "--consensus", str(out), "--n-boot", "20"])
    printed = capsys.readouterr().out
    assert "Lines both read: 3; same verdict: 66.7%" in printed
    assert load_review(out) == {"a": "toxic", "b": "benign", "c": "unclear"}
