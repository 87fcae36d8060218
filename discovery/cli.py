"""`steergate train-sae` and `steergate find-features`: argument parsing for the two pipelines."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from discovery.corpus import CorpusSpec

__all__ = ["add_commands"]


def _corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", type=Path, help="cache for corpus, activations, checkpoints "
                   "(default: ~/.cache/steergate/discovery/MODEL_NAME; $STEERGATE_CACHE_DIR moves ~/.cache/steergate)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything (default 0)")
    p.add_argument("--scale", type=float, default=1.0, help="corpus size factor (default 1.0; tests use ~0.02)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per corpus text (default 32)")
    p.add_argument("--judge", default="alt-profanity-check", help="labelling judge (default alt-profanity-check)")
    p.add_argument("--model", type=Path, help="Hugging Face model directory (default: the embedded SmolLM2)")
    p.add_argument("--model-name", default="smollm2-135m-instruct", help="name recorded in the outputs")


def _corpus_spec(args: argparse.Namespace) -> CorpusSpec:
    from discovery.corpus import CorpusSpec

    return CorpusSpec(seed=args.seed, scale=args.scale, max_new_tokens=args.max_new_tokens, judge=args.judge)


def _work_dir(args: argparse.Namespace) -> Path:
    from middleware.settings import cache_dir

    return args.work_dir or cache_dir() / "discovery" / args.model_name


def _setup(args: argparse.Namespace) -> Path:
    import torch

    from middleware.embedded import embedded_model_dir

    torch.set_num_threads(os.cpu_count() or 1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return args.model or embedded_model_dir()


def _train_sae(args: argparse.Namespace) -> int:
    from middleware.assets import EMBEDDED_SAE
    from discovery.train import TrainSpec
    from discovery.train_pipeline import TrainSAEJob, run_train_sae

    job = TrainSAEJob(
        model_dir=_setup(args), work_dir=_work_dir(args), out_dir=args.out or EMBEDDED_SAE,
        model_name=args.model_name,
        corpus=_corpus_spec(args), layer=None if args.layer == "auto" else int(args.layer),
        extra_texts=args.extra_texts,
        train=TrainSpec(architecture=args.arch, d_sae=args.d_sae, k=args.k, epochs=args.epochs, seed=args.seed,
                        lr=args.lr),
    )
    report = run_train_sae(job)
    print(json.dumps({"out": str(job.out_dir), "layer": report["layer"], **report["metrics"],
                      "minutes": round(report["seconds"] / 60, 1)}, indent=2))
    print(f"model card: {job.out_dir / 'README.md'}")
    return 0


def _find_features(args: argparse.Namespace) -> int:
    from middleware.assets import EMBEDDED_FEATURES, EMBEDDED_SAE
    from discovery.features_pipeline import FindFeaturesJob, run_find_features
    from discovery.report import format_features_report

    job = FindFeaturesJob(
        model_dir=_setup(args), work_dir=_work_dir(args), sae_dir=args.sae or EMBEDDED_SAE,
        model_name=args.model_name,
        out=args.out or EMBEDDED_FEATURES, corpus=_corpus_spec(args), seed=args.seed,
        heldout_fraction=args.heldout_fraction,
    )
    data = run_find_features(job)
    print(format_features_report(data))
    print(f"features file: {job.out}\nreport: {job.out.parent / 'features_report.md'}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add both subcommands to the `steergate` parser's subparsers."""
    p = sub.add_parser("train-sae", help="train the embedded model's SAE (offline, CPU, resumable)",
                       description="Build the discovery corpus, pick a layer, collect activations and train "
                       "a TopK/AbsTopK SAE; writes the SAE (SAELens format) and its model card.")
    _corpus_args(p)
    p.add_argument("--out", type=Path, help="SAE directory to write (default: the shipped one, "
                   "middleware/data/smollm2-135m-instruct/sae)")
    p.add_argument("--layer", default="auto", help="decoder layer, or 'auto' to choose by probe (default)")
    p.add_argument("--arch", choices=["topk", "abstopk"], default="topk", help="SAE architecture (default topk)")
    p.add_argument("--d-sae", type=int, default=4096, help="number of latents (default 4096)")
    p.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    p.add_argument("--epochs", type=int, default=4, help="passes over the activations (default 4)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    p.add_argument("--extra-texts", type=int, default=2000, help="stdlib docstrings added as training text")
    p.set_defaults(func=_train_sae)

    p = sub.add_parser("find-features", help="select toxicity features and fit the detector",
                       description="Rank the SAE's features on judge-labelled texts, pick a toxicity set, fit "
                       "the detector, and report held-out AUROC beside the independent judges.")
    _corpus_args(p)
    p.add_argument("--sae", type=Path, help="SAE directory (default: the shipped one)")
    p.add_argument("--out", type=Path, help="features file to write (default: the shipped features.json); "
                   "heldout.jsonl and features_report.md are written beside it")
    p.add_argument("--heldout-fraction", type=float, default=0.4, help="share of labelled texts held out")
    p.set_defaults(func=_find_features)
