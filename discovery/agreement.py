"""Two readers of the same lines: how often they agree, and the labels both of them give.

The reader's labels (discovery/review.py) are one reading. A second reader reads the same held-out
lines blind (`python -m discovery.review export`, without the first reader's file) into a review
file of their own; this module compares the two:

- agreement over the lines both read: a 3x3 table of verdicts (toxic / benign / unclear), the share
  of lines with the same verdict, and Cohen's kappa (agreement beyond what each reader's own verdict
  rates would give by chance), on all three verdicts and on the lines both called toxic or benign;
  with a held-out file, the same per set and labelled category (where do readers differ: insults?);
- the consensus review: a line keeps a verdict both readers gave, and is `unclear` (so left out of
  the reader's labels) where they differ. `python -m discovery.review report HELDOUT --review
  CONSENSUS` then scores every scorer on the lines both readers agree on.

  python -m discovery.agreement FIRST SECOND [--heldout HELDOUT] [--consensus OUT]

Kappa's 95% interval is a percentile bootstrap over lines (discovery/intervals.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from discovery.intervals import Estimate, group_bootstrap
from discovery.review import REVIEWED_SETS, VERDICTS, load_review, read_heldout, write_review

__all__ = ["cohen_kappa", "compare_readers", "consensus", "format_comparison", "main"]


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two readers' verdicts on the same lines (1: perfect, 0: chance level).

    Raises ValueError where kappa is undefined (both readers give one and the same verdict to every line).
    """
    a, b = np.asarray(first), np.asarray(second)
    observed = float((a == b).mean())
    expected = sum(float((a == v).mean()) * float((b == v).mean()) for v in np.union1d(a, b))
    if expected == 1.0:
        raise ValueError("kappa is undefined when both readers use one verdict throughout")
    return (observed - expected) / (1.0 - expected)


def _agreement(pairs: list[tuple[str, str]], n_boot: int, seed: int) -> dict[str, Any]:
    """Counts, observed agreement and kappa (all verdicts; decisive lines only) of verdict pairs."""
    first = np.array([p[0] for p in pairs])
    second = np.array([p[1] for p in pairs])
    lines = [str(i) for i in range(len(pairs))]  # each line its own bootstrap group
    decisive = np.flatnonzero((first != "unclear") & (second != "unclear"))

    def kappa_on(idx: np.ndarray) -> Estimate | None:
        if len(idx) < 2 or len(np.union1d(first[idx], second[idx])) < 2:
            return None
        return group_bootstrap(lambda i: cohen_kappa(first[idx][i], second[idx][i]),
                               [lines[j] for j in idx], n_boot, seed)

    return {
        "lines": len(pairs),
        "table": {f"{u} / {v}": int(((first == u) & (second == v)).sum())
                  for u in VERDICTS for v in VERDICTS},
        "agree": float((first == second).mean()) if pairs else float("nan"),
        "kappa": kappa_on(np.arange(len(pairs))),
        "decisive_lines": int(len(decisive)),
        "kappa_decisive": kappa_on(decisive),
    }


def compare_readers(first: dict[str, str], second: dict[str, str],
                    held: Sequence[dict[str, Any]] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Agreement of two review files ({text: verdict}) on the lines both read; with the held-out
    texts, also per "set: labelled category" (each line counted once, whatever its views)."""
    both = sorted(set(first) & set(second))
    out = {"overall": _agreement([(first[t], second[t]) for t in both], n_boot, seed), "by_category": {}}
    if held is not None:
        per: dict[str, list[tuple[str, str]]] = {}
        seen: set[str] = set()
        for t in held:
            text = t["visible"]
            if t["set"] in REVIEWED_SETS and text in first and text in second and text not in seen:
                seen.add(text)
                per.setdefault(f"{t['set']}: {t['category']}", []).append((first[text], second[text]))
        out["by_category"] = {k: _agreement(v, n_boot, seed) for k, v in sorted(per.items())}
    return out


def consensus(first: dict[str, str], second: dict[str, str]) -> dict[str, str]:
    """The lines both read: the verdict where the two agree, `unclear` where they differ."""
    return {t: first[t] if first[t] == second[t] else "unclear" for t in first if t in second}


def _kappa_text(k: Estimate | None) -> str:
    return "undefined" if k is None else f"{k[0]:.2f} [{k[1]:.2f}, {k[2]:.2f}]"


def format_comparison(result: dict[str, Any]) -> list[str]:
    o = result["overall"]
    lines = [f"Lines both read: {o['lines']}; same verdict: {o['agree']:.1%}; Cohen's kappa "
             f"{_kappa_text(o['kappa'])}; on the {o['decisive_lines']} lines neither called unclear: kappa "
             f"{_kappa_text(o['kappa_decisive'])}.", "",
             "| first reader \\ second reader | " + " | ".join(VERDICTS) + " |",
             "|---|" + "---|" * len(VERDICTS)]
    lines += [f"| {u} | " + " | ".join(str(o["table"][f"{u} / {v}"]) for v in VERDICTS) + " |"
              for u in VERDICTS]
    if result["by_category"]:
        lines += ["", "| set: labelled category | lines | same verdict | kappa | both toxic | both benign "
                  "| toxic vs benign | one unclear |", "|---|---|---|---|---|---|---|---|"]
        for name, a in result["by_category"].items():
            t = a["table"]
            split = t["toxic / benign"] + t["benign / toxic"]
            one_unclear = a["lines"] - a["decisive_lines"] - t["unclear / unclear"]
            lines.append(f"| {name} | {a['lines']} | {a['agree']:.0%} | {_kappa_text(a['kappa'])} | "
                         f"{t['toxic / toxic']} | {t['benign / benign']} | {split} | {one_unclear} |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m discovery.agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path, help="a review file (e.g. discovery/data/review.jsonl)")
    p.add_argument("second", type=Path, help="another reader's review file of the same lines")
    p.add_argument("--heldout", type=Path,
                   help="a held-out file: agreement per set and labelled category too")
    p.add_argument("--consensus", type=Path, metavar="OUT", help="write the consensus review file here")
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args(argv)
    first, second = load_review(args.first), load_review(args.second)
    held = read_heldout(args.heldout) if args.heldout else None
    print("\n".join(format_comparison(compare_readers(first, second, held, args.n_boot))))
    if args.consensus:
        merged = consensus(first, second)
        write_review(args.consensus, [{"text": t, "verdict": v} for t, v in merged.items()])
        print(f"consensus of {len(merged)} lines -> {args.consensus}")


if __name__ == "__main__":
    main()
