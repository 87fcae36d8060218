"""The instructed sets' prompts and filter rules 1-4 (rule 5 runs the model: test_pipeline.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from discovery.instructed import (
    BENIGN_SHARE,
    FILTER_VERSION,
    KINDS,
    InstructedSpec,
    _context,
    asks,
    exemplar_pools,
    extract_line,
    rivals,
    rule_out,
)
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


def test_shots_come_from_the_requests_own_side_and_leave_the_requests_unchanged() -> None:
    zero, few = asks(InstructedSpec(shots=0)), asks(InstructedSpec(shots=3))
    assert [replace(a, shots=()) for a in few] == zero  # the same requests, pair for pair
    pools = exemplar_pools(InstructedSpec())
    other = {"selection": "heldout", "heldout": "selection"}
    for ask in few:
        if ask.kind not in {kind for kind, _ in pools}:  # hard negatives keep their own openers, no shots
            assert ask.shots == ()
            continue
        assert len(ask.shots) == 3
        for instruction, line in ask.shots:
            assert line in pools[(ask.kind, ask.split)]
            assert line not in pools[(ask.kind, other[ask.split])]
            assert instruction != ask.instruction()  # another subject of the same side
    held = {line for (_, side), lines in pools.items() if side == "heldout" for line in lines}
    chosen = {line for (_, side), lines in pools.items() if side == "selection" for line in lines}
    assert held.isdisjoint(chosen)


def test_shots_are_shown_to_the_generator_not_to_the_filter() -> None:
    class Tok:  # a chat template that shows the turns, for reading the prompt
        def apply_chat_template(self, messages, add_generation_prompt: bool, tokenize: bool) -> str:
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    ask = next(a for a in asks(InstructedSpec(shots=2)) if a.kind == "threat")
    shown = ask.prompt(Tok())
    assert all(f'<assistant>"{line}"' in shown for _, line in ask.shots)
    assert shown.endswith('<assistant>"' + ask.opener)
    assert ask.prompt(Tok(), KINDS["compliment"], with_shots=False) == (
        f"<system>{ask.system}<user>{ask.instruction(KINDS['compliment'])}<assistant>\"{ask.opener}")


def test_rule_5_compares_an_output_with_the_opposite_labels_instructions() -> None:
    for kind in CONTRAST_KINDS:
        assert {r.label for r in rivals(kind)} == {1 - kind.label}
    assert _context(InstructedSpec())["filter_version"] == FILTER_VERSION  # a fixed filter remakes the set

