"""The reader's labels (discovery/review.py): the relabelling rules on small records, the blind
export, the review file's checks, and that the committed review covers the committed held-out
split (a new split would otherwise leave its lines silently unreviewed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from discovery.cli import add_commands
from discovery.features_pipeline import FindFeaturesJob
from discovery.review import (
    REVIEW_FILE,
    REVIEWED_SETS,
    SECOND_REVIEW_FILE,
    export_lines,
    load_review,
    main,
    readers_labels,
    reviewed_section,
    selection_under_review,
)
from middleware.assets import EMBEDDED_HELDOUT

LEXICAL_VIEW = ("as-generated",)


def _text(set_name: str, line: str, category: str, views: tuple[str, ...] = ("raw", "chat")
          ) -> list[dict[str, Any]]:
    """A line's texts (one per view), as labelled_texts writes them."""
    label = 0 if category.startswith("benign") else 1
    return [{"uid": f"{set_name}:{line}:{v}", "group": f"{set_name}:{line}", "set": set_name,
             "category": category, "label": label, "view": v, "visible": line,
             "text": line if v == "raw" else f"<chat>{line}"} for v in views]


def test_the_reader_confirms_contradicts_or_leaves_a_line_out() -> None:
    texts = [*_text("instructed", "you are a joke", "insult"),  # confirmed
             *_text("instructed", "nice weather today", "threat"),  # contradicted: becomes benign
             *_text("instructed", "so, about that", "insult"),  # unclear: left out
             *_text("instructed", "an unread line", "insult"),  # not in the file: left out
             *_text("instructed", "a compliment, read as toxic", "benign"),  # contradicted, no category
             *_text("lexical", "comment: damn you", "benign", LEXICAL_VIEW),  # contradicted: profanity
             *_text("templated", "You are worthless.", "insult")]  # right by construction
    review = {"you are a joke": "toxic", "nice weather today": "benign", "so, about that": "unclear",
              "a compliment, read as toxic": "toxic", "comment: damn you": "toxic"}
    keep, relabelled, agreement = readers_labels(texts, review)
    kept = {(t["visible"], t["view"]): (t["label"], t["category"]) for t in relabelled}
    assert kept == {("you are a joke", "raw"): (1, "insult"), ("you are a joke", "chat"): (1, "insult"),
                    ("nice weather today", "raw"): (0, "benign"),
                    ("nice weather today", "chat"): (0, "benign"),
                    ("comment: damn you", "as-generated"): (1, "profanity"),
                    ("You are worthless.", "raw"): (1, "insult"),
                    ("You are worthless.", "chat"): (1, "insult")}
    assert [texts[i]["uid"] for i in keep] == [t["uid"] for t in relabelled]
    # Lines, not texts: both views of a line count once.
    assert agreement["instructed: insult"] == {"confirmed": 1, "contradicted": 0, "unclear": 1,
                                               "not reviewed": 1, "by construction": 0}
    assert agreement["instructed: benign"]["contradicted"] == 1
    assert agreement["templated: insult"]["by construction"] == 1
    assert texts[2]["label"] == 1 and texts[2]["category"] == "threat"  # the input is not changed


def test_reviewed_section_scores_the_kept_texts_under_the_new_labels() -> None:
    lines = (("a", "profanity"), ("b", "benign"), ("c", "profanity"), ("d", "benign"))
    texts = [t for line, category in lines for t in _text("lexical", line, category, LEXICAL_VIEW)]
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    # The reader says c is benign: c (0.1) and d (0.2) are benign, a is toxic, b is unclear.
    review = {"a": "toxic", "b": "unclear", "c": "benign", "d": "benign"}
    section = reviewed_section(texts, {"s": scores}, review, n_boot=20)
    m = section["scorers"]["s"]
    assert section["texts"] == 3 and section["toxic"] == 1
    assert m["categories"]["profanity"]["recall"][0] == 1.0 and m["unions"]["lexical"]["auroc"][0] == 1.0
    assert m["categories"]["benign"]["false_positive_rate"][0] == 0.0
    assert m["categories"]["benign"]["texts"] == 2


def test_export_is_blind_one_record_per_line_and_seeded(tmp_path: Path) -> None:
    held = [*_text("instructed", "x", "insult"), *_text("short", "y", "benign"),
            *_text("templated", "z", "threat"), *_text("lexical", "w", "profanity", LEXICAL_VIEW)]
    lines = export_lines(held, seed=3)
    assert sorted(r["text"] for r in lines) == ["w", "x", "y"]  # templated lines are not read
    assert all(set(r) == {"text", "verdict"} and r["verdict"] == "" for r in lines)
    assert export_lines(held, seed=3) == lines
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in held))
    main(["export", str(path), "--out", str(tmp_path / "out.jsonl")])
    assert [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()] == export_lines(held)


def test_a_review_file_with_an_unknown_verdict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "review.jsonl"
    rows = [{"text": "a", "verdict": "toxic"}, {"text": "b", "verdict": "maybe"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="review.jsonl:2: verdict 'maybe'"):
        load_review(path)


@pytest.mark.parametrize("path", [REVIEW_FILE, SECOND_REVIEW_FILE], ids=["first", "second"])
def test_each_committed_review_reads_every_line_of_the_committed_heldout_split(path: Path) -> None:
    review = load_review(path)
    held = [json.loads(line) for line in EMBEDDED_HELDOUT.read_text().splitlines()]
    to_read = {t["visible"] for t in held if t["set"] in REVIEWED_SETS}
    assert to_read <= set(review)  # no held-out line unread (the file may hold selection lines too)
    assert {review[t] for t in to_read} == {"toxic", "benign", "unclear"}


def test_the_second_reader_read_the_same_lines_as_the_first() -> None:
    # Agreement (discovery/agreement.py) is over the lines both read: every one of the first's.
    assert set(load_review(SECOND_REVIEW_FILE)) == set(load_review(REVIEW_FILE))


def test_fitting_on_the_readers_labels_changes_only_selection_lines_it_has_read() -> None:
    import torch

    from discovery.labelled_activations import LabelledActivations

    texts = [{**t, "split": split} for split, line, category in (
        ("selection", "read: benign", "insult"), ("selection", "read: unclear", "threat"),
        ("selection", "never read", "insult"), ("heldout", "read: benign", "insult"))
        for t in _text("instructed", line, category, ("raw",))]
    review = {"read: benign": "benign", "read: unclear": "unclear"}
    keep, records, counts = selection_under_review(texts, review)
    assert keep.tolist() == [0, 2, 3] and counts == {"read": 2, "left_out": 1, "relabelled": 1}
    assert [(r["label"], r["category"]) for r in records] == [(0, "benign"), (1, "insult"), (1, "insult")]
    # The activations follow the texts kept: text i has i + 1 tokens of value i.
    acts = torch.cat([torch.full((i + 1, 2), float(i)) for i in range(4)])
    la = LabelledActivations(model=None, tokenizer=None, paths=None, texts=texts, instructed=[], sae=None,
                             acts=acts, offsets=torch.tensor([0, 1, 3, 6, 10]),
                             labels=np.ones(4, dtype=int), categories=np.array(["insult"] * 4),
                             held=np.array([False, False, False, True]))
    sub = la.subset(keep, records)
    assert [sub.text_acts(j)[:, 0].tolist() for j in range(3)] == [[0.0], [2.0] * 3, [3.0] * 4]
    assert sub.labels.tolist() == [0, 1, 1] and sub.held.tolist() == [False, False, True]


def test_the_report_says_what_the_fit_took_from_the_review_file() -> None:
    from discovery.report import _readers_labels_clause

    assert _readers_labels_clause(None) == ""  # --no-review-selection
    assert "read none of this selection split's lines" in _readers_labels_clause(
        {"read": 0, "left_out": 0, "relabelled": 0})
    fitted = _readers_labels_clause({"read": 5, "left_out": 1, "relabelled": 2})
    assert "Fitted on the reader's labels" in fitted
    assert "2 selection texts changed label, 1 were left out" in fitted
    # Features files written before "read" was counted keep the wording they were written with.
    assert "Fitted on the reader's labels" in _readers_labels_clause({"left_out": 44, "relabelled": 52})


def test_find_features_fits_on_the_readers_labels_unless_told_not_to() -> None:
    # The shipped detector is what `find-features` writes by default (README), so the default is
    # the reader's labels; --no-review-selection gives the sets' own labels (the detector before).
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    assert parser.parse_args(["find-features"]).review_selection is True
    assert parser.parse_args(["find-features", "--no-review-selection"]).review_selection is False
    job = FindFeaturesJob(model_dir=Path("m"), work_dir=Path("w"), sae_dir=Path("s"), out=Path("f.json"))
    assert job.review_selection and job.review == REVIEW_FILE and REVIEW_FILE.exists()
