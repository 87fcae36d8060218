"""Rebuild the evaluation's prompt sets under evals/data/ (seeded: the same files every run).

    .venv/bin/python -m evals.build_sets [--seed 0] [--out evals/data]

Writes, per split (`dev`: what the tier calibration tunes on; `test`: what the README's table reports):
- toxic.jsonl   toxic-leaning prefixes: words of `better-profanity`'s list that the judge itself
                recognises, in neutral frames the discovery corpus never uses, plus chat requests
                that invite a hostile answer without naming a word. No hand-written slurs.
- benign.jsonl  everyday prefixes and chat requests on topics the discovery corpus never uses, plus
                benign sentences that merely contain strong words ("kill the heat").
- mc.jsonl      the general-ability set: cloze items with four options built from facts written
                for this project (sequences, arithmetic, capitals, antonyms, irregular forms; no
                third-party data), half of each kind per split.

Disjoint from everything that picked the detector's features (discovery/seeds.py and the
discovery corpus's prompts): no frame, topic or prompt is shared (tests/evals/test_sets.py).
Record fields: prompt, chat (send as a user message), kind, and for mc: options, answer.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from evals import seeds

__all__ = ["build_all", "main", "mc_items"]

DATA_DIR = Path(__file__).parent / "data"
SPLITS = ("dev", "test")
PER_SPLIT = 40  # toxic-leaning and benign prompts per split


def _known_words(judge: str = "alt-profanity-check") -> list[str]:
    """The word-list entries the judge itself scores as toxic on their own."""
    from discovery.corpus import profanity_words
    from discovery.judges import TOXIC_AT, get_judge

    words = profanity_words()
    return [w for w, s in zip(words, get_judge(judge).score(words), strict=True) if s >= TOXIC_AT]


def toxic_prompts(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """2n toxic-leaning prompts: 3/4 word-list frames, 1/4 hostile chat requests."""
    words = _known_words()
    out: list[dict[str, Any]] = []
    n_chat = (2 * n) // 4
    seen: set[str] = set()
    while len(out) < 2 * n - n_chat:
        text = rng.choice(seeds.TOXIC_FRAMES).format(word=rng.choice(words))
        if text not in seen:
            seen.add(text)
            out.append({"prompt": text, "chat": False, "kind": "word_frame"})
    combos = [(r, s) for r in seeds.HOSTILE_REQUESTS for s in seeds.HOSTILE_SITUATIONS]
    for request, situation in rng.sample(combos, n_chat):
        out.append({"prompt": request.format(situation=situation), "chat": True, "kind": "hostile_chat"})
    return out


def benign_prompts(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """2n benign prompts: everyday continuations and chat requests, and strong-word sentences."""
    n_strong = min(len(seeds.STRONG_WORD_SENTENCES), (2 * n) // 5)
    n_chat = (2 * n - n_strong) // 2
    n_plain = 2 * n - n_strong - n_chat
    plain = rng.sample([(o, t) for o in seeds.OPENERS for t in seeds.TOPICS], n_plain)
    chat = rng.sample([(r, t) for r in seeds.REQUESTS for t in seeds.TOPICS], n_chat)
    return ([{"prompt": o.format(topic=t), "chat": False, "kind": "everyday"} for o, t in plain]
            + [{"prompt": r.format(topic=t), "chat": True, "kind": "everyday_chat"} for r, t in chat]
            + [{"prompt": s, "chat": False, "kind": "strong_words"}
               for s in rng.sample(seeds.STRONG_WORD_SENTENCES, n_strong)])


def _split(rng: random.Random, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Half to dev, half to test, stratified by kind."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for kind in sorted(by_kind):
        group = by_kind[kind]
        rng.shuffle(group)
        half = len(group) // 2
        out["dev"] += group[:half]
        out["test"] += group[half:]
    return out


def _options(rng: random.Random, answer: str, pool: list[str]) -> tuple[list[str], int]:
    """Four options: the answer and three distractors from the same pool, shuffled."""
    distractors = rng.sample([p for p in dict.fromkeys(pool) if p != answer], 3)
    options = [answer, *distractors]
    rng.shuffle(options)
    return options, options.index(answer)


def mc_items(rng: random.Random) -> list[dict[str, Any]]:
    """Cloze items (prompt, options, answer index); each option continues the prompt after a space."""
    items: list[dict[str, Any]] = []

    def add(kind: str, prompt: str, answer: str, pool: list[str]) -> None:
        options, answer_index = _options(rng, answer, pool)
        items.append({"prompt": prompt, "options": options, "answer": answer_index, "kind": kind})

    for name, seq in seeds.SEQUENCES.items():
        for i in range(3, len(seq)):
            add(f"sequence_{name}", ", ".join(seq[i - 3 : i]) + ",", seq[i], list(seq))
    numbers = [str(k) for k in range(2, 40)]
    for _ in range(60):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        add("arithmetic", f"{a} + {b} =", str(a + b), numbers)
    capitals = list(seeds.CAPITALS.values())
    for country, city in seeds.CAPITALS.items():
        add("capital", f"The capital of {country} is", city, capitals)
    opposites = [b for _, b in seeds.ANTONYMS]
    for a, b in seeds.ANTONYMS:
        add("antonym", f"The opposite of {a} is", b, opposites)
    plurals = [p for _, p in seeds.PLURALS]
    for s, p in seeds.PLURALS:
        add("plural", f"One {s}, two", p, plurals)
    pasts = [p for _, p in seeds.PAST_TENSES]
    for v, p in seeds.PAST_TENSES:
        add("past_tense", f"Today I {v}; yesterday I", p, pasts)
    return items


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def build_all(out: Path = DATA_DIR, seed: int = 0) -> dict[str, int]:
    """Write every set under `out`; returns the number of records per file."""
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    for name, records in (("toxic", toxic_prompts(rng, PER_SPLIT)), ("benign", benign_prompts(rng, PER_SPLIT))):
        for split, part in _split(rng, records).items():
            _write(out / split / f"{name}.jsonl", part)
            counts[f"{split}/{name}.jsonl"] = len(part)
    # The cloze items split too: the calibration checks its ability bound on dev's, the report uses test's.
    for split, part in _split(rng, mc_items(rng)).items():
        _write(out / split / "mc.jsonl", part)
        counts[f"{split}/mc.jsonl"] = len(part)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.build_sets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="directory to write (default evals/data)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = parser.parse_args(argv)
    for name, n in build_all(args.out, args.seed).items():
        print(f"{args.out / name}: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
