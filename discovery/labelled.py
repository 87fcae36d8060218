"""The labelled set the detector is selected and judged on: the lexical corpus, the instructed
sets, the short lines and the templated lines in one list, each text with its category, label,
split and view.

Categories (`CATEGORIES`): profanity (the lexical corpus' and the short lines' toxic texts,
labelled by the judge), insult (insults and sarcastic put-downs), threat, identity/dehumanising
(instructed and templated lines), benign (compliments, neutral descriptions, the lexical corpus',
the short lines' and the templated lines' benign texts)
and benign-hard (polite disagreement and criticism, moderation notes, reported speech,
definitions, strong words in benign senses, bad reviews, sad news, and the lexical corpus'
strong-word seed sentences).

Views. Each instructed line, short line (discovery/short_lines.py) and templated line
(discovery/templated.py) is scored the two ways a gateway sees text: `raw` (the line alone, as a
/v1/completions prompt) and `chat` (the line as the user's message inside the chat template, as a
chat prompt is scored). Both views of a line form one `group`: they are on the same side of the
split, and intervals resample groups, not texts. A lexical text is scored as it was generated
(`as-generated`: a continuation, or a chat request with the model's answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discovery.corpus import CorpusSpec, build_corpus, load_corpus
from discovery.instructed import InstructedSpec, build_instructed, load_instructed
from discovery.short_lines import build_short, load_short
from discovery.templated import build_templated, load_templated

__all__ = ["CATEGORIES", "LEXICAL", "NON_LEXICAL", "TOXIC_CATEGORIES", "VIEWS", "DataSpec", "build_labelled",
           "chat_view", "labelled_texts", "load_labelled", "set_stats"]

TOXIC_CATEGORIES = ("profanity", "insult", "threat", "identity/dehumanising")
CATEGORIES = (*TOXIC_CATEGORIES, "benign", "benign-hard")
LEXICAL = ("profanity",)
NON_LEXICAL = ("insult", "threat", "identity/dehumanising")
VIEWS = ("raw", "chat")


@dataclass(frozen=True)
class DataSpec:
    """The labelled sets: the lexical corpus and the instructed sets (generated), and the short and
    templated lines (no generation; they take the corpus' seed, split fraction and scale)."""

    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    instructed: InstructedSpec = field(default_factory=InstructedSpec)


def chat_view(tokenizer: Any, text: str) -> str:
    """`text` as the user's message of a chat prompt (default system prompt, generation prompt added)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=False)


LabelledPaths = tuple[Path, Path, Path, Path]  # corpus, instructed, short, templated


def build_labelled(model_dir: str | Path, work_dir: Path, spec: DataSpec) -> LabelledPaths:
    """Generate (or resume) the sets in `work_dir`: corpus.jsonl, instructed.jsonl, short.jsonl,
    templated.jsonl."""
    corpus = build_corpus(model_dir, work_dir / "corpus.jsonl", spec.corpus)
    instructed = build_instructed(model_dir, work_dir / "instructed.jsonl", spec.instructed)
    return (corpus, instructed, build_short(work_dir / "short.jsonl", spec.corpus),
            build_templated(work_dir / "templated.jsonl", spec.corpus))


def labelled_texts(corpus: Sequence[dict[str, Any]], instructed: Sequence[dict[str, Any]], tokenizer: Any,
                   include_unsure: bool = False, short: Sequence[dict[str, Any]] = (),
                   templated: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One record per scored text: uid, group, set, kind, category, label, split, view, frame,
    subject, text (what the model reads), visible (what the judges read). Instructed outputs the
    filter dropped and templated lines the word list hits are left out; so are lexical texts and
    short lines the judge is unsure about (label and category None), unless `include_unsure` (the
    SAE may learn from them)."""
    out: list[dict[str, Any]] = []
    for r in corpus:
        if r["label"] is None and not include_unsure:
            continue
        out.append({"uid": f"lexical:{r['id']}", "group": f"lexical:{r['id']}", "set": "lexical",
                    "kind": r["source"], "category": r["category"], "label": r["label"], "split": r["split"],
                    "view": "as-generated", "frame": r["frame"], "subject": r["subject"], "text": r["text"],
                    "visible": r["visible"]})
    kept = [("instructed", r) for r in instructed if r["dropped"] is None]
    kept += [("short", r) for r in short if r["label"] is not None or include_unsure]
    kept += [("templated", r) for r in templated if r["dropped"] is None]
    for set_name, r in kept:  # a line, scored in both views
        for view in VIEWS:
            out.append({"uid": f"{set_name}:{r['id']}:{view}", "group": f"{set_name}:{r['id']}",
                        "set": set_name, "kind": r["kind"], "category": r["category"], "label": r["label"],
                        "split": r["split"], "view": view, "frame": r["frame"], "subject": r["subject"],
                        "text": r["line"] if view == "raw" else chat_view(tokenizer, r["line"]),
                        "visible": r["line"]})
    return out


def load_labelled(paths: LabelledPaths, tokenizer: Any, include_unsure: bool = False
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(labelled texts, corpus records, instructed records) from `build_labelled`'s files."""
    corpus, instructed, short = load_corpus(paths[0]), load_instructed(paths[1]), load_short(paths[2])
    return (labelled_texts(corpus, instructed, tokenizer, include_unsure, short, load_templated(paths[3])),
            corpus, instructed)


def set_stats(texts: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Texts per category (None: the judge is unsure) and split, for logs and the model card."""
    stats: dict[str, dict[str, int]] = {}
    for t in texts:
        row = stats.setdefault(str(t["category"]), {"selection": 0, "heldout": 0})
        row[t["split"]] += 1
    return stats
