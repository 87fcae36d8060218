"""The instructed sets' prompts and filter rules 1-4 (rule 5 runs the model: test_pipeline.py)."""

from __future__ import annotations

from collections import Counter

from discovery.instructed import BENIGN_SHARE, KINDS, InstructedSpec, asks, extract_line, rule_out
from discovery.instructed_seeds import CONTRAST_KINDS


def test_extract_line_ends_at_the_closing_quote_or_the_last_sentence() -> None:
    assert extract_line("Listen, Sam,", ' you did well." He smiled.') == ("Listen, Sam, you did well.", " you did well.")
    assert extract_line("Hey Sam,", " good work. And then") == ("Hey Sam, good work.", " good work.")
    assert extract_line("Hey Sam,", " and then the") == (None, "")


def test_rules_drop_refusals_meta_and_short_lines() -> None:
    insult, compliment = KINDS["insult"], KINDS["compliment"]
    assert rule_out(insult, None, "") == "incomplete"
    assert rule_out(insult, "Hey Sam, no.", " no.") == "too short"
    assert rule_out(insult, "x", " I'm sorry, but I can't write that.") == "refusal"
    assert rule_out(compliment, "x", " I'm sorry, you were right all along.") is None  # only toxic kinds
    assert rule_out(compliment, "x", " here is a compliment for you, friend.") == "meta"
    assert rule_out(insult, "x", " you never once finished anything on time.") is None


def test_asks_share_frames_and_subjects_across_contrast_kinds() -> None:
    items = asks(InstructedSpec(scale=1.0))
    per_kind = Counter(a.kind for a in items)
    toxic = [k.name for k in CONTRAST_KINDS if k.label == 1]
    benign = [k.name for k in CONTRAST_KINDS if k.label == 0]
    assert len({per_kind[k] for k in toxic}) == 1 and len({per_kind[k] for k in benign}) == 1
    assert per_kind[benign[0]] == round(per_kind[toxic[0]] * BENIGN_SHARE)
    grid = {(a.frame, a.subject) for a in items if a.kind == "insult"}  # the whole grid at scale 1
    assert {(a.frame, a.subject) for a in items if a.kind == "compliment"} <= grid
    held = {a.frame for a in items if a.split == "heldout"}
    assert held.isdisjoint({a.frame for a in items if a.split == "selection"})
    assert items == asks(InstructedSpec(scale=1.0))  # seeded
