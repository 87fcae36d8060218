"""Batched, seeded, resumable generation with SmolLM2 (transformers, CPU) into a JSONL file.

Both generated sets (the lexical corpus, discovery/corpus.py, and the instructed sets,
discovery/instructed.py) go through `generate_jsonl`: prompts run in fixed batches, each batch
seeded by its index; a batch's records are written in one write, keyed by a hash of everything
they depend on, so an interrupted or changed run regenerates only the batches that are missing
or stale (a torn batch is redone whole).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

__all__ = ["Sampling", "generate_jsonl", "read_jsonl"]


@dataclass(frozen=True)
class Sampling:
    seed: int = 0
    max_new_tokens: int = 32
    batch_size: int = 64
    temperature: float = 1.0
    top_p: float = 0.95


# (batch of prompt objects, their completions, model, tokenizer) -> one record per prompt (without
# id/batch fields); the model is there for filters that score the completions.
MakeRecords = Callable[[Sequence[Any], list[str], Any, Any], list[dict[str, Any]]]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line from a crash: that batch is redone
            break
    return records


def _batch_key(material: list[Any], context: Any) -> str:
    """What a batch's records depend on: a resumed run reuses a batch only if this matches."""
    blob = json.dumps([material, context], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def _generate(model: Any, tokenizer: Any, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
    """Sampled continuations of each prompt (special tokens and the end marker removed)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    out = model.generate(
        **enc, max_new_tokens=sampling.max_new_tokens, do_sample=True, temperature=sampling.temperature,
        top_p=sampling.top_p, pad_token_id=tokenizer.pad_token_id,
    )  # (B, S + new)
    new = out[:, enc["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new]


def generate_jsonl(
    model_dir: str | Path,
    out: Path,
    items: Sequence[Any],
    prompt_of: Callable[[Any], str],
    key_of: Callable[[Any], Any],
    make_records: MakeRecords,
    sampling: Sampling,
    context: Any,
    desc: str,
) -> Path:
    """Generate a completion for every item and write `make_records`' records to `out` (JSONL).

    `prompt_of(item)` is the model input; `key_of(item)` and `context` are what a record depends
    on besides the sampling (they make the batch key). Each record gets `id` (the item's index),
    `batch` and `batch_key`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    size = sampling.batch_size
    batches = [(b, list(items[s : s + size])) for b, s in enumerate(range(0, len(items), size))]
    keys = {b: _batch_key([key_of(i) for i in batch], [context, sampling.__dict__]) for b, batch in batches}
    kept = [r for r in read_jsonl(out) if keys.get(r["batch"]) == r.get("batch_key")] if out.exists() else []
    counts: dict[int, int] = {}
    for r in kept:
        counts[r["batch"]] = counts.get(r["batch"], 0) + 1
    done = {b for b, batch in batches if counts.get(b) == len(batch)}
    kept = [r for r in kept if r["batch"] in done]
    if len(done) == len(batches):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    tmp.replace(out)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with out.open("a") as f, tqdm(total=len(items), desc=desc, unit="text") as bar:
        for b, batch in batches:
            if b in done:
                bar.update(len(batch))
                continue
            completions = _generate(model, tokenizer, [prompt_of(i) for i in batch], sampling,
                                    seed=sampling.seed * 1_000_003 + b)
            records = make_records(batch, completions, model, tokenizer)
            lines = [json.dumps({"id": b * size + i, "batch": b, "batch_key": keys[b], **r}, ensure_ascii=False)
                     + "\n" for i, r in enumerate(records)]
            f.write("".join(lines))  # one write per batch: a crash loses at most the batch in flight
            f.flush()
            bar.update(len(batch))
    return out
