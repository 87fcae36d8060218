"""`steergate eval`: what each steering setting does to toxicity, fluency and general ability.

For every setting (a tier, or explicit interventions), through a running gateway:
1. toxic-leaning prompts: `samples` sampled continuations each; an independent judge (never our
   detector) scores each continuation alone; its mean and the share judged toxic;
2. benign prompts: one greedy continuation each; how many differ from `off`'s at all, and by how
   many tokens (edit distance over token ids);
3. fluency: the perplexity of those continuations under the unsteered model (steering off,
   prompt log-probabilities of prompt + continuation; middleware/fluency.py);
4. general ability: accuracy on cloze items, each option scored by its log-likelihood under the
   steered model (the setting applied to every token, prompt included: the scored tokens are prompt
   tokens, which a `generated`-only tier would never touch).
Every number comes with a 95% interval (evals/stats.py: bootstrap over prompts, paired against off).

Work is cached per request in a JSONL file (OUT/cache.jsonl unless given), keyed by everything the request depends on, so an
interrupted run resumes where it stopped and a sweep that repeats a setting reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from discovery.judges import TOXIC_AT
from evals.client import GatewayClient, Generation, run_all
from evals.stats import Estimate, bootstrap, paired_bootstrap

__all__ = ["EvalSpec", "PromptSet", "Setting", "evaluate", "load_prompts", "edit_distance"]

OFF = {"tier": "off"}


@dataclass(frozen=True)
class Setting:
    """A named steering: {"tier": name} or {"interventions": [...]} (the request's `steering`)."""

    name: str
    steering: dict[str, Any]
    # What the steering means on this gateway, when known (a tier's preset): part of the cache key.
    preset: dict[str, Any] | None = None


@dataclass(frozen=True)
class EvalSpec:
    samples: int = 3
    temperature: float = 0.7
    max_tokens: int = 32
    seed: int = 0
    judge: str = "alt-profanity-check"
    toxic_at: float = TOXIC_AT  # judged toxic at or above this score


@dataclass
class PromptSet:
    toxic: list[dict[str, Any]]
    benign: list[dict[str, Any]]
    mc: list[dict[str, Any]] = field(default_factory=list)


def load_prompts(path: str | Path) -> list[dict[str, Any]]:
    """A prompt file: JSONL records with `prompt` (and optional `chat`, labels), or one prefix per line."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if all(line.lstrip().startswith("{") for line in lines):
        records = [json.loads(line) for line in lines]
        for i, r in enumerate(records):
            if not isinstance(r.get("prompt"), str):
                raise ValueError(f"{path}:{i + 1}: a record needs a string 'prompt'")
        return records
    return [{"prompt": line, "chat": False} for line in lines]


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance between two token-id sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


class _Cache:
    """Request results by key, appended to a JSONL file as they arrive."""

    def __init__(self, path: Path, context: Mapping[str, Any]) -> None:
        self.path = path
        self.context = json.dumps(context, sort_keys=True)
        self.data: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a torn last line: that request is redone
                    continue
                self.data[row["key"]] = row["value"]

    def key(self, *parts: Any) -> str:
        material = json.dumps([self.context, *parts], sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()[:24]

    def put(self, key: str, value: Any) -> Any:
        self.data[key] = value
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "value": value}) + "\n")
        return value


class _Cached:
    """A request job that answers from the cache when it can (`cached`: whether it will)."""

    def __init__(self, cache: _Cache, key: str, call: Callable[[GatewayClient], Awaitable[Any]]) -> None:
        self.cache, self.key, self.call = cache, key, call
        self.cached = key in cache.data

    async def __call__(self, client: GatewayClient) -> Any:
        if self.key in self.cache.data:
            return self.cache.data[self.key]
        return self.cache.put(self.key, await self.call(client))


def _setting_id(s: Setting) -> dict[str, Any]:
    return {"steering": s.steering, "preset": s.preset}


def _generations(client_factory: Callable[[], GatewayClient], cache: _Cache, settings: Sequence[Setting],
                 prompts: Sequence[dict[str, Any]], samples: int, temperature: float, spec: EvalSpec,
                 desc: str) -> dict[str, list[list[dict[str, Any]]]]:
    """{setting name: [prompt][sample] {"prompt_token_ids", "token_ids", "text", "finish_reason"}}."""
    jobs, where = [], []
    for s in settings:
        for i, p in enumerate(prompts):
            for j in range(samples):
                # One seed per (prompt, sample), the same for every setting: paired sampling noise.
                seed = spec.seed * 1_000_003 + i * samples + j

                async def call(c: GatewayClient, p: dict[str, Any] = p, s: Setting = s, seed: int = seed) -> Any:
                    g: Generation = await c.generate(p["prompt"], bool(p.get("chat")), s.steering,
                                                     max_tokens=spec.max_tokens, temperature=temperature, seed=seed)
                    return asdict(g)

                key = cache.key("gen", _setting_id(s), p["prompt"], bool(p.get("chat")), spec.max_tokens,
                                temperature, seed)
                jobs.append(_Cached(cache, key, call))
                where.append((s.name, i, j))
    results = run_all(client_factory, jobs, desc)
    out = {s.name: [[{} for _ in range(samples)] for _ in prompts] for s in settings}
    for (name, i, j), r in zip(where, results, strict=True):
        out[name][i][j] = r
    return out


def _score_fluency(client_factory: Callable[[], GatewayClient], cache: _Cache,
                   gens: dict[str, list[list[dict[str, Any]]]], desc: str) -> None:
    """Adds "nll" (sum of -log p) and "n_tokens" of each continuation under the unsteered model."""
    flat = [g for per_setting in gens.values() for per_prompt in per_setting for g in per_prompt]
    todo = [g for g in flat if g["token_ids"]]
    jobs = []
    for g in todo:
        ids = [*g["prompt_token_ids"], *g["token_ids"]]

        async def call(c: GatewayClient, ids: list[int] = ids) -> Any:
            return await c.logprobs(ids, OFF)

        jobs.append(_Cached(cache, cache.key("lp", OFF, ids), call))
    for g, lps in zip(todo, run_all(client_factory, jobs, desc), strict=True):
        cont = lps[len(g["prompt_token_ids"]):]
        g["nll"] = -float(sum(cont))
        g["n_tokens"] = len(cont)
    for g in flat:
        if not g["token_ids"]:
            g["nll"], g["n_tokens"] = 0.0, 0


def mc_token_ids(tokenizer: Any, item: Mapping[str, Any]) -> list[tuple[list[int], int]]:
    """Per option: (prompt + " " + option as token ids, where the option's tokens start)."""
    context = tokenizer.encode(item["prompt"], add_special_tokens=False)
    return [(context + tokenizer.encode(" " + o, add_special_tokens=False), len(context)) for o in item["options"]]


def _mc(client_factory: Callable[[], GatewayClient], cache: _Cache, settings: Sequence[Setting],
        items: Sequence[dict[str, Any]], tokenizer: Any) -> dict[str, list[dict[str, Any]]]:
    """{setting: [item] {"scores": per-option log-likelihood, "choice", "correct"}}."""
    encoded = [mc_token_ids(tokenizer, item) for item in items]
    jobs, where = [], []
    for s in settings:
        # Steer every token: the option's tokens are prompt tokens here.
        steering = {**s.steering, "steer_positions": "both"} if s.steering != OFF else OFF
        for i, options in enumerate(encoded):
            for k, (ids, _) in enumerate(options):
                async def call(c: GatewayClient, ids: list[int] = ids, steering: dict[str, Any] = steering) -> Any:
                    return await c.logprobs(ids, steering)

                jobs.append(_Cached(cache, cache.key("mc", {**_setting_id(s), "steering": steering}, ids), call))
                where.append((s.name, i, k))
    results = run_all(client_factory, jobs, "general ability: scoring options")
    scores: dict[str, list[list[float]]] = {s.name: [[0.0] * len(o) for o in encoded] for s in settings}
    for (name, i, k), lps in zip(where, results, strict=True):
        start = encoded[i][k][1]
        scores[name][i][k] = float(sum(lps[start:]))
    out: dict[str, list[dict[str, Any]]] = {}
    for name, per_item in scores.items():
        rows = []
        for item, sc in zip(items, per_item, strict=True):
            choice = int(np.argmax(sc))
            rows.append({"scores": sc, "choice": choice, "correct": int(choice == item["answer"])})
        out[name] = rows
    return out


def _ppl(nll: np.ndarray, n: np.ndarray) -> float:
    total = float(n.sum())
    return math.exp(float(nll.sum()) / total) if total else math.nan


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def _summary(name: str, setting: Setting, tox: list[list[dict[str, Any]]], ben: list[list[dict[str, Any]]],
             mc: list[dict[str, Any]] | None, off: Mapping[str, Any] | None, spec: EvalSpec) -> dict[str, Any]:
    """One setting's numbers, each an Estimate, from its per-prompt records (and off's, for "vs off")."""
    tox_mean = np.array([np.mean([g["judge"] for g in p]) for p in tox])  # (n,)
    tox_frac = np.array([np.mean([g["judge"] >= spec.toxic_at for g in p]) for p in tox])  # (n,)
    tox_nll = np.array([sum(g["nll"] for g in p) for p in tox])
    tox_n = np.array([sum(g["n_tokens"] for g in p) for p in tox])
    ben_nll = np.array([p[0]["nll"] for p in ben])
    ben_n = np.array([p[0]["n_tokens"] for p in ben])
    out: dict[str, Any] = {
        "name": name, "steering": setting.steering, "preset": setting.preset,
        "toxicity": bootstrap(_mean, [tox_mean]), "toxic_share": bootstrap(_mean, [tox_frac]),
        "toxic_perplexity": bootstrap(_ppl, [tox_nll, tox_n]),
        "benign_perplexity": bootstrap(_ppl, [ben_nll, ben_n]),
    }
    if off is not None:
        changed = np.array([float(p[0]["token_ids"] != o[0]["token_ids"]) for p, o in zip(ben, off["benign"],
                                                                                         strict=True)])
        dist = np.array([edit_distance(p[0]["token_ids"], o[0]["token_ids"]) for p, o in zip(ben, off["benign"],
                                                                                            strict=True)])
        off_tox = np.array([np.mean([g["judge"] for g in p]) for p in off["toxic"]])
        off_ben = [np.array([p[0]["nll"] for p in off["benign"]]), np.array([p[0]["n_tokens"] for p in off["benign"]])]
        out.update({
            "benign_changed": bootstrap(_mean, [changed]), "benign_edit_distance": bootstrap(_mean, [dist]),
            "toxicity_vs_off": paired_bootstrap(_mean, [tox_mean], [off_tox]),
            "benign_perplexity_vs_off": paired_bootstrap(_ppl, [ben_nll, ben_n], off_ben),
        })
    if mc is not None:
        out["accuracy"] = bootstrap(_mean, [np.array([r["correct"] for r in mc], dtype=float)])
    return out


def evaluate(client_factory: Callable[[], GatewayClient], settings: Sequence[Setting], prompts: PromptSet,
             spec: EvalSpec, out_dir: Path, tokenizer: Any | None, cache_context: Mapping[str, Any],
             cache_path: Path | None = None) -> dict[str, Any]:
    """Run every setting (plus `off`, the reference, if missing) and return the results.

    Returns {"spec", "settings": [summary per setting, Estimates as dicts], "records": raw per-setting
    generations and scores}. `tokenizer` (the served model's) is needed only for the cloze items.
    """
    from discovery.judges import get_judge

    if not any(s.steering == OFF for s in settings):
        settings = [Setting("off", dict(OFF)), *settings]
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = cache_path or out_dir / "cache.jsonl"
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache = _Cache(cache_path, cache_context)
    tox = _generations(client_factory, cache, settings, prompts.toxic, spec.samples, spec.temperature, spec,
                       "toxic-leaning prompts: generating")
    ben = _generations(client_factory, cache, settings, prompts.benign, 1, 0.0, spec,
                       "benign prompts: generating (greedy)")
    _score_fluency(client_factory, cache, tox, "toxic continuations: perplexity under off")
    _score_fluency(client_factory, cache, ben, "benign continuations: perplexity under off")
    judge = get_judge(spec.judge)
    for per_setting in tox.values():
        flat = [g for p in per_setting for g in p]
        for g, score in zip(flat, judge.score([g["text"] for g in flat]), strict=True):
            g["judge"] = float(score)
    mc = _mc(client_factory, cache, settings, prompts.mc, tokenizer) if prompts.mc and tokenizer else None
    off_name = next(s.name for s in settings if s.steering == OFF)
    off = {"toxic": tox[off_name], "benign": ben[off_name]}
    summaries = [_summary(s.name, s, tox[s.name], ben[s.name], None if mc is None else mc[s.name],
                          None if s.name == off_name else off, spec) for s in settings]
    if mc is not None:
        off_acc: Estimate = next(x["accuracy"] for x in summaries if x["name"] == off_name)
        for x in summaries:
            x["accuracy_within_off_interval"] = off_acc.contains(x["accuracy"].value)
    return {
        "spec": asdict(spec),
        "settings": [{k: (v.as_dict() if isinstance(v, Estimate) else v) for k, v in x.items()} for x in summaries],
        "records": {s.name: {"toxic": tox[s.name], "benign": ben[s.name], **({"mc": mc[s.name]} if mc else {})}
                    for s in settings},
    }
