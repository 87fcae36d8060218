"""`steergate eval` (and the commands built on it): argument parsing."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "common_eval_args", "load_prompt_set", "spec_from_args"]

DATA = Path(__file__).parent / "data"


def common_eval_args(p: argparse.ArgumentParser) -> None:
    """Options every evaluation command shares: the prompt sets, sampling and the gateway."""
    g = p.add_argument_group("prompts")
    g.add_argument("--split", choices=["dev", "test"], default="test",
                   help="shipped prompt sets to use (default test; the calibration tunes on dev)")
    g.add_argument("--toxic", type=Path, help="toxic-leaning prompts (JSONL with 'prompt', or one per line)")
    g.add_argument("--benign", type=Path, help="benign prompts (same format)")
    g.add_argument("--mc", type=Path,
                   help="cloze items (JSONL: prompt, options, answer); default evals/data/SPLIT/mc.jsonl")
    g.add_argument("--no-mc", action="store_true", help="skip the general-ability check")
    g.add_argument("--limit", type=int, help="use only the first N prompts of each set (quick runs)")
    g.add_argument("--mc-limit", type=int, help="use only the first N cloze items")
    g = p.add_argument_group("sampling")
    g.add_argument("--samples", type=int, default=3, help="continuations per toxic-leaning prompt (default 3)")
    g.add_argument("--temperature", type=float, default=0.7, help="for toxic-leaning prompts (default 0.7)")
    g.add_argument("--max-tokens", type=int, default=32, help="tokens per continuation (default 32)")
    g.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    g.add_argument("--judge", default="alt-profanity-check", help="independent judge (default alt-profanity-check)")
    g = p.add_argument_group("gateway")
    g.add_argument("--url", help="a running gateway (e.g. http://127.0.0.1:8000); default: start one")
    g.add_argument("--api-key", default="unused", help="key for a gateway whose policy needs one")
    g.add_argument("--concurrency", type=int, default=32, help="requests in flight at once (default 32)")
    g.add_argument("--model", help="model name (default: the embedded smollm2-135m-instruct)")
    g.add_argument("--port", type=int, help="port for a started gateway (default: a free one)")
    g.add_argument("--eager", action="store_true", help="start the gateway without torch.compile (starts in "
                   "seconds instead of minutes; each step is slower)")
    g.add_argument("--tokenizer", type=Path, help="the model's tokenizer directory (default: the embedded model)")
    g.add_argument("--cache", type=Path, default=Path("evals/results/cache.jsonl"),
                   help="request cache shared by every evaluation command (keys cover everything a result "
                   "depends on, so runs resume and repeated settings are reused); default evals/results/cache.jsonl")


def load_prompt_set(args: argparse.Namespace) -> Any:
    from evals.harness import PromptSet, load_prompts

    toxic = load_prompts(args.toxic or DATA / args.split / "toxic.jsonl")
    benign = load_prompts(args.benign or DATA / args.split / "benign.jsonl")
    mc = [] if args.no_mc else load_prompts(args.mc or DATA / args.split / "mc.jsonl")
    if args.limit:
        toxic, benign = toxic[: args.limit], benign[: args.limit]
    if args.mc_limit:
        mc = mc[: args.mc_limit]
    return PromptSet(toxic, benign, mc)


def spec_from_args(args: argparse.Namespace) -> Any:
    from evals.harness import EvalSpec

    return EvalSpec(samples=args.samples, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed,
                    judge=args.judge)


def provenance() -> dict[str, Any]:
    """Where and how a result was measured (goes into every JSON the commands write)."""
    return {"command": "steergate " + shlex.join(sys.argv[1:]) if sys.argv else "",
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"}


def _parse_settings(args: argparse.Namespace, tiers: dict[str, Any] | None) -> list[Any]:
    from evals.harness import Setting

    names = [t for t in (args.tiers or "").split(",") if t] if args.tiers else list(tiers or ["off", "light", "medium",
                                                                                              "strong"])
    unknown = [t for t in names if tiers is not None and t not in tiers and t != "off"]
    if unknown:
        raise SystemExit(f"steergate eval: unknown tier(s) {unknown}; this gateway has {sorted(tiers or [])}")
    settings = [Setting(t, {"tier": t}, (tiers or {}).get(t)) for t in names]
    for raw in args.setting or []:
        name, _, body = raw.partition("=")
        try:
            steering = json.loads(body)
        except json.JSONDecodeError as e:
            raise SystemExit(f"steergate eval: --setting {name}: not JSON ({e})") from None
        settings.append(Setting(name, steering))
    return settings


def run_eval(args: argparse.Namespace, settings_for: Any, out: Path, title: str = "",
             features: Path | None = None, tiers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start (or reach) the gateway, evaluate the settings `settings_for(gateway tiers)` gives, write outputs."""
    from evals.client import GatewayClient
    from evals.gateway import GatewayTarget, gateway, tokenizer_for
    from evals.harness import evaluate
    from evals.report import write_outputs

    _quiet()
    target = GatewayTarget(url=args.url, features_path=features, tiers=tiers, model=args.model)
    settings = settings_for(target.tiers())
    prompts = load_prompt_set(args)
    tokenizer = tokenizer_for(args.tokenizer) if prompts.mc else None
    with contextlib.ExitStack() as stack:
        def client() -> GatewayClient:
            # Started on the first request the cache cannot answer, once; stopped on exit.
            if not urls:
                urls.append(stack.enter_context(gateway(target, args.port, args.eager)))
            return GatewayClient(urls[0], target.model, args.api_key, args.concurrency)

        urls: list[str] = []
        results = evaluate(client, settings, prompts, spec_from_args(args), out, tokenizer, target.cache_context(),
                           args.cache)
    results["provenance"] = {**provenance(), "features": str(target.features_path), "url": args.url}
    paths = write_outputs(results, out, title)
    print((out / "eval.md").read_text())
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return results


def _quiet() -> None:
    """One log line per HTTP request would bury the progress bars."""
    import logging

    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _eval(args: argparse.Namespace) -> int:
    run_eval(args, lambda tiers: _parse_settings(args, tiers), args.out, features=args.features)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `eval` (and the calibration and paper-rerun commands) to the `steergate` parser."""
    p = sub.add_parser("eval", help="toxicity, fluency and general ability per steering setting",
                       description="Generate through a gateway (a running one, or one it starts) for each setting; "
                       "judge toxicity independently, score perplexity under the unsteered model, benign drift and "
                       "cloze accuracy, each with a 95%% interval. Writes OUT/eval.md, eval.json, generations.json, "
                       "eval.png; resumes from OUT/cache.jsonl.")
    p.add_argument("--tiers", help="comma-separated tiers to compare (default: every tier of the gateway)")
    p.add_argument("--setting", action="append", metavar="NAME=JSON",
                   help='explicit steering, e.g. \'ablate2={"interventions": [{"feature": 2, "mode": "ablate"}]}\'')
    p.add_argument("--features", type=Path, help="features file for a started gateway (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("evals/results/eval"), help="output directory")
    common_eval_args(p)
    p.set_defaults(func=_eval)
    from evals.calibrate import add_command as add_calibrate
    from evals.findings import add_commands as add_findings
    from evals.gates import add_command as add_gates

    add_calibrate(sub)
    add_findings(sub)
    add_gates(sub)
