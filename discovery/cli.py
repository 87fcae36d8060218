"""`steergate train-sae`, `labels`, `find-features` and `tier-gates`: argument parsing for the offline
pipelines."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from discovery.defaults import DEFAULT_LAYER, INSTRUCTED_SCALE, INSTRUCTED_SHOTS

if TYPE_CHECKING:
    from discovery.labelled import DataSpec

__all__ = ["add_commands"]


def _corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", type=Path, help="cache for corpus, activations, checkpoints "
                   "(default: ~/.cache/steergate/discovery/MODEL_NAME; $STEERGATE_CACHE_DIR moves ~/.cache/steergate)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything (default 0)")
    p.add_argument("--scale", type=float, default=1.0, help="lexical corpus size factor (default 1.0; tests use ~0.02)")
    p.add_argument("--instructed-scale", type=float, default=INSTRUCTED_SCALE,
                   help=f"share of the instructed sets' (frame, subject) combinations asked for (default {INSTRUCTED_SCALE})")
    p.add_argument("--instructed-shots", type=int, default=INSTRUCTED_SHOTS,
                   help="exemplar answers shown before each instructed contrast request "
                   f"(default {INSTRUCTED_SHOTS}; 0: zero-shot)")
    p.add_argument("--heldout-fraction", type=float, default=0.4,
                   help="share of every pool of frames and of subjects held out (default 0.4)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per corpus text (default 32)")
    p.add_argument("--judge", default="alt-profanity-check", help="labelling judge (default alt-profanity-check)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch CPU threads (default: all cores; on a busy machine 1 is often several times faster)")
    p.add_argument("--model", type=Path, help="Hugging Face model directory (default: the embedded SmolLM2)")
    p.add_argument("--model-name", default="smollm2-135m-instruct", help="name recorded in the outputs")


def _data_spec(args: argparse.Namespace) -> DataSpec:
    from discovery.corpus import CorpusSpec
    from discovery.instructed import InstructedSpec
    from discovery.labelled import DataSpec

    return DataSpec(
        corpus=CorpusSpec(seed=args.seed, scale=args.scale, max_new_tokens=args.max_new_tokens, judge=args.judge,
                          heldout_fraction=args.heldout_fraction),
        instructed=InstructedSpec(seed=args.seed, scale=args.instructed_scale, heldout_fraction=args.heldout_fraction,
                                  shots=args.instructed_shots),
    )


def _work_dir(args: argparse.Namespace) -> Path:
    from middleware.settings import cache_dir

    return args.work_dir or cache_dir() / "discovery" / args.model_name


def _setup(args: argparse.Namespace) -> Path:
    import torch

    from middleware.embedded import embedded_model_dir

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return args.model or embedded_model_dir()


def _train_sae(args: argparse.Namespace) -> int:
    from discovery.train import TrainSpec
    from discovery.train_pipeline import TrainSAEJob, run_train_sae
    from middleware.assets import EMBEDDED_SAE

    job = TrainSAEJob(
        model_dir=_setup(args), work_dir=_work_dir(args), out_dir=args.out or EMBEDDED_SAE,
        model_name=args.model_name,
        data=_data_spec(args), layer=None if args.layer == "auto" else int(args.layer),
        extra_texts=args.extra_texts,
        train=TrainSpec(architecture=args.arch, d_sae=args.d_sae, k=args.k, epochs=args.epochs, seed=args.seed,
                        lr=args.lr),
    )
    report = run_train_sae(job)
    print(json.dumps({"out": str(job.out_dir), "layer": report["layer"], **report["metrics"],
                      "minutes": round(report["seconds"] / 60, 1)}, indent=2))
    print(f"model card: {job.out_dir / 'README.md'}")
    return 0


def _labels(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from discovery.features_pipeline import filter_table
    from discovery.labelled import build_labelled, load_labelled, set_stats

    model_dir = _setup(args)
    paths = build_labelled(model_dir, _work_dir(args), _data_spec(args))
    texts, _, instructed = load_labelled(paths, AutoTokenizer.from_pretrained(model_dir))
    print(json.dumps({"files": [str(p) for p in paths], "texts": set_stats(texts),
                      "instructed_filter": filter_table(instructed)}, indent=2))
    return 0


def _find_features(args: argparse.Namespace) -> int:
    from discovery.features_pipeline import FindFeaturesJob, run_find_features
    from discovery.report import format_features_report
    from middleware.assets import EMBEDDED_FEATURES, EMBEDDED_SAE

    job = FindFeaturesJob(
        model_dir=_setup(args), work_dir=_work_dir(args), sae_dir=args.sae or EMBEDDED_SAE,
        model_name=args.model_name,
        out=args.out or EMBEDDED_FEATURES, data=_data_spec(args), seed=args.seed,
        signed=not args.nonneg_weights, review_selection=args.review_selection,
    )
    data = run_find_features(job)
    print(format_features_report(data))
    print(f"features file: {job.out}\nreport: {job.out.parent / 'features_report.md'}")
    return 0


def _gates(args: argparse.Namespace) -> int:
    from discovery.tier_gates import format_gates, run_gates
    from middleware.assets import EMBEDDED_FEATURES

    out = run_gates(_setup(args), _work_dir(args), _data_spec(args), args.features or EMBEDDED_FEATURES,
                    args.top_k, [float(x) for x in args.multiples.split(",")],
                    [float(x) for x in args.levels.split(",")])
    print(f"gates of {out['features']}:\n" + format_gates(out["rows"]))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the offline pipelines' subcommands to the `steergate` parser's subparsers."""
    p = sub.add_parser("train-sae", help="train the embedded model's SAE (offline, CPU, resumable)",
                       description="Build the discovery corpus, pick a layer, collect activations and train "
                       "a TopK/AbsTopK SAE; writes the SAE (SAELens format) and its model card.")
    _corpus_args(p)
    p.add_argument("--out", type=Path, help="SAE directory to write (default: the shipped one, "
                   "middleware/data/smollm2-135m-instruct/sae)")
    p.add_argument("--layer", default=str(DEFAULT_LAYER),
                   help=f"decoder layer (default {DEFAULT_LAYER}, the shipped SAE's), or 'auto' to choose by a linear probe")
    p.add_argument("--arch", choices=["topk", "abstopk"], default="topk", help="SAE architecture (default topk)")
    p.add_argument("--d-sae", type=int, default=4096, help="number of latents (default 4096)")
    p.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    p.add_argument("--epochs", type=int, default=4, help="passes over the activations (default 4)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    p.add_argument("--extra-texts", type=int, default=2000, help="stdlib docstrings added as training text")
    p.set_defaults(func=_train_sae)

    p = sub.add_parser("labels",
                       help="generate the labelled sets (lexical corpus, instructed sets, short lines)",
                       description="Generate (or resume) the lexical corpus, the instructed sets and the "
                       "short lines in the work directory and print texts per category and split and the "
                       "instructed filter's counts; "
                       "train-sae and find-features build the same files when they are missing.")
    _corpus_args(p)
    p.set_defaults(func=_labels)

    p = sub.add_parser("find-features", help="select toxicity features and fit the detector",
                       description="Rank the SAE's features on judge-labelled texts, pick a toxicity set, fit "
                       "the detector, and report held-out AUROC beside the independent judges.")
    _corpus_args(p)
    p.add_argument("--sae", type=Path, help="SAE directory (default: the shipped one)")
    p.add_argument("--out", type=Path, help="features file to write (default: the shipped features.json); "
                   "heldout.jsonl and features_report.md are written beside it")
    p.add_argument("--nonneg-weights", action="store_true",
                   help="only toxic evidence: non-negative detector weights (the form of the detectors "
                   "shipped so far; default: weights of both signs, benign evidence counting against)")
    p.add_argument("--review-selection", action=argparse.BooleanOptionalAction, default=True,
                   help="fit on the reader's labels where discovery/data/review.jsonl has read a "
                   "selection line (discovery/review.py; the default since 2026-11-28); "
                   "--no-review-selection: the sets' own labels everywhere")
    p.set_defaults(func=_find_features)

    p = sub.add_parser("tier-gates", help="how often tier gates open on toxic vs benign text (offline)",
                       description="For a features file: the share of labelled tokens and of held-out texts "
                       "where each kind of tier gate opens (feature gates at multiples of their thresholds, "
                       "detector gates at logit levels), from find-features' cached activations.")
    _corpus_args(p)
    p.add_argument("--features", type=Path, help="features file (default: the shipped one)")
    p.add_argument("--top-k", type=int, default=20,
                   help="feature gates over the k heaviest toxic features (default 20)")
    p.add_argument("--multiples", default="1,2,3", help="feature gate multiples (default 1,2,3)")
    p.add_argument("--levels", default="-8,-7,-6,-5", help="detector gate logit levels (default -8,-7,-6,-5)")
    p.set_defaults(func=_gates)
