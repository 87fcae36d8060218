"""The SAE's model card (README.md next to cfg.json), written from `train-sae`'s report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from discovery.defaults import DEFAULT_LAYER

__all__ = ["write_model_card"]


def _probe_table(probe: dict[str, Any] | None) -> str:
    if not probe:
        return ("The layer is `train-sae`'s default (or was given with `--layer`): chosen by comparing the held-out "
                "detector AUROC of SAEs trained at several layers (steergate README, \"Layer\"), not by the probe.\n")
    lines = ["| layer | probe AUROC | median residual norm |", "|---|---|---|"]
    for row in probe["layers"]:
        mark = " **(chosen)**" if row["layer"] == probe["chosen"] else ""
        lines.append(f"| {row['layer']}{mark} | {row['probe_auroc']:.4f} | {row['median_norm']} |")
    return (
        f"Chosen by measurement: a logistic probe on each layer's mean-pooled residual stream predicts the "
        f"judge's labels ({probe['texts']} texts, balanced, 5-fold cross-validated AUROC). Rule: "
        f"{probe['rule']}; an earlier layer leaves more of the network downstream of a steering edit.\n\n"
        + "\n".join(lines) + "\n"
    )


def write_model_card(path: Path, report: dict[str, Any]) -> None:
    m, spec = report["metrics"], report["train_spec"]
    # The command that trains this SAE again: the layer flag unless it is the default.
    layer_flag = (" --layer auto" if report.get("layer_probe")
                  else "" if report["layer"] == DEFAULT_LAYER else f" --layer {report['layer']}")
    corpus_rows = ["| source | texts | toxic | benign | judge unsure |", "|---|---|---|---|---|"]
    for source, s in report["corpus"].items():
        corpus_rows.append(f"| {source} | {s['texts']} | {s['toxic']} | {s['benign']} | {s['unsure']} |")
    text = f"""# steergate SAE for {report['model_name']}, layer {report['layer']} ({spec['architecture']}, {spec['d_sae']} latents, k={spec['k']})

A sparse autoencoder on the residual stream after decoder layer {report['layer']} of SmolLM2-135M-Instruct
(`{report['hook_name']}`; vLLM's hidden + residual after that layer), in the SAELens format (`cfg.json` +
`sae_weights.safetensors`, fp16 on disk; steergate computes in fp32). Trained on CPU by:

    .venv/bin/steergate train-sae{layer_flag}          # then: .venv/bin/steergate find-features

## Metrics (tokens held out of training: {report['eval_tokens']} tokens of {report['eval_texts']} texts)

| metric | value |
|---|---|
| fraction of variance unexplained (FVU) | {m['fvu']:.4f} |
| L0 (active latents per token) | {m['l0']:.1f} |
| dead latents (never fire on the held-out tokens) | {m['dead_fraction']:.2%} |
| next-token loss, clean | {m['loss_clean']:.4f} |
| next-token loss, SAE reconstruction spliced in | {m['loss_spliced']:.4f} |
| increase in next-token loss (delta loss; {report['loss_texts']} held-out texts) | {m['delta_loss']:.4f} |
| next-token loss, layer output zeroed (for scale) | {m['loss_zero_ablated']:.4f} |
| loss recovered vs zero-ablation | {m['loss_recovered']:.2%} |

Counted tokens exclude each text's first token (the attention sink) and special tokens, in
training, in these metrics and in detection.

## Layer

{_probe_table(report.get('layer_probe'))}
## Data

{report['train_tokens']} training tokens: the selection split of the lexical corpus ({report['selection_texts']} texts:
the model's own generations, seeded; `discovery/corpus.py`; held-out texts never seen) plus
{report['extra_texts']} Python standard-library docstrings for bulk benign text. Labels (from the independent
judge `{report['data_spec']['corpus']['judge']}`) are not used to train the SAE.

{chr(10).join(corpus_rows)}

## Training

{spec['architecture']} SAE, d_sae={spec['d_sae']}, k={spec['k']}, Adam lr={spec['lr']}, batches of
{spec['batch_tokens']} tokens, {spec['epochs']} epochs ({report['training']['steps']} steps), AuxK
(k_aux={spec['aux_k']}, coefficient {spec['aux_coef']:.4f}), seed {spec['seed']}. Run time on this machine:
{report['seconds'] / 60:.1f} min (including corpus generation when not cached).

Full numbers: `train_report.json`. Training spec:

```json
{json.dumps(spec, indent=2)}
```
"""
    path.write_text(text)
