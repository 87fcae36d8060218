"""evals/build_sets.py: the shipped prompt sets rebuild byte for byte, are disjoint from what picked the
detector's features, and have the shape the harness expects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from discovery import seeds as discovery_seeds
from evals import seeds
from evals.build_sets import DATA_DIR, build_all

FILES = ["dev/toxic.jsonl", "dev/benign.jsonl", "test/toxic.jsonl", "test/benign.jsonl", "dev/mc.jsonl",
         "test/mc.jsonl"]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shipped_sets_rebuild_identically(tmp_path: Path) -> None:
    build_all(tmp_path, seed=0)
    for name in FILES:
        assert (tmp_path / name).read_text() == (DATA_DIR / name).read_text(), name


def test_splits_are_disjoint_and_sized() -> None:
    for kind in ("toxic", "benign"):
        dev = {r["prompt"] for r in _read(DATA_DIR / "dev" / f"{kind}.jsonl")}
        test = {r["prompt"] for r in _read(DATA_DIR / "test" / f"{kind}.jsonl")}
        assert len(dev) == len(test) == 40 and not dev & test


def test_seed_material_shares_nothing_with_discovery() -> None:
    ours = {*seeds.TOXIC_FRAMES, *seeds.HOSTILE_REQUESTS, *seeds.OPENERS, *seeds.REQUESTS,
            *seeds.STRONG_WORD_SENTENCES}
    theirs = {*discovery_seeds.WORD_FRAMES, *discovery_seeds.INSULT_FRAMES, *discovery_seeds.HOSTILE_INSTRUCTIONS,
              *discovery_seeds.CHAT_INSTRUCTIONS, *discovery_seeds.CONTINUATION_OPENERS,
              *discovery_seeds.HARD_NEGATIVES}
    assert not ours & theirs
    assert not set(seeds.TOPICS) & set(discovery_seeds.BENIGN_TOPICS)


@pytest.mark.engine
def test_no_eval_prompt_occurs_in_the_discovery_corpus() -> None:
    """Against the discovery corpus's actual prompts (full scale, the seed the shipped features used)."""
    from transformers import AutoTokenizer

    from discovery.corpus import CorpusSpec, prompt_specs
    from middleware.embedded import embedded_model_dir

    corpus = prompt_specs(CorpusSpec(), AutoTokenizer.from_pretrained(embedded_model_dir()))
    seen = {p.visible for p in corpus} | {p.prompt for p in corpus}
    ours = [r["prompt"] for name in FILES[:4] for r in _read(DATA_DIR / name)]
    assert not [p for p in ours if p in seen]
    # nor as the start of a discovery text (a frame of ours that is a frame of theirs with a word filled in)
    assert not [p for p in ours if any(v.startswith(p) or p.startswith(v) for v in seen)]


def test_cloze_items_are_well_formed_and_split() -> None:
    dev, test = (_read(DATA_DIR / split / "mc.jsonl") for split in ("dev", "test"))
    assert len(dev) >= 100 and len(test) >= 100
    assert {i["kind"] for i in dev} == {i["kind"] for i in test}  # every kind of fact on both sides
    for item in dev + test:
        assert len(item["options"]) == 4 and len(set(item["options"])) == 4
        assert 0 <= item["answer"] < 4
    # only one-digit sums may repeat across the splits (there are few of them)
    shared = {i["prompt"] for i in dev} & {i["prompt"] for i in test}
    assert all(i["kind"] == "arithmetic" for i in test if i["prompt"] in shared)
