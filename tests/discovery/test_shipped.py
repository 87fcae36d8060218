"""The shipped SAE and detector against issue 9's targets, recomputed from the committed held-out
split with the real SmolLM2, the shipped SAE and detector, and the real judge (no cached numbers).

Every target is a test. The ones the shipped detector does not meet yet are strict xfails: the
test still computes and checks the number, and the day a detector meets it the test XPASSes and
fails the run, so the marker has to go (README, "The embedded SAE and its toxicity features")."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from discovery.activations import load_lm
from discovery.evaluation import scorer_metrics
from discovery.judges import get_judge
from discovery.labelled import DataSpec, labelled_texts
from discovery.review import REVIEW_FILE, SECOND_REVIEW_FILE, load_review, reviewed_section
from discovery.scoring import load_detector, score_texts
from discovery.short_lines import build_short, load_short
from discovery.splits import HELDOUT
from discovery.templated import build_templated, load_templated
from discovery.thresholds import is_short
from middleware.assets import EMBEDDED_FEATURES, EMBEDDED_HELDOUT, EMBEDDED_SAE
from middleware.detection import FeatureSet
from middleware.embedded import embedded_model_dir
from middleware.sae import load_sae_config

TARGET_AUROC = 0.95
TARGET_RECALL = 0.9
TARGET_FPR_BENIGN_HARD = 0.05
THRESHOLD = 0.5
NOT_MET = pytest.mark.xfail(strict=True, reason="issue 9 target not met by the shipped detector (README)")


@pytest.fixture(scope="module")
def held() -> dict[str, Any]:
    """The committed held-out texts, scored again: the detector with the real model (as the gateway
    counts a prompt's words, for the short-text shift) and alt-profanity-check on the readable text."""
    records = [json.loads(line) for line in EMBEDDED_HELDOUT.read_text().splitlines()]
    model, tokenizer = load_lm(embedded_model_dir())
    detector = load_detector(str(EMBEDDED_FEATURES))
    words = [len(r["visible"].split()) for r in records]
    scores = score_texts(model, tokenizer, detector, [r["text"] for r in records], words=words)
    judge = np.array(get_judge("alt-profanity-check").score([r["visible"] for r in records]))
    return {"records": records, "scores": scores,
            "detector": scorer_metrics(scores, records, THRESHOLD, n_boot=200),
            "judge": scorer_metrics(judge, records, THRESHOLD, n_boot=200),
            "reviewed": reviewed_section(records, {"detector": scores, "alt-profanity-check": judge},
                                         load_review(REVIEW_FILE), n_boot=200),
            "second_reader": reviewed_section(records, {"detector": scores, "alt-profanity-check": judge},
                                              load_review(SECOND_REVIEW_FILE), n_boot=200),
            "reported": FeatureSet.load(EMBEDDED_FEATURES).extra["heldout"]}


def _assert_close(ours: dict[str, Any], theirs: dict[str, Any], name: str) -> None:
    """Recomputed numbers against the report's: per category within 0.01, unions within 0.005."""
    for category, row in theirs["categories"].items():
        for key in ("auroc", "recall", "false_positive_rate"):
            if key in row:
                got = ours["categories"][category][key][0]
                assert got == pytest.approx(row[key][0], abs=0.01), (name, category, key)
    for union, row in theirs["unions"].items():
        assert ours["unions"][union]["auroc"][0] == pytest.approx(row["auroc"][0], abs=0.005), (name, union)


def test_shipped_sae_fits_the_embedded_model_and_is_small() -> None:
    cfg = load_sae_config(EMBEDDED_SAE)
    assert cfg.d_in == 576 and cfg.architecture in ("topk", "abstopk") and cfg.hook_layer is not None
    assert (EMBEDDED_SAE / "sae_weights.safetensors").stat().st_size < 25_000_000
    card = (EMBEDDED_SAE / "README.md").read_text()
    report = json.loads((EMBEDDED_SAE / "train_report.json").read_text())
    for key in ("fvu", "l0", "dead_fraction", "delta_loss"):
        assert key in report["metrics"]
    assert f"{report['metrics']['fvu']:.4f}" in card and report["layer"] == cfg.hook_layer
    assert FeatureSet.load(EMBEDDED_FEATURES).sae_path == str(EMBEDDED_SAE.resolve())


def test_recomputed_scores_match_the_committed_file_and_report(held: dict[str, Any]) -> None:
    records, reported = held["records"], held["reported"]
    assert len(records) == reported["texts"] and sum(r["label"] for r in records) == reported["toxic"]
    # find-features scored from its activation cache, stored in fp16; this run is fp32 end to end. The
    # signed detector's logit is steep, so a text or two near the threshold moves (0.70 -> 0.29 here).
    moved = np.abs(held["scores"] - np.array([r["detector"] for r in records])) > 0.05
    assert moved.mean() <= 0.01
    for name, ours in (("detector", held["detector"]), ("alt-profanity-check", held["judge"])):
        _assert_close(ours, reported["scorers"][name], name)


def test_the_numbers_on_the_readers_labels_match_the_report(held: dict[str, Any]) -> None:
    # discovery/review.py: the held-out split under a reader's verdicts, made blind to every score.
    ours, theirs = held["reviewed"], held["reported"]["reviewed"]
    assert ours["agreement"] == theirs["agreement"] and ours["texts"] == theirs["texts"]
    for name in ("detector", "alt-profanity-check"):
        _assert_close(ours["scorers"][name], theirs["scorers"][name], name)


def test_every_category_and_both_views_are_held_out(held: dict[str, Any]) -> None:
    # The targets are read per category, on short texts, and on raw and chat-template views.
    categories = {r["category"] for r in held["records"]}
    assert categories == {"profanity", "insult", "threat", "identity/dehumanising", "benign", "benign-hard"}
    views = {r["view"] for r in held["records"]}
    assert {"raw", "chat"} <= views
    assert sum(is_short(r["visible"]) for r in held["records"] if r["label"] == 1) >= 50


def test_lexical_auroc_meets_the_target(held: dict[str, Any]) -> None:
    assert held["detector"]["unions"]["lexical"]["auroc"][0] >= TARGET_AUROC


@NOT_MET
def test_non_lexical_auroc_meets_the_target(held: dict[str, Any]) -> None:
    assert held["detector"]["unions"]["non-lexical"]["auroc"][0] >= TARGET_AUROC


def test_union_auroc_at_least_the_judges(held: dict[str, Any]) -> None:
    assert held["detector"]["unions"]["all"]["auroc"][0] >= held["judge"]["unions"]["all"]["auroc"][0]


def test_on_the_readers_labels_union_auroc_at_least_the_judges(held: dict[str, Any]) -> None:
    # Not an issue target as written (it reads the split's own labels, above): on the labels a
    # reader confirms, the judge no longer grades its own profanity labels.
    union = {name: m["unions"]["all"]["auroc"][0] for name, m in held["reviewed"]["scorers"].items()}
    assert union["detector"] >= union["alt-profanity-check"]


def test_on_the_second_readers_labels_the_auroc_targets_hold(held: dict[str, Any]) -> None:
    # The detector was fitted on the first reader's selection labels; the second reader labelled
    # none of the lines it was fitted on, so these held-out labels owe nothing to the fit's labeller.
    scorers = held["second_reader"]["scorers"]
    ours = {u: scorers["detector"]["unions"][u]["auroc"][0] for u in ("non-lexical", "lexical", "all")}
    assert ours["non-lexical"] >= TARGET_AUROC and ours["lexical"] >= TARGET_AUROC
    assert ours["all"] >= scorers["alt-profanity-check"]["unions"]["all"]["auroc"][0]


@pytest.mark.parametrize("category", [pytest.param(c, marks=NOT_MET)
                                      for c in ("profanity", "insult", "threat", "identity/dehumanising")])
def test_recall_at_the_shipped_threshold_meets_the_target(held: dict[str, Any], category: str) -> None:
    assert held["detector"]["categories"][category]["recall"][0] >= TARGET_RECALL


def test_benign_hard_false_positive_rate_meets_the_target(held: dict[str, Any]) -> None:
    assert held["detector"]["categories"]["benign-hard"]["false_positive_rate"][0] <= TARGET_FPR_BENIGN_HARD


def test_benign_false_positive_rate_is_low(held: dict[str, Any]) -> None:
    # Not an issue target, but the operating point's own bound (3% of selection's benign texts).
    assert held["detector"]["categories"]["benign"]["false_positive_rate"][0] <= 0.03


def test_the_sets_made_without_generation_rebuild_the_shipped_heldout_lines(tmp_path: Path) -> None:
    """A reproduction guard that needs no generation: the short and templated lines are made from
    frames, phrases and words by seeded splits, so rebuilding them with the default data spec must
    give the committed held-out file's lines exactly. A change to a seed, a split, a frame list or
    the judge's labels fails here, where otherwise the next `find-features` would silently ship
    another held-out split. (The generated sets are checked by the README's fresh-clone run.)"""
    from transformers import AutoTokenizer

    spec = DataSpec()
    assert FeatureSet.load(EMBEDDED_FEATURES).extra["data"]["spec"] == json.loads(json.dumps(asdict(spec)))
    short = load_short(build_short(tmp_path / "short.jsonl", spec.corpus))
    templated = load_templated(build_templated(tmp_path / "templated.jsonl", spec.corpus))
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    fields = ("uid", "group", "kind", "category", "label", "view", "text", "visible")
    rebuilt = [{k: t[k] for k in ("set", *fields)} for t in
               labelled_texts([], [], tokenizer, short=short, templated=templated) if t["split"] == HELDOUT]
    records = map(json.loads, EMBEDDED_HELDOUT.read_text().splitlines())
    shipped = [{k: r[k] for k in ("set", *fields)} for r in records if r["set"] in ("short", "templated")]
    assert len(shipped) > 700  # 183 short and 232 templated lines, both views
    assert sorted(rebuilt, key=lambda r: r["uid"]) == sorted(shipped, key=lambda r: r["uid"])
