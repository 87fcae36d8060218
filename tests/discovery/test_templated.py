"""The templated lines: split by frame and phrase, the same frames for both labels, no word of the lexicon."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from discovery.corpus import CorpusSpec
from discovery.judges import get_judge
from discovery.labelled import NON_LEXICAL, labelled_texts
from discovery.splits import HELDOUT, SELECTION, assign_sides
from discovery.templated import TEMPLATES, build_templated, load_templated, templated_summary


class _Tokenizer:
    """Stands in for the chat template (pure logic under test: which lines are kept, in which views)."""

    def apply_chat_template(self, messages: list[dict[str, str]], **_: object) -> str:
        return f"<user>{messages[0]['content']}<assistant>"


def test_templated_lines_split_by_frame_and_phrase_with_labels_from_the_template(tmp_path: Path) -> None:
    spec = CorpusSpec(seed=3, scale=0.5)
    records = load_templated(build_templated(tmp_path / "templated.jsonl", spec))
    by_name = {t.name: t for t in TEMPLATES}
    for r in records:
        tpl = by_name[r["kind"].removeprefix("templated_").removesuffix("_contrast")]
        frames = assign_sides(tpl.frames, spec.heldout_fraction, spec.seed, f"templated_{tpl.name}_frames")
        pool = "hostile" if r["label"] == 1 else "benign"
        phrases = assign_sides(getattr(tpl, pool), spec.heldout_fraction, spec.seed,
                               f"templated_{tpl.name}_{pool}")
        # A held-out line shares neither its frame nor its phrase with any selection line.
        assert frames[r["frame"]] == phrases[r["subject"]] == r["split"]
        assert r["category"] == (tpl.category if r["label"] == 1 else "benign")
        assert r["subject"] in r["line"] and r["line"][0].isupper()
    assert {c for r in records if r["label"] == 1 for c in [r["category"]]} == set(NON_LEXICAL)
    assert {r["split"] for r in records} == {SELECTION, HELDOUT}
    # Only the phrase carries the label: frames hold hostile and benign lines alike.
    labels_per_frame = Counter((r["frame"], r["label"]) for r in records)
    both = [f for t in TEMPLATES for f in t.frames if labels_per_frame[(f, 0)] and labels_per_frame[(f, 1)]]
    assert len(both) >= 15
    # Beyond the lexicon: every kept line is one the word list cannot see; the dropped ones are hits.
    hits = get_judge("better-profanity").score([r["line"] for r in records])
    assert all((r["dropped"] == "wordlist") == bool(h) for r, h in zip(records, hits, strict=True))
    assert any(r["dropped"] for r in records)
    assert any(r["dropped"] is None and r["label"] == 1 for r in records)
    again = load_templated(build_templated(tmp_path / "again.jsonl", spec))
    assert again == records  # deterministic


def test_kept_templated_lines_join_the_labelled_set_in_both_views(tmp_path: Path) -> None:
    records = load_templated(build_templated(tmp_path / "templated.jsonl", CorpusSpec(seed=1, scale=0.2)))
    texts = labelled_texts([], [], _Tokenizer(), templated=records)
    kept = [r for r in records if r["dropped"] is None]
    assert len(texts) == 2 * len(kept) and {t["set"] for t in texts} == {"templated"}
    by_group = Counter(t["group"] for t in texts)
    assert set(by_group.values()) == {2}  # both views of a line in one group
    chat = next(t for t in texts if t["view"] == "chat")
    assert chat["text"] == f"<user>{chat['visible']}<assistant>"
    summary = templated_summary(records, seed=0)
    assert sum(row["lines"] for row in summary.values()) == len(records)
    assert sum(row["kept"] for row in summary.values()) == len(kept)
    assert all(0 <= row["judge_flags"] <= 1 and len(row["samples"]) <= 3 for row in summary.values())
