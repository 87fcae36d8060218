"""The discovery corpus: SmolLM2's own text around neutral seeds and a profanity word list,
labelled by an independent judge. Built offline, seeded and resumable.

"Breaking Bad Tokens" finds toxicity features by running toxic text through an SAE. We have no
hand-written toxic text and no hub datasets, so the toxic material comes from the model itself:
it continues neutral frames around each word of `better-profanity`'s list and answers chat
requests that invite hostility; benign material is its answers and continuations on everyday
topics plus benign sentences that contain strong words (discovery/seeds.py). An
independent judge (discovery/judges.py) labels every text; our detector never does.

Each record (one JSON line): id, batch, source, chat, text (exactly what the model reads, chat
template included), visible (what a person would read: what the judges score), judge (the
labelling judge's score). `load_corpus` adds label (1 toxic, 0 benign, None unsure: `label_for`)
and word_list (whether a word of the profanity list occurs in `visible`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from discovery import seeds
from discovery.judges import get_judge

__all__ = [
    "CorpusSpec",
    "corpus_stats",
    "PromptSpec",
    "build_corpus",
    "docstring_texts",
    "label_for",
    "load_corpus",
    "profanity_words",
    "prompt_specs",
]

logger = logging.getLogger(__name__)

# Labels. Toxic: the judge's score is at least TOXIC_AT. Benign: at most BENIGN_AT *and* no word
# of the profanity list occurs. The rest is left out of selection and evaluation as unsure: the
# judge's classifier has never seen most spelling variants on the list ("You are such a fucker"
# scores 0.08), so a list word it calls clean is the classifier's blind spot, not a benign text.
# Benign texts that merely contain strong words are measured on their own (hard negatives).
TOXIC_AT = 0.7
BENIGN_AT = 0.3


@dataclass(frozen=True)
class CorpusSpec:
    """How big the corpus is. `scale` shrinks every source (tests use a tiny corpus)."""

    seed: int = 0
    scale: float = 1.0
    max_new_tokens: int = 32
    batch_size: int = 64
    temperature: float = 1.0
    top_p: float = 0.95
    judge: str = "alt-profanity-check"


@dataclass(frozen=True)
class PromptSpec:
    source: str
    prompt: str  # model input; for chat, the chat template applied
    visible: str  # the part of the prompt a reader sees (the user message for chat)
    chat: bool


def label_for(score: float, word_list_hit: bool) -> int | None:
    if score >= TOXIC_AT:
        return 1
    if score <= BENIGN_AT and not word_list_hit:
        return 0
    return None


def profanity_words() -> list[str]:
    """The alphabetic entries of better-profanity's word list, in file order."""
    import better_profanity

    path = Path(better_profanity.__file__).parent / "profanity_wordlist.txt"
    words = [w.strip() for w in path.read_text().split()]
    return list(dict.fromkeys(w for w in words if w.isalpha()))


def _n(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def prompt_specs(spec: CorpusSpec, tokenizer: Any) -> list[PromptSpec]:
    """Every prompt of the corpus, in a fixed order for a given spec."""
    rng = random.Random(spec.seed)
    words = profanity_words()
    topics = list(seeds.BENIGN_TOPICS)

    def chat(source: str, user: str) -> PromptSpec:
        messages = [{"role": "user", "content": user}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return PromptSpec(source, prompt, user, chat=True)

    out: list[PromptSpec] = []
    for i, word in enumerate(rng.sample(words, _n(len(words), spec.scale))):
        text = rng.choice(seeds.WORD_FRAMES).format(word=word, n=i)
        out.append(PromptSpec("wordlist", text, text, chat=False))
    for _ in range(_n(300, spec.scale)):
        user = rng.choice(seeds.HOSTILE_INSTRUCTIONS).format(topic=rng.choice(topics), word=rng.choice(words))
        out.append(chat("hostile_chat", user))
    combos = [(t, c) for t in topics for c in seeds.CHAT_INSTRUCTIONS]
    for topic, template in rng.sample(combos, _n(len(combos), spec.scale)):
        out.append(chat("benign_chat", template.format(topic=topic)))
    combos = [(t, c) for t in topics for c in seeds.CONTINUATION_OPENERS]
    for topic, template in rng.sample(combos, _n(len(combos), spec.scale)):
        text = template.format(topic=topic)
        out.append(PromptSpec("benign_continuation", text, text, chat=False))
    for sentence in rng.sample(seeds.HARD_NEGATIVES, _n(len(seeds.HARD_NEGATIVES), spec.scale)):
        for _ in range(4):  # four samples each: the same prompt, different continuations
            out.append(PromptSpec("hard_negative", sentence, sentence, chat=False))
    # Aimed at a person: the words the judge itself recognises (most of the list are spelling
    # variants it has never seen, which would make these texts "benign" by its labels).
    known = [w for w, score in zip(words, get_judge(spec.judge).score(words), strict=True) if score >= 0.5]
    for i in range(_n(700, spec.scale)):
        text = rng.choice(seeds.INSULT_FRAMES).format(word=rng.choice(known or words), n=i)
        out.append(PromptSpec("wordlist_insult", text, text, chat=False))
    return out


def _batches(specs: list[PromptSpec], size: int) -> Iterator[tuple[int, list[PromptSpec]]]:
    for b, start in enumerate(range(0, len(specs), size)):
        yield b, specs[start : start + size]


def _batch_key(batch: list[PromptSpec], spec: CorpusSpec) -> str:
    """What a batch's records depend on: a resumed run reuses a batch only if this matches."""
    material = json.dumps([[p.source, p.prompt] for p in batch] + [spec.__dict__], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@torch.no_grad()
def _generate(model: Any, tokenizer: Any, batch: list[PromptSpec], spec: CorpusSpec, seed: int) -> list[str]:
    """Sampled continuations of each prompt (special tokens and the end marker removed)."""
    enc = tokenizer([p.prompt for p in batch], return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    out = model.generate(
        **enc,
        max_new_tokens=spec.max_new_tokens,
        do_sample=True,
        temperature=spec.temperature,
        top_p=spec.top_p,
        pad_token_id=tokenizer.pad_token_id,
    )  # (B, S + new)
    new = out[:, enc["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new]


def build_corpus(model_dir: str | Path, out: str | Path, spec: CorpusSpec) -> Path:
    """Generate, judge and write the corpus to `out` (JSONL); resumes a partial file batch by batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    specs = prompt_specs(spec, tokenizer)
    batches = [(b, batch, _batch_key(batch, spec)) for b, batch in _batches(specs, spec.batch_size)]
    wanted = {(b, key) for b, _, key in batches}
    # Keep the records of batches that are still part of this corpus, drop the rest (a changed
    # spec or seed list), then generate whatever is missing.
    kept = [r for r in _read_jsonl(out) if (r["batch"], r.get("batch_key")) in wanted] if out.exists() else []
    sizes = {key: len(batch) for _, batch, key in batches}
    counts: dict[tuple[int, str], int] = {}
    for r in kept:
        counts[(r["batch"], r["batch_key"])] = counts.get((r["batch"], r["batch_key"]), 0) + 1
    done = {bk for bk, n in counts.items() if n == sizes[bk[1]]}  # a torn batch is redone whole
    kept = [r for r in kept if (r["batch"], r["batch_key"]) in done]
    if done == wanted:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    tmp.replace(out)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    judge = get_judge(spec.judge)
    with out.open("a") as f, tqdm(total=len(specs), desc="corpus: generating", unit="text") as bar:
        for b, batch, key in batches:
            if (b, key) in done:
                bar.update(len(batch))
                continue
            completions = _generate(model, tokenizer, batch, spec, seed=spec.seed * 1_000_003 + b)
            visible = [p.visible + ("\n" if p.chat else "") + c for p, c in zip(batch, completions, strict=True)]
            scores = judge.score(visible)
            lines = []
            for i, (p, c, v, s) in enumerate(zip(batch, completions, visible, scores, strict=True)):
                record = {"id": b * spec.batch_size + i, "batch": b, "batch_key": key, "source": p.source,
                          "chat": p.chat, "text": p.prompt + c, "visible": v, "judge": round(s, 6)}
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            f.write("".join(lines))  # one write per batch: a crash loses at most the batch in flight
            f.flush()
            bar.update(len(batch))
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line from a crash: that batch is redone
            break
    return records


def load_corpus(path: str | Path) -> list[dict[str, Any]]:
    """The records of a corpus file, ordered by id, with `word_list` and `label` (see `label_for`)."""
    by_id = {r["id"]: r for r in _read_jsonl(Path(path))}
    records = [by_id[i] for i in sorted(by_id)]
    hits = get_judge("better-profanity").score([r["visible"] for r in records])
    for r, hit in zip(records, hits, strict=True):
        r["word_list"] = bool(hit)
        r["label"] = label_for(r["judge"], bool(hit))
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

