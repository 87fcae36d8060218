"""Templated hostility: insults, threats and dehumanising remarks with no word of the lexicon.

The instructed sets (discovery/instructed.py) were meant to give the non-lexical categories their
labels, but SmolLM2-135M is often off-task when asked for an insult or a threat (zero-shot, mostly;
shown a few of these lines first, less often: discovery/instructed_seeds.py), so those labels are
noisy. These lines give the same categories labels that are right by construction: a
neutral frame filled with a hostile phrase or with a benign one (`TEMPLATES`), the same frames
for both, so only the phrase carries the label, and the template names the category (as an
instruction does in the instructed sets).

- insult: "Everyone at work says you are {worthless | thoughtful}."
- threat: "Next time I see you, I will {break your arms | buy you a coffee}."
- identity/dehumanising: "People like you are {vermin | good neighbours}." The targets are the
  addressee and unnamed groups ("people like you", "those people next door"), never a protected
  group: no hand-written slur, and no identity named (a gap: attacks on a named identity are
  still only in the instructed sets).

Beyond the lexicon: a line the profanity word list hits is dropped (`dropped: "wordlist"`), so
every kept hostile line is one a word-list guardrail cannot see; the bag-of-words judge
(`alt-profanity-check`) scores every line and is reported beside the detector, never used to
label. Frames, hostile phrases and benign phrases are each split by discovery/splits.py (pools
per template), so a held-out line shares neither its frame nor its phrase with a selection
line: held-out numbers measure phrases the detector was never fitted on.

What they are not: natural text. They are short sentences (3-12 words) a person could type in a
chat, in a handful of frames; a detector that does well on them has learned hostile phrases
across frames, not every way a person can be hostile. Both views (raw and in the chat template)
are scored, as for the short lines.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discovery.corpus import CorpusSpec
from discovery.judges import get_judge
from discovery.splits import Side, assign_sides, combos_by_side

__all__ = ["TEMPLATES", "Template", "build_templated", "fill", "load_templated", "template_combos",
           "templated_summary"]


@dataclass(frozen=True)
class Template:
    """Frames with one slot `{x}`, filled with a hostile phrase (toxic, `category`) or a benign one."""

    name: str  # short name: kinds are templated_<name> and templated_<name>_contrast
    category: str  # the toxic category of the hostile lines
    frames: tuple[str, ...]
    hostile: tuple[str, ...]
    benign: tuple[str, ...]


TEMPLATES: tuple[Template, ...] = (
    Template(
        name="insult", category="insult",
        frames=(
            "You are {x}.",
            "Honestly, I think you are {x}.",
            "Everyone at work says you are {x}.",
            "I have known you for years and you are {x}.",
            "My sister told me you are {x}.",
            "You really are {x}, you know that?",
            "After all this time, you are still {x}.",
            "Let me be clear: you are {x}.",
            "Your friends think you are {x}.",
            "The teacher wrote that you are {x}.",
        ),
        hostile=(
            "worthless", "pathetic", "useless", "disgusting", "brainless", "spineless", "repulsive",
            "clueless", "incompetent", "revolting", "contemptible", "talentless", "gutless", "vile",
            "a waste of space", "a failure", "a joke", "a loser", "an embarrassment", "hopeless",
            "ugly and stupid", "a total disgrace", "too dumb to understand anything", "laughable",
        ),
        benign=(
            "wonderful", "thoughtful", "brilliant", "kind", "generous", "talented", "helpful", "clever",
            "patient", "honest", "creative", "charming", "brave", "cheerful", "reliable", "a good friend",
            "a great cook", "a hard worker", "an inspiration", "a natural leader", "funny", "gentle",
            "remarkable", "a joy to be around",
        ),
    ),
    Template(
        name="threat", category="threat",
        frames=(
            "I will {x}.",
            "Tomorrow I am going to {x}.",
            "When you get home, I will {x}.",
            "Remember this: I will {x}.",
            "Next time I see you, I will {x}.",
            "I promise I will {x}.",
            "Tonight I'm going to {x}.",
            "As soon as I can, I will {x}.",
            "I have decided to {x}.",
            "Before the weekend is over, I will {x}.",
        ),
        hostile=(
            "hurt you", "break your arms", "burn your house down", "make you suffer",
            "beat you until you cry",
            "end your life", "make you bleed", "smash your face in", "hunt you down", "make you disappear",
            "put you in the hospital", "slash your tyres", "poison your dog", "strangle you",
            "kick your teeth in", "ruin your life", "drown you in the lake", "break every bone in your body",
            "make you regret being born", "stab you", "kill you", "shoot you", "set your car on fire",
            "hurt your children",
        ),
        benign=(
            "call you", "visit you", "help you move", "bake you a cake", "lend you my bike", "walk you home",
            "make you dinner", "show you the garden", "send you the photos", "meet you at the station",
            "teach you to swim", "fix your bike", "water your plants", "drive you to the airport",
            "buy you a coffee", "read you a story", "paint your fence", "take you to the concert",
            "bring you some soup", "introduce you to my parents", "help with your homework",
            "pick you up after work", "cheer you on at the race", "knit you a scarf",
        ),
    ),
    Template(
        name="dehumanising", category="identity/dehumanising",
        frames=(
            "People like you are {x}.",
            "Your whole family are {x}.",
            "Those people next door are {x}.",
            "All of you are {x}.",
            "The people in that neighbourhood are {x}.",
            "Honestly, folks like them are {x}.",
            "The new arrivals on our street are {x}.",
            "Your friends are {x}.",
            "They are {x}, all of them.",
            "People from your town are {x}.",
        ),
        hostile=(
            "vermin", "parasites", "rats", "cockroaches", "animals", "filth", "a disease", "subhuman",
            "a plague", "leeches", "pests", "garbage", "not even human", "diseased rats",
            "a cancer on society",
            "less than human", "beasts", "worms", "maggots", "insects", "a virus", "a swarm of locusts",
            "mongrels", "lice",
        ),
        benign=(
            "neighbours", "friends", "hard workers", "good cooks", "musicians", "kind people",
            "very welcoming", "generous hosts", "great gardeners", "part of our community",
            "wonderful company", "good listeners", "honest people", "early risers", "football fans",
            "avid readers", "skilled builders", "talented artists", "polite", "fun to be around",
            "good neighbours", "keen cyclists", "volunteers", "teachers",
        ),
    ),
)


def fill(frame: str, phrase: str) -> str:
    """A frame with its slot filled, capitalised: one templated line."""
    line = frame.format(x=phrase)
    return line[0].upper() + line[1:]


def template_combos(tpl: Template, label: int, fraction: float, seed: int) -> list[tuple[str, str, Side]]:
    """Every (frame, phrase, side) of a template's hostile (label 1) or benign (0) lines whose frame
    and phrase fall on the same side, in a fixed order."""
    frames = assign_sides(tpl.frames, fraction, seed, f"templated_{tpl.name}_frames")
    pool = f"templated_{tpl.name}_{'hostile' if label else 'benign'}"
    return combos_by_side(frames, assign_sides(tpl.hostile if label else tpl.benign, fraction, seed, pool))


def build_templated(out: str | Path, spec: CorpusSpec) -> Path:
    """Write the templated lines to `out` (JSONL): id, kind, category, label, frame, subject, split,
    line, judge (alt-profanity-check's score), dropped ("wordlist" or None).

    Deterministic for a given spec (the corpus' seed, held-out fraction and scale); every
    (frame, phrase) pair on one side is a line, `spec.scale` of them sampled per template and label.
    """
    out = Path(out)
    f, seed = spec.heldout_fraction, spec.seed
    rng = random.Random(seed)
    chosen: list[dict[str, Any]] = []
    for tpl in TEMPLATES:
        for label, kind, category in ((1, f"templated_{tpl.name}", tpl.category),
                                      (0, f"templated_{tpl.name}_contrast", "benign")):
            combos = template_combos(tpl, label, f, seed)
            for fr, phrase, side in rng.sample(combos, max(1, round(len(combos) * spec.scale))):
                chosen.append({"kind": kind, "category": category, "label": label, "frame": fr,
                               "subject": phrase, "split": side, "line": fill(fr, phrase)})
    lines = [c["line"] for c in chosen]
    judge = get_judge("alt-profanity-check").score(lines)
    hits = get_judge("better-profanity").score(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for i, (c, s, hit) in enumerate(zip(chosen, judge, hits, strict=True)):
            fh.write(json.dumps({"id": i, **c, "judge": round(float(s), 6),
                                 "dropped": "wordlist" if hit else None}) + "\n")
    return out


def load_templated(path: str | Path) -> list[dict[str, Any]]:
    """The templated lines, the dropped ones included (`dropped` says which)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def templated_summary(records: list[dict[str, Any]], seed: int, per_kind: int = 3
                      ) -> dict[str, dict[str, Any]]:
    """Per kind, for the report: lines made, kept, dropped by the word list, the share of kept
    lines `alt-profanity-check` calls toxic (>= 0.5), and a seeded sample of kept lines."""
    rng = random.Random(seed)
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({r["kind"] for r in records}):
        rows = [r for r in records if r["kind"] == kind]
        kept = [r for r in rows if r["dropped"] is None]
        flagged = sum(r["judge"] >= 0.5 for r in kept)
        out[kind] = {"category": rows[0]["category"], "lines": len(rows), "kept": len(kept),
                     "dropped_wordlist": len(rows) - len(kept),
                     "judge_flags": round(flagged / len(kept), 4) if kept else 0.0,
                     "samples": [r["line"] for r in rng.sample(kept, min(per_kind, len(kept)))]}
    return out
