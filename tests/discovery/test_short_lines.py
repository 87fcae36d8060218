"""The short lines: split like the corpus, the same frames for both labels, labelled by the judge."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from discovery import seeds
from discovery.corpus import CorpusSpec
from discovery.short_lines import BENIGN_WORDS, SHORT_FRAMES, build_short, load_short
from discovery.splits import HELDOUT, assign_sides
from discovery.wordlist import profanity_words


def test_short_lines_share_the_corpus_word_split_and_frames_across_labels(tmp_path: Path) -> None:
    spec = CorpusSpec(seed=3, scale=0.25)
    records = load_short(build_short(tmp_path / "short.jsonl", spec))
    assert records and all(len(r["line"].split()) <= 6 for r in records)
    word_side = assign_sides(profanity_words(), spec.heldout_fraction, spec.seed, "words")
    frame_side = assign_sides(SHORT_FRAMES, spec.heldout_fraction, spec.seed, "short_frames")
    # Everyday requests take the corpus' sides of its chat instructions and topics.
    frame_side |= assign_sides(seeds.CHAT_INSTRUCTIONS, spec.heldout_fraction, spec.seed, "chat_instructions")
    topic_side = assign_sides(seeds.BENIGN_TOPICS, spec.heldout_fraction, spec.seed, "topics")
    for r in records:
        assert frame_side[r["frame"]] == r["split"]
        if r["kind"] == "short_request":
            assert topic_side[r["subject"]] == r["split"]
            assert r["line"] == r["frame"].format(topic=r["subject"])
        elif r["kind"] == "short_toxic":
            assert word_side[r["subject"]] == r["split"]  # a held-out word is held out in every set
        else:
            assert r["subject"] in BENIGN_WORDS
    # The frame never gives the label away: frames carry both labels, on both sides.
    labels_per_frame = Counter((r["frame"], r["label"]) for r in records if r["label"] is not None)
    assert sum(1 for f in SHORT_FRAMES if labels_per_frame[(f, 0)] and labels_per_frame[(f, 1)]) >= 5
    assert {r["split"] for r in records} == {"selection", HELDOUT}
    # Labels are the judge's: toxic lines are the toxic kind, benign lines the benign kind.
    assert {r["kind"] for r in records if r["label"] == 1} == {"short_toxic"}
    assert {r["kind"] for r in records if r["label"] == 0} == {"short_benign", "short_request"}
    again = load_short(build_short(tmp_path / "again.jsonl", spec))
    assert [r["line"] for r in again] == [r["line"] for r in records]  # deterministic
