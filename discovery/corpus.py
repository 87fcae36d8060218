"""The lexical corpus: SmolLM2's own text around neutral seeds and a profanity word list,
labelled by an independent judge. Built offline, seeded and resumable.

"Breaking Bad Tokens" finds toxicity features by running toxic text through an SAE. We have no
hand-written toxic text and no hub datasets, so the toxic material comes from the model itself:
it continues neutral frames around each word of `better-profanity`'s list and answers chat
requests that invite hostility; benign material is its answers and continuations on everyday
topics plus benign sentences that contain strong words (discovery/seeds.py). An
independent judge (discovery/judges.py) labels every text; our detector never does. This is
the lexical set: what it calls toxic is, nearly always, profanity. Insults, threats and
dehumanising remarks without swear words come from discovery/instructed.py (the model asked for
them) and discovery/templated.py (short hostile phrases in neutral frames).

Frames (templates, seed sentences) and subjects (words, topics) are split into selection and
held-out before generation (discovery/splits.py); a text is made only from a frame and a subject
on the same side.

Each record (one JSON line): id, batch, source, chat, frame, subject, split, text (exactly what
the model reads, chat template included), visible (what a person would read: what the judges
score), judge (the labelling judge's score). `load_corpus` adds label (1 toxic, 0 benign, None
unsure: `label_for`), category (profanity, benign, benign-hard) and word_list (whether a word of
the profanity list occurs in `visible`).
"""

from __future__ import annotations

import ast
import logging
import random
import sysconfig
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from discovery import seeds
from discovery.generation import Sampling, generate_jsonl, read_jsonl
from discovery.judges import get_judge
from discovery.splits import Side, assign_sides, combos_by_side
from discovery.wordlist import profanity_words

__all__ = [
    "CorpusSpec",
    "PromptSpec",
    "build_corpus",
    "corpus_stats",
    "docstring_texts",
    "known_words",
    "label_for",
    "load_corpus",
    "prompt_specs",
]

logger = logging.getLogger(__name__)

# Labels. Toxic: the judge's score is at least TOXIC_AT. Benign: at most BENIGN_AT *and* no word
# of the profanity list occurs. The rest is left out of selection and evaluation as unsure: the
# judge's classifier has never seen most spelling variants on the list ("You are such a fucker"
# scores 0.08), so a list word it calls clean is the classifier's blind spot, not a benign text.
TOXIC_AT = 0.7
BENIGN_AT = 0.3


@dataclass(frozen=True)
class CorpusSpec:
    """How big the corpus is and how it splits. `scale` shrinks every source (tests use a tiny corpus)."""

    seed: int = 0
    scale: float = 1.0
    max_new_tokens: int = 32
    batch_size: int = 64
    temperature: float = 1.0
    top_p: float = 0.95
    judge: str = "alt-profanity-check"
    heldout_fraction: float = 0.4  # of every pool of frames and of subjects (discovery/splits.py)

    def sampling(self, max_new_tokens: int | None = None) -> Sampling:
        return Sampling(seed=self.seed, max_new_tokens=max_new_tokens or self.max_new_tokens,
                        batch_size=self.batch_size, temperature=self.temperature, top_p=self.top_p)


@dataclass(frozen=True)
class PromptSpec:
    source: str
    prompt: str  # model input; for chat, the chat template applied
    visible: str  # the part of the prompt a reader sees (the user message for chat)
    chat: bool
    frame: str  # the template or seed sentence
    subject: str  # the word or topic it was filled with ("" for none)
    split: Side


def label_for(score: float, word_list_hit: bool) -> int | None:
    if score >= TOXIC_AT:
        return 1
    if score <= BENIGN_AT and not word_list_hit:
        return 0
    return None


def known_words(words: Sequence[str], judge: str) -> list[str]:
    """The words `judge` itself calls toxic on their own (score >= 0.5). Most of the profanity
    list are spelling variants the classifier has never seen; a text built on one of those would
    be "benign" by its labels, so texts meant to be toxic are built on these."""
    return [w for w, score in zip(words, get_judge(judge).score(words), strict=True) if score >= 0.5]


def _n(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def prompt_specs(spec: CorpusSpec, tokenizer: Any) -> list[PromptSpec]:
    """Every prompt of the corpus, in a fixed order for a given spec."""
    rng = random.Random(spec.seed)
    words = profanity_words()
    topics = list(seeds.BENIGN_TOPICS)
    f, seed = spec.heldout_fraction, spec.seed
    word_side = assign_sides(words, f, seed, "words")
    topic_side = assign_sides(topics, f, seed, "topics")

    def frames(pool: str, templates: Sequence[str]) -> dict[Side, list[str]]:
        sides = assign_sides(templates, f, seed, pool)
        return {side: [t for t in templates if sides[t] == side] for side in ("selection", "heldout")}

    def chat(user: str) -> tuple[str, str]:
        messages = [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), user

    out: list[PromptSpec] = []
    word_frames = frames("word_frames", seeds.WORD_FRAMES)
    for i, word in enumerate(rng.sample(words, _n(len(words), spec.scale))):
        side = word_side[word]
        frame = rng.choice(word_frames[side])
        text = frame.format(word=word, n=i)
        out.append(PromptSpec("wordlist", text, text, False, frame, word, side))
    hostile = frames("hostile_instructions", seeds.HOSTILE_INSTRUCTIONS)
    topics_by = {s: [t for t in topics if topic_side[t] == s] for s in ("selection", "heldout")}
    for _ in range(_n(300, spec.scale)):
        word = rng.choice(words)
        side = word_side[word]
        frame = rng.choice(hostile[side])
        prompt, user = chat(frame.format(topic=rng.choice(topics_by[side]), word=word))
        out.append(PromptSpec("hostile_chat", prompt, user, True, frame, word, side))
    sides = assign_sides(seeds.CHAT_INSTRUCTIONS, f, seed, "chat_instructions")
    combos = combos_by_side(sides, topic_side)
    for frame, topic, side in rng.sample(combos, _n(len(combos), spec.scale)):
        prompt, user = chat(frame.format(topic=topic))
        out.append(PromptSpec("benign_chat", prompt, user, True, frame, topic, side))
    sides = assign_sides(seeds.CONTINUATION_OPENERS, f, seed, "continuation_openers")
    combos = combos_by_side(sides, topic_side)
    for frame, topic, side in rng.sample(combos, _n(len(combos), spec.scale)):
        text = frame.format(topic=topic)
        out.append(PromptSpec("benign_continuation", text, text, False, frame, topic, side))
    sides = assign_sides(seeds.HARD_NEGATIVES, f, seed, "hard_negatives")
    for sentence in rng.sample(seeds.HARD_NEGATIVES, _n(len(seeds.HARD_NEGATIVES), spec.scale)):
        for _ in range(4):  # four samples each: the same prompt, different continuations
            out.append(PromptSpec("hard_negative", sentence, sentence, False, sentence, "", sides[sentence]))
    # Aimed at a person: the words the judge itself recognises.
    known = known_words(words, spec.judge)
    insult = frames("insult_frames", seeds.INSULT_FRAMES)
    for i in range(_n(700, spec.scale)):
        word = rng.choice(known or words)
        side = word_side[word]
        frame = rng.choice(insult[side])
        text = frame.format(word=word, n=i)
        out.append(PromptSpec("wordlist_insult", text, text, False, frame, word, side))
    return out


def build_corpus(model_dir: str | Path, out: str | Path, spec: CorpusSpec) -> Path:
    """Generate, judge and write the corpus to `out` (JSONL); resumes a partial file batch by batch."""
    from transformers import AutoTokenizer

    specs = prompt_specs(spec, AutoTokenizer.from_pretrained(model_dir))
    judge = get_judge(spec.judge)

    def records(batch: Sequence[PromptSpec], completions: list[str], *_: Any) -> list[dict[str, Any]]:
        visible = [p.visible + ("\n" if p.chat else "") + c for p, c in zip(batch, completions, strict=True)]
        scores = judge.score(visible)
        return [{"source": p.source, "chat": p.chat, "frame": p.frame, "subject": p.subject, "split": p.split,
                 "text": p.prompt + c, "visible": v, "judge": round(s, 6)}
                for p, c, v, s in zip(batch, completions, visible, scores, strict=True)]

    return generate_jsonl(model_dir, Path(out), specs, lambda p: p.prompt, lambda p: [p.source, p.prompt, p.split],
                          records, spec.sampling(), asdict(spec), "corpus: generating")


def load_corpus(path: str | Path) -> list[dict[str, Any]]:
    """The records of a corpus file, ordered by id, with `word_list`, `label` (see `label_for`) and `category`."""
    by_id = {r["id"]: r for r in read_jsonl(Path(path))}
    records = [by_id[i] for i in sorted(by_id)]
    hits = get_judge("better-profanity").score([r["visible"] for r in records])
    for r, hit in zip(records, hits, strict=True):
        r["word_list"] = bool(hit)
        r["label"] = label_for(r["judge"], bool(hit))
        r["category"] = None if r["label"] is None else "profanity" if r["label"] == 1 else \
            "benign-hard" if r["source"] == "hard_negative" else "benign"
    return records


def docstring_texts(max_texts: int, seed: int = 0, min_chars: int = 200, max_chars: int = 1200) -> list[str]:
    """Docstrings of the Python standard library: plenty of benign English, on every machine.

    Used only to give the SAE more (unlabelled) tokens to learn from. Deterministic for a given
    Python version: files in sorted order, then a seeded sample.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).parts
        if any(p in {"test", "tests", "idlelib", "site-packages", "lib2to3"} for p in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and min_chars <= len(doc):
                    texts.append(doc[:max_chars])
    rng = random.Random(seed)
    rng.shuffle(texts)
    return texts[:max_texts]


def corpus_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per source and label, for logs and the model card."""
    stats: dict[str, dict[str, int]] = {}
    for r in records:
        s = stats.setdefault(r["source"], {"texts": 0, "toxic": 0, "benign": 0, "unsure": 0})
        s["texts"] += 1
        s[{1: "toxic", 0: "benign", None: "unsure"}[r["label"]]] += 1
    return stats
