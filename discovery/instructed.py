"""Labelled data beyond the lexicon: SmolLM2 asked for insults, threats, dehumanising remarks and
sarcastic put-downs, and, for the same subjects in the same frames, compliments, neutral
descriptions, polite disagreement and criticism; plus hard negatives (moderation notes, reported
speech, definitions, strong words in benign senses, bad reviews, sad news). The instruction is
the label. Seeded, resumable, offline.

Each request is a chat: a system prompt asking for one line of dialogue, the instruction with a
subject ("Insult the referee harshly."), and the assistant's turn prefilled with an opening quote
and an opener that every contrast kind shares ('"Listen, the referee,'). The model writes the
rest; the *line* (opener + what it wrote, up to the closing quote) is the text that gets
labelled and scored. The instruction never is: it would give the label away. With
`InstructedSpec.shots` > 0, the chat first shows that many earlier requests of the same kind, for
other subjects, answered with short lines of the kind (`exemplar_pools`: templated lines of the
category, or plain written ones; from the request's own side of the split): zero-shot,
SmolLM2-135M mostly ignores a hostile instruction.

The filter (`FILTER_RULES`, in order; the first that applies drops the output):
1. incomplete: no closing quote and no sentence end in what the model wrote;
2. too short: fewer than MIN_WORDS words after the opener;
3. refusal (toxic kinds only): an apology, "I can't", "as an AI", "inappropriate", ...;
4. meta: the line talks about the task (script, director, scene, "insult", "compliment", ...);
5. off-task: the model's own likelihood. The written part is scored (mean log-probability per
   token) under its own instruction and under each instruction of the opposite label for the
   same subject, frame and system prompt (`_RIVALS`); it is kept only if its own instruction
   explains it best, by at least `margin` (0.15 nats per token: reading samples, a margin of 0
   kept many "insults" that were small talk). A "threat" that reads like a compliment is more likely under
   the compliment instruction and is dropped; so is a "compliment" that reads like an insult.
   This uses the language model, not our detector, and never an outside toxicity judge (a
   lexical judge would bring back the lexical bias this set exists to remove).

Frames (openers) and subjects are split before generation (discovery/splits.py).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from discovery.defaults import INSTRUCTED_SCALE, INSTRUCTED_SHOTS
from discovery.generation import Sampling, generate_jsonl, read_jsonl
from discovery.instructed_seeds import (
    CONTRAST_KINDS,
    CONTRAST_OPENERS,
    GROUPS,
    HARD_KINDS,
    PEOPLE,
    SYSTEM_PROMPTS,
    TEMPLATED_EXEMPLARS,
    WRITTEN_EXEMPLARS,
    Kind,
)
from discovery.splits import HELDOUT, SELECTION, Side, assign_sides, combos_by_side
from discovery.templated import TEMPLATES, fill, template_combos

__all__ = ["FILTER_RULES", "FILTER_VERSION", "KINDS", "Ask", "InstructedSpec", "asks", "build_instructed",
           "exemplar_pools", "extract_line", "load_instructed", "rivals", "rule_out"]

KINDS: dict[str, Kind] = {k.name: k for k in CONTRAST_KINDS + HARD_KINDS}
MIN_WORDS = 3
BENIGN_SHARE = 1 / 8  # benign kinds' share of the grid, relative to the toxic kinds'
FILTER_RULES = ("incomplete", "too short", "refusal", "meta", "off-task")

_REFUSAL = re.compile(
    r"\b(I'?m sorry|I am sorry|I apologi[sz]e|I can'?t|I cannot|I won'?t|I will not|as an AI|"
    r"not appropriate|inappropriate|not comfortable|I must decline|respectful)\b", re.IGNORECASE)
_META_ANY = re.compile(r"\b(script|director|film|movie|scene|screenplay|novel|character|dialogue)\b", re.IGNORECASE)
_META_CONTRAST = re.compile(
    r"\b(sentence|remark|compliment\w*|insult\w*|threat\w*|sarcas\w*|dehumani[sz]\w*|put-down|criticism|"
    r"mock\w*)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(frozen=True)
class InstructedSpec:
    seed: int = 0
    scale: float = INSTRUCTED_SCALE  # share of the toxic kinds' (frame, subject) combinations asked for
    samples: int = 1  # outputs per combination
    max_new_tokens: int = 40
    batch_size: int = 48
    temperature: float = 0.8
    top_p: float = 0.95
    heldout_fraction: float = 0.4  # of openers and of subjects (discovery/splits.py)
    margin: float = 0.15  # nats per token the own instruction must win by (filter rule 5)
    shots: int = INSTRUCTED_SHOTS  # exemplar answers shown before each contrast-kind request (0: zero-shot)

    def sampling(self) -> Sampling:
        return Sampling(seed=self.seed, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                        temperature=self.temperature, top_p=self.top_p)


@dataclass(frozen=True)
class Ask:
    kind: str
    frame: str  # the opener template
    subject: str
    split: Side
    system: str
    variant: int  # which instruction paraphrase (the contrast instructions use the same index)
    shots: tuple[tuple[str, str], ...] = ()  # (instruction, answer line) turns shown before the request

    @property
    def opener(self) -> str:
        return self.frame.format(s=self.subject, S=self.subject[:1].upper() + self.subject[1:])

    def instruction(self, kind: Kind | None = None, subject: str | None = None) -> str:
        paraphrases = (kind or KINDS[self.kind]).instructions
        return paraphrases[self.variant % len(paraphrases)].format(s=subject or self.subject)

    def prompt(self, tokenizer: Any, kind: Kind | None = None, with_shots: bool = True) -> str:
        """Chat template (system, the shots as earlier turns, user instruction), the assistant's turn
        opened with a quote and the opener. Rule 5 asks without shots: it compares instructions, and
        the shots belong to one of them."""
        messages = [{"role": "system", "content": self.system}]
        for instruction, line in self.shots if with_shots else ():
            messages += [{"role": "user", "content": instruction},
                         {"role": "assistant", "content": f'"{line}"'}]
        messages.append({"role": "user", "content": self.instruction(kind)})
        head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return head + '"' + self.opener


# The instructions an output is compared with (rule 5), by the output's own label: two of the
# opposite label, the plainest ones (three forwards per output; comparing with all four of the
# opposite label cost twice that). Until 2026-11-27 the lookup took the other label's entry, so
# toxic lines were compared with toxic instructions and benign with benign (FILTER_VERSION 1).
_RIVALS = {1: ("compliment", "neutral description"), 0: ("insult", "threat")}
FILTER_VERSION = 2  # in every batch key: a set filtered by an older rule 5 is made again


def rivals(kind: Kind) -> list[Kind]:
    """The opposite-label instructions rule 5 compares an output of `kind` with."""
    return [KINDS[name] for name in _RIVALS[kind.label]]


def asks(spec: InstructedSpec) -> list[Ask]:
    """Every request, in a fixed order for a given spec: per kind, the diagonal (frame, subject) combos."""
    rng = random.Random(spec.seed)
    f = spec.heldout_fraction
    subject_sides = assign_sides(PEOPLE + GROUPS, f, spec.seed, "subjects")
    contrast_frames = assign_sides(CONTRAST_OPENERS, f, spec.seed, "contrast_openers")
    out: list[Ask] = []
    for kind in CONTRAST_KINDS + HARD_KINDS:
        if kind.openers:
            frames = assign_sides(kind.openers, f, spec.seed, f"openers:{kind.name}")
            subjects = subject_sides if set(kind.subjects) <= set(subject_sides) else \
                assign_sides(kind.subjects, f, spec.seed, f"subjects:{kind.name}")
            subjects = {s: subjects[s] for s in kind.subjects}
        else:
            frames, subjects = contrast_frames, subject_sides
        combos = combos_by_side(frames, subjects)
        # Benign kinds at an eighth of the share: benign text is plentiful in the lexical corpus,
        # hostility without swear words is what only this set provides, and generation time is
        # the constraint on a 2-core machine (BENIGN_SHARE).
        share = spec.scale if kind.label == 1 else spec.scale * BENIGN_SHARE
        chosen = rng.sample(combos, max(1, round(len(combos) * share)))
        for frame, subject, side in chosen:
            for _ in range(spec.samples):
                out.append(Ask(kind.name, frame, subject, side, rng.choice(SYSTEM_PROMPTS),
                               rng.randrange(len(kind.instructions))))
    return _add_shots(out, spec, subject_sides) if spec.shots else out


def exemplar_pools(spec: InstructedSpec) -> dict[tuple[str, Side], list[str]]:
    """(kind, side) -> the lines a request of that kind on that side may be shown as earlier answers."""
    f, seed = spec.heldout_fraction, spec.seed
    pools: dict[tuple[str, Side], list[str]] = {}
    for kind, (name, label) in TEMPLATED_EXEMPLARS.items():
        tpl = next(t for t in TEMPLATES if t.name == name)
        for frame, phrase, side in template_combos(tpl, label, f, seed):
            pools.setdefault((kind, side), []).append(fill(frame, phrase))
    for kind, lines in WRITTEN_EXEMPLARS.items():
        for line, side in assign_sides(lines, f, seed, f"exemplars:{kind}").items():
            pools.setdefault((kind, side), []).append(line)
    return pools


def _add_shots(items: list[Ask], spec: InstructedSpec, subject_sides: dict[str, Side]) -> list[Ask]:
    """Each contrast-kind request with `spec.shots` exemplar turns drawn from its own side of the
    split, so a held-out line never borrows a selection line's phrase (nor the reverse). The shots
    take their own random stream: the requests themselves are the zero-shot ones, pair for pair."""
    rng = random.Random(f"{spec.seed}:shots")
    pools = exemplar_pools(spec)
    subjects = {side: sorted(s for s, sd in subject_sides.items() if sd == side)
                for side in (SELECTION, HELDOUT)}
    out = []
    for ask in items:
        pool = pools.get((ask.kind, ask.split))
        if not pool:  # hard-negative kinds: their own openers already keep them on task
            out.append(ask)
            continue
        others = [s for s in subjects[ask.split] if s != ask.subject]
        shots = tuple((ask.instruction(subject=rng.choice(others)), line)
                      for line in rng.sample(pool, min(spec.shots, len(pool))))
        out.append(replace(ask, shots=shots))
    return out


def extract_line(opener: str, completion: str) -> tuple[str | None, str]:
    """(the spoken line, what the model wrote of it), or (None, "") when it never ends (rule 1)."""
    quote = completion.find('"')
    if quote >= 0:
        written = completion[:quote]
    else:
        ends = list(_SENTENCE_END.finditer(completion))
        if not ends:
            return None, ""
        written = completion[: ends[-1].end()]
    line = (opener + written).strip()
    return (line, written) if line else (None, "")


def rule_out(kind: Kind, line: str | None, written: str) -> str | None:
    """The first of rules 1-4 that drops this output, or None (rule 5 needs the model)."""
    if line is None:
        return "incomplete"
    if len(written.split()) < MIN_WORDS:
        return "too short"
    if kind.label == 1 and _REFUSAL.search(written):
        return "refusal"
    if _META_ANY.search(written) or (not kind.openers and _META_CONTRAST.search(written)):
        return "meta"
    return None


@torch.no_grad()
def _mean_logprob(model: Any, tokenizer: Any, prompts: list[str], continuations: list[str]) -> list[float]:
    """Mean log-probability per token of each continuation after its prompt."""
    ids = [(tokenizer(p, add_special_tokens=False)["input_ids"], tokenizer(c, add_special_tokens=False)["input_ids"])
           for p, c in zip(prompts, continuations, strict=True)]
    length = max(len(p) + len(c) for p, c in ids)
    batch = torch.full((len(ids), length), tokenizer.pad_token_id, dtype=torch.long)  # (B, S), right-padded
    mask = torch.zeros_like(batch)
    rows, cols, targets = [], [], []  # the positions that predict a continuation token, and that token
    for row, (p, c) in enumerate(ids):
        batch[row, : len(p) + len(c)] = torch.tensor(p + c)
        mask[row, : len(p) + len(c)] = 1
        rows += [row] * len(c)
        cols += range(len(p) - 1, len(p) + len(c) - 1)
        targets += c
    hidden = model.model(input_ids=batch, attention_mask=mask, use_cache=False).last_hidden_state  # (B, S, d)
    # The vocabulary projection only where it is needed: (n, V) instead of (B, S, V).
    logits = model.lm_head(hidden[torch.tensor(rows), torch.tensor(cols)]).float()  # (n, V)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(targets)[:, None])[:, 0]  # (n,)
    per_row = torch.zeros(len(ids)).index_add_(0, torch.tensor(rows), logp)
    return [float(per_row[r]) / len(c) if c else float("-inf") for r, (_, c) in enumerate(ids)]


def _judge_on_task(batch: Sequence[Ask], written: list[str], candidates: list[int], model: Any,
                   tokenizer: Any) -> dict[int, dict[str, Any]]:
    """Rule 5 for the outputs at `candidates`: own vs best opposite-label instruction."""
    jobs: list[tuple[int, str, str]] = []  # (output index, instruction kind, prompt)
    for i in candidates:
        ask = batch[i]
        kind = KINDS[ask.kind]
        for k in [kind, *rivals(kind)]:
            jobs.append((i, k.name, ask.prompt(tokenizer, k, with_shots=False)))
    scores: dict[int, dict[str, float]] = {}
    for start in range(0, len(jobs), 32):
        chunk = jobs[start : start + 32]
        lp = _mean_logprob(model, tokenizer, [p for _, _, p in chunk], [written[i] for i, _, _ in chunk])
        for (i, name, _), value in zip(chunk, lp, strict=True):
            scores.setdefault(i, {})[name] = value
    out = {}
    for i, by_kind in scores.items():
        own = by_kind.pop(batch[i].kind)
        rival = max(by_kind, key=by_kind.__getitem__)
        out[i] = {"own": round(own, 4), "rival": rival, "rival_logprob": round(by_kind[rival], 4)}
    return out


def build_instructed(model_dir: str | Path, out: str | Path, spec: InstructedSpec) -> Path:
    """Generate, filter and write the instructed sets to `out` (JSONL; every output, kept or not)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    items = asks(spec)

    def records(batch: Sequence[Ask], completions: list[str], model: Any, tok: Any) -> list[dict[str, Any]]:
        lines, written, reasons = [], [], []
        for ask, completion in zip(batch, completions, strict=True):
            line, part = extract_line(ask.opener, completion)
            lines.append(line)
            written.append(part)
            reasons.append(rule_out(KINDS[ask.kind], line, part))
        likelihood = _judge_on_task(batch, written, [i for i, r in enumerate(reasons) if r is None], model, tok)
        out = []
        for i, ask in enumerate(batch):
            kind = KINDS[ask.kind]
            lk = likelihood.get(i)
            reason = reasons[i] or (None if lk["own"] >= lk["rival_logprob"] + spec.margin else "off-task")
            out.append({"kind": kind.name, "category": kind.category, "label": kind.label, "frame": ask.frame,
                        "subject": ask.subject, "split": ask.split, "system": ask.system,
                        "instruction": ask.instruction(), "shown": [line for _, line in ask.shots],
                        "completion": completions[i], "line": lines[i],
                        "dropped": reason, "likelihood": lk})
        return out

    return generate_jsonl(model_dir, Path(out), items, lambda a: a.prompt(tokenizer), asdict, records,
                          spec.sampling(), _context(spec), "instructed: generating")


def _context(spec: InstructedSpec) -> dict[str, Any]:
    """What every batch depends on besides its requests: the spec and the filter's version."""
    return asdict(spec) | {"filter_version": FILTER_VERSION}


def load_instructed(path: str | Path) -> list[dict[str, Any]]:
    """Every record of an instructed-set file (kept or dropped), ordered by id."""
    by_id = {r["id"]: r for r in read_jsonl(Path(path))}
    return [by_id[i] for i in sorted(by_id)]
