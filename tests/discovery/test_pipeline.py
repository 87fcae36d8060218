"""`train-sae` and `find-features` end to end on tiny sets, with the real SmolLM2 (transformers).

Small enough to run in the suite (a few dozen texts, a 64-latent SAE), but every stage is the
real one: generation, judge labels, the instructed sets and their filter, layer probe,
activations, training, metrics, model card, feature ranking, detector fit, held-out report, and
resuming from the work directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from discovery.corpus import CorpusSpec, load_corpus
from discovery.features import MAX_FEATURES
from discovery.features_pipeline import UNSHIFTED, FindFeaturesJob, run_find_features
from discovery.instructed import FILTER_RULES, InstructedSpec, load_instructed
from discovery.labelled import DataSpec
from discovery.tier_gates import format_gates, run_gates
from discovery.train import TrainSpec
from discovery.train_pipeline import TrainSAEJob, run_train_sae
from middleware.detection import FeatureSet
from middleware.embedded import embedded_model_dir
from middleware.sae import load_sae

CORPUS = CorpusSpec(seed=1, scale=0.05, max_new_tokens=6, batch_size=32)
DATA = DataSpec(corpus=CORPUS, instructed=InstructedSpec(seed=1, scale=0.01, max_new_tokens=20, batch_size=32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainSAEJob, dict]:
    root = tmp_path_factory.mktemp("discovery")
    job = TrainSAEJob(model_dir=embedded_model_dir(), work_dir=root / "work", out_dir=root / "sae", data=DATA,
                      train=TrainSpec(d_sae=64, k=4, epochs=1, batch_tokens=64, seed=1),
                      layer=None, candidate_layers=(2, 4), extra_texts=8, probe_texts_per_class=20, loss_texts=4)
    return job, run_train_sae(job)


def test_train_sae_writes_a_loadable_sae_with_its_model_card(trained: tuple[TrainSAEJob, dict]) -> None:
    job, report = trained
    records = load_corpus(job.work_dir / "corpus.jsonl")
    assert {r["source"] for r in records} >= {"wordlist", "benign_chat", "hard_negative", "wordlist_insult"}
    assert all(0 <= r["judge"] <= 1 and r["label"] in (0, 1, None) for r in records)
    assert {r["split"] for r in records} == {"selection", "heldout"}
    assert report["layer"] in (2, 4) and report["layer_probe"]["chosen"] == report["layer"]
    sae = load_sae(job.out_dir)
    assert sae.cfg.architecture == "topk" and sae.cfg.d_sae == 64 and sae.cfg.hook_layer == report["layer"]
    assert str(sae.dtype) == "torch.float16"  # shipped at half size
    m = report["metrics"]
    assert 0 < m["fvu"] < 1.5 and m["l0"] <= 4 and 0 <= m["dead_fraction"] <= 1
    assert m["loss_spliced"] > 0 and "delta_loss" in m
    card = (job.out_dir / "README.md").read_text()
    assert "delta loss" in card and "steergate train-sae" in card
    assert json.loads((job.out_dir / "train_report.json").read_text())["layer"] == report["layer"]


def test_rerun_resumes_from_the_work_dir(trained: tuple[TrainSAEJob, dict]) -> None:
    job, report = trained
    corpus = job.work_dir / "corpus.jsonl"
    before = corpus.stat().st_mtime_ns
    again = run_train_sae(job)
    assert corpus.stat().st_mtime_ns == before  # nothing regenerated
    assert again["metrics"] == report["metrics"]  # same checkpoint, same SAE


def test_find_features_writes_features_report_and_heldout(trained: tuple[TrainSAEJob, dict]) -> None:
    job, _ = trained
    out = job.out_dir.parent / "features.json"
    data = run_find_features(FindFeaturesJob(model_dir=job.model_dir, work_dir=job.work_dir, sae_dir=job.out_dir,
                                             out=out, data=DATA, seed=1, n_boot=50))
    instructed = load_instructed(job.work_dir / "instructed.jsonl")
    assert {r["kind"] for r in instructed} >= {"insult", "threat", "compliment", "moderation note"}
    assert all(r["dropped"] in (None, *FILTER_RULES) for r in instructed)
    assert all(r["line"] for r in instructed if r["dropped"] is None)
    assert {r["split"] for r in instructed} == {"selection", "heldout"}
    fs = FeatureSet.load(out)
    assert fs.features and len(fs.weights) == len(fs.features) and len(fs.features) <= MAX_FEATURES
    # Signed by default; only the toxic evidence (positive weights) is steered.
    assert data["selection"]["weights"] == "signed" and any(w > 0 for w in fs.weights)
    toxic = {f for f, w in zip(fs.features, fs.weights, strict=True) if w > 0}
    steered = {i["feature"] for tier in fs.tiers().values() for i in tier["interventions"]}
    assert steered and steered <= toxic
    assert data["selection"]["operating_point_scores"].startswith("out-of-fold")
    assert fs.sae_path == str(job.out_dir.resolve())
    held = data["heldout"]
    assert set(held["scorers"]) == {"detector", UNSHIFTED, "alt-profanity-check", "better-profanity"}
    for m in held["scorers"].values():
        lexical = m["unions"]["lexical"]["auroc"]
        assert 0 <= lexical[0] <= 1 and lexical[1] <= lexical[2]
        assert "benign" in m["categories"] and "false_positive_rate" in m["categories"]["benign"]
    assert len(held["checks"]["seed_phrases"]) > 0
    assert set(data["data"]["filter"]) >= {"insult", "compliment"}
    rows = [json.loads(x) for x in (out.parent / "heldout.jsonl").read_text().splitlines()]
    assert len(rows) == held["texts"] and all(r["label"] in (0, 1) and r["category"] for r in rows)
    short = [r for r in rows if r["set"] == "short"]  # the templated short lines, both views of each
    assert {r["view"] for r in short} == {"raw", "chat"} and {r["label"] for r in short} == {0, 1}
    assert held["checks"]["short"]["detector"]["toxic"]["texts"] > 0
    # The short-text shift, chosen on the selection split, only ever raises a short text's score.
    assert fs.short_words == 6 and fs.short_shift in (0.0, data["selection"]["short_shift"]["candidate"])
    shifted = held["checks"]["short"]["detector"]
    unshifted = held["checks"]["short"][UNSHIFTED]
    assert shifted["toxic"]["flagged"] >= unshifted["toxic"]["flagged"]
    # Everyday short requests join the short lines; the report counts the held-out ones.
    short_file = [json.loads(x) for x in (job.work_dir / "short.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "short_request" for r in short_file)
    assert shifted["requests"]["texts"] == sum(r["kind"] == "short_request" for r in rows)
    # Templated lines (beyond the lexicon) are scored in both views and reported as a set of their own.
    templated = [r for r in rows if r["set"] == "templated"]
    assert {r["view"] for r in templated} == {"raw", "chat"} and {r["label"] for r in templated} == {0, 1}
    by_set = held["checks"]["non_lexical_sets"]["detector"]
    assert by_set["templated"]["auroc"]["texts"] == sum(r["label"] == 1 for r in templated)
    assert set(data["data"]["templated"]) >= {"templated_insult", "templated_threat_contrast"}
    assert "the detector adds" in (out.parent / "features_report.md").read_text()
    frontier = held["checks"]["frontier"]  # lower thresholds flag at least as much of every category
    thresholds = [row["threshold"] for row in frontier]
    assert thresholds == sorted(thresholds, reverse=True)
    for c in ("profanity", "benign"):
        flagged = [row["flagged"][c] for row in frontier]
        assert flagged == sorted(flagged) and all(0 <= f <= 1 for f in flagged)
    report = (out.parent / "features_report.md").read_text()
    assert "Held-out split" in report and "Labelled data" in report
    assert "Beyond the lexicon, per set" in report and "Templated lines" in report
    # The committed review file reads the shipped split's lines, few if any of this tiny one's: where it
    # read none, the report says the fit kept the sets' own labels (not "fitted on ... 0 changed").
    read_none = data["selection"]["readers_labels"]["read"] == 0
    assert ("the review file has read none of this selection split's lines" in report) == read_none


def test_find_features_reports_and_fits_on_a_readers_labels(trained: tuple[TrainSAEJob, dict],
                                                           tmp_path: Path) -> None:
    """A review file (discovery/review.py) that reads one held-out and one selection line as benign:
    the report gains the reader's-labels section, and --review-selection fits on the new label."""
    job, _ = trained
    out = job.out_dir.parent / "features.json"
    if not out.exists():  # run alone: make the held-out file first
        run_find_features(FindFeaturesJob(model_dir=job.model_dir, work_dir=job.work_dir, sae_dir=job.out_dir,
                                          out=out, data=DATA, seed=1, n_boot=50))
    rows = [json.loads(x) for x in (out.parent / "heldout.jsonl").read_text().splitlines()]
    held_line = next(r["visible"] for r in rows if r["set"] == "short" and r["label"] == 1)
    selection_line = next(r["line"] for r in load_instructed(job.work_dir / "instructed.jsonl")
                          if r["dropped"] is None and r["split"] == "selection" and r["label"] == 1)
    review = tmp_path / "review.jsonl"
    verdicts = [{"text": t, "verdict": "benign"} for t in (held_line, selection_line)]
    review.write_text("".join(json.dumps(v) + "\n" for v in verdicts))
    data = run_find_features(FindFeaturesJob(
        model_dir=job.model_dir, work_dir=job.work_dir, sae_dir=job.out_dir, data=DATA, seed=1, n_boot=20,
        out=tmp_path / "reviewed" / "features.json", review=review, review_selection=True))
    reviewed = data["heldout"]["reviewed"]
    assert reviewed["agreement"]["short: profanity"]["contradicted"] == 1
    assert set(reviewed["scorers"]) == set(data["heldout"]["scorers"])
    assert data["selection"]["readers_labels"]["relabelled"] >= 2  # both views of the selection line
    assert data["selection"]["readers_labels"]["read"] >= 2
    report = (tmp_path / "reviewed" / "features_report.md").read_text()
    assert "## Held-out split, the reader's labels" in report and "Fitted on the reader's labels" in report


def test_tier_gates_reads_the_same_labelled_activations(trained: tuple[TrainSAEJob, dict]) -> None:
    """`tier-gates` on the features file find-features wrote: its cached activations, its split."""
    job, _ = trained
    out = job.out_dir.parent / "features.json"
    if not out.exists():  # run alone: make the features file first
        run_find_features(FindFeaturesJob(model_dir=job.model_dir, work_dir=job.work_dir, sae_dir=job.out_dir,
                                          out=out, data=DATA, seed=1, n_boot=50))
    cache = job.work_dir / f"acts_labelled_L{load_sae(job.out_dir).cfg.hook_layer}.pt"
    before = cache.stat().st_mtime_ns
    result = run_gates(job.model_dir, job.work_dir, DATA, out, top_k=3, multiples=[1.0, 100.0], levels=[-1e6])
    assert cache.stat().st_mtime_ns == before  # read from find-features' cache, not recomputed
    loose, shut, detector = result["rows"]
    assert loose.gate.endswith("1x") and shut.gate.endswith("100x") and detector.gate == "detector logit > -1e+06"
    assert shut.tokens_benign <= loose.tokens_benign and shut.tokens_toxic <= loose.tokens_toxic
    assert detector.tokens_benign == detector.tokens_toxic == 1.0  # so low a level opens everywhere
    assert set(detector.texts) == {"benign", "benign-hard", "toxic"}
    assert "| detector logit > -1e+06 |" in format_gates(result["rows"])
