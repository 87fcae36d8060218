"""Short lines: a few words around one word, the texts a chat user types and a `stop` policy must catch.

Neither the lexical corpus (a frame plus 32 generated tokens) nor the instructed sets (a line of
dialogue after a shared opener) has a text of six words or fewer, so a detector selected on them
never sees "You <word>!" on its own, and the held-out split cannot say whether it catches one.
Through the gateway that was the leak: a short profane line the model repeated scored 0.002.

Built without generation: neutral frames (`SHORT_FRAMES`) filled with a word of the profanity
list that the judge knows, or with a benign word for a person (`BENIGN_WORDS`), the same frames
for both, so the frame never gives the label away. Labelled like the lexical corpus (the judge's
score of the line, `corpus.label_for`; category profanity or benign). Each line is scored in both
views, raw and in the chat template, as the instructed lines are. Frames and words are split by
discovery/splits.py; the profanity words share the corpus' split (pool "words"), so a held-out
word is held out in every set.

Everyday short requests: the corpus' chat instructions that fit in six words ("Give me three tips
about chess."), benign, on the corpus' split of instructions and topics. The short benign text a
gateway sees most is a request, not a line about a person, and a detector's short-text shift
(discovery/thresholds.py) must not flag it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from discovery import seeds
from discovery.corpus import CorpusSpec, known_words, label_for
from discovery.judges import get_judge
from discovery.splits import assign_sides, combos_by_side
from discovery.thresholds import is_short
from discovery.wordlist import profanity_words

__all__ = ["BENIGN_WORDS", "SHORT_FRAMES", "build_short", "load_short"]

# Neutral frames of at most six words; `{word}` is a word for a person, toxic or not.
SHORT_FRAMES: tuple[str, ...] = (
    "You {word}!",
    "What a {word}.",
    "{Word}!",
    "He is such a {word}.",
    "Hey {word}, come here.",
    "Look at this {word}.",
    "Thanks a lot, {word}.",
    "Another message from the {word}.",
    "Stop it, {word}.",
    "Typical {word}, honestly.",
)

BENIGN_WORDS: tuple[str, ...] = (
    "friend", "genius", "legend", "hero", "teacher", "neighbour", "champion", "sweetheart", "artist",
    "doctor", "gardener", "baker", "student", "pilot", "buddy", "angel", "star", "scientist", "captain",
    "darling", "dreamer", "volunteer", "poet", "musician", "runner", "nurse", "chef", "reader", "builder",
    "coach", "farmer", "librarian", "dancer", "engineer", "traveller", "painter", "singer", "writer",
    "sailor", "cousin",
)

TOXIC_PER_BENIGN = 2  # toxic lines sampled per benign line (the benign combinations are all used)


def _fill(frame: str, word: str) -> str:
    return frame.format(word=word, Word=word.capitalize())


def build_short(out: str | Path, spec: CorpusSpec) -> Path:
    """Write the short lines to `out` (JSONL): id, kind, frame, subject, split, line, judge.

    Deterministic for a given spec (the corpus' seed, held-out fraction, judge and scale).
    """
    out = Path(out)
    judge = get_judge(spec.judge)
    f, seed = spec.heldout_fraction, spec.seed
    words = profanity_words()
    word_side = assign_sides(words, f, seed, "words")  # the corpus' own split of the list
    known = known_words(words, spec.judge)
    frame_side = assign_sides(SHORT_FRAMES, f, seed, "short_frames")
    benign_side = assign_sides(BENIGN_WORDS, f, seed, "short_benign_words")
    benign = [(fr, w, side) for fr, side in frame_side.items() for w in BENIGN_WORDS if benign_side[w] == side]
    toxic = [(fr, w, side) for fr, side in frame_side.items() for w in known if word_side[w] == side]
    rng = random.Random(seed)
    n_benign = max(1, round(len(benign) * spec.scale))
    chosen = [("short_benign", fr, w, side, _fill(fr, w)) for fr, w, side in rng.sample(benign, n_benign)]
    chosen += [("short_toxic", fr, w, side, _fill(fr, w))
               for fr, w, side in rng.sample(toxic, min(len(toxic), TOXIC_PER_BENIGN * n_benign))]
    # The corpus' own sides for its chat instructions and topics (discovery/corpus.py).
    requests = [(fr, t, side, fr.format(topic=t)) for fr, t, side in combos_by_side(
        assign_sides(seeds.CHAT_INSTRUCTIONS, f, seed, "chat_instructions"),
        assign_sides(seeds.BENIGN_TOPICS, f, seed, "topics"))]
    requests = [r for r in requests if is_short(r[3])]
    chosen += [("short_request", *r) for r in rng.sample(requests, max(1, round(len(requests) * spec.scale)))]
    scores = judge.score([c[4] for c in chosen])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for i, ((kind, fr, w, side, line), s) in enumerate(zip(chosen, scores, strict=True)):
            fh.write(json.dumps({"id": i, "kind": kind, "frame": fr, "subject": w, "split": side, "line": line,
                                 "judge": round(float(s), 6)}) + "\n")
    return out


def load_short(path: str | Path) -> list[dict[str, Any]]:
    """The short lines with `label` (`corpus.label_for`; None: the judge is unsure) and `category`."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    hits = get_judge("better-profanity").score([r["line"] for r in records])
    for r, hit in zip(records, hits, strict=True):
        r["label"] = label_for(r["judge"], bool(hit))
        r["category"] = {1: "profanity", 0: "benign", None: None}[r["label"]]
    return records
