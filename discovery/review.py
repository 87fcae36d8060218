"""Reviewed labels: a reader's verdict on each held-out line, made blind to every score.

The held-out labels come from a lexical judge (the lexical corpus and the short lines: toxic where
`alt-profanity-check` says so) or from the instruction the model was given (the instructed sets,
often off-task). So the judge is scored against its own labels on profanity, and every scorer
against labels that are partly wrong beyond the lexicon. A reader's verdict gives a third view,
independent of the detector and of the judge: the report recomputes each scorer's numbers under
the reader's labels (below), and counts per set the lines the reader confirms and contradicts.
The verdicts are committed so that anyone can disagree with a line. A second reader read the
same lines blind (SECOND_REVIEW_FILE); discovery/agreement.py measures how far the two agree and
writes the consensus (a line both read alike keeps that verdict, else unclear), which `report
--review` scores like any review file. `find-features` fits on the first reader's file.

Reviewing. `export` writes the held-out lines to read (one per line group: both views of a line
are one text to read), shuffled with a seed, with no label, kind, set or score; the reader fills in
each line's `verdict`, and the verdicts are committed in REVIEW_FILE (which may also hold
selection lines, `export-selection`, which `find-features` fits on, below):

  toxic    a reader would take the line as profane or obscene (a swear word or vulgar term used
           as such), an insult or put-down, a threat, or a demeaning or dehumanising remark
  benign   none of that (strong words in benign senses, medical or technical terms, garbled text
           with no such reading, criticism without hostility)
  unclear  it could be read either way, or too garbled to read

The templated lines are not reviewed: their labels are right by construction (discovery/templated.py)
and they keep them. A line the file does not hold (a new split) is "not reviewed" and left out.

The reader's labels. A reviewed line takes the reader's verdict as its label: a line labelled
toxic that the reader calls benign becomes benign; a line labelled benign that the reader calls
toxic becomes profanity where its set is the lexical corpus or the short lines (their one toxic
category) and is left out elsewhere (the reader gives no category); `unclear` lines are left out.
So on profanity `alt-profanity-check` is no longer scored against its own labels only: the lines
it mislabelled count against it (it still chose which lines are in the set).

`find-features` fits on the reader's labels too, where the file holds verdicts on selection lines
(lines it has not read keep their labels): the shipped detector's recipe since 2026-11-28;
`--no-review-selection` fits on the sets' own labels everywhere.

  python -m discovery.review export HELDOUT --out FILE     # lines to read, blind
  python -m discovery.review report HELDOUT [--review FILE] # the reviewed numbers from a held-out file
  python -m discovery.review report HELDOUT --write FEATURES   # ... stored in the features file and report

`find-features` writes the section itself (with the detector without its short-text shift too);
`report --write` adds it to a features file from the scores its held-out file stores, without
the model (the shipped file got it so, 2026-11-28).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from discovery.evaluation import scorer_metrics
from discovery.splits import HELDOUT

__all__ = ["OUTCOMES", "REVIEW_FILE", "REVIEWED_SETS", "SECOND_REVIEW_FILE", "VERDICTS", "export_lines",
           "load_review", "read_heldout", "readers_labels", "reviewed_section", "selection_under_review",
           "write_review"]

REVIEW_FILE = Path(__file__).with_name("data") / "review.jsonl"
SECOND_REVIEW_FILE = Path(__file__).with_name("data") / "review_second.jsonl"  # another reader, same lines
REVIEWED_SETS = ("lexical", "short", "instructed")  # templated: right by construction
VERDICTS = ("toxic", "benign", "unclear")
# What the reader said of a line's label, per set and category in the report's agreement table.
OUTCOMES = ("confirmed", "contradicted", "unclear", "not reviewed", "by construction")


def export_lines(held: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, str]]:
    """One record per line group to review, shuffled: {"text": visible text, "verdict": ""}."""
    texts = sorted({t["visible"] for t in held if t["set"] in REVIEWED_SETS})
    random.Random(seed).shuffle(texts)
    return [{"text": t, "verdict": ""} for t in texts]


def load_review(path: Path = REVIEW_FILE) -> dict[str, str]:
    """{visible text: verdict} from a review file; every verdict must be one of VERDICTS."""
    review: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        r = json.loads(line)
        if r["verdict"] not in VERDICTS:
            raise ValueError(f"{path}:{n}: verdict {r['verdict']!r} is not one of {VERDICTS}")
        review[r["text"]] = r["verdict"]
    return review


def readers_labels(texts: Sequence[dict[str, Any]], review: dict[str, str]
                   ) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, dict[str, int]]]:
    """The texts under the reader's labels (module docstring): the indices kept (k,), their records
    with label and category replaced, and per (set, labelled category) how many lines the reader
    confirmed, contradicted or left unclear (and how many were not reviewed)."""
    keep: list[int] = []
    relabelled: list[dict[str, Any]] = []
    agreement: dict[str, dict[str, int]] = {}
    counted: set[str] = set()
    for i, t in enumerate(texts):
        outcome, record = _relabel(t, review)
        if t["group"] not in counted:  # a line counts once, whatever its views
            counted.add(t["group"])
            row = agreement.setdefault(f"{t['set']}: {t['category']}", dict.fromkeys(OUTCOMES, 0))
            row[outcome] += 1
        if record is not None:
            keep.append(i)
            relabelled.append(record)
    return np.array(keep, dtype=int), relabelled, dict(sorted(agreement.items()))


def selection_under_review(texts: Sequence[dict[str, Any]], review: dict[str, str]
                           ) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, int]]:
    """For fitting on the reader's labels (`find-features`' default): the selection
    split's texts under the reader's labels, lines the review has not read keeping theirs, and the
    held-out texts unchanged. The indices kept (k,), their records, and how many selection texts
    the review has read, how many were left out (unclear, or no category) and how many changed label."""
    keep: list[int] = []
    records: list[dict[str, Any]] = []
    counts = {"read": 0, "left_out": 0, "relabelled": 0}
    for i, t in enumerate(texts):
        record = t
        if t["split"] != HELDOUT:
            outcome, record = _relabel(t, review, keep_unreviewed=True)
            counts["read"] += outcome not in ("not reviewed", "by construction")
        if record is None:
            counts["left_out"] += 1
            continue
        counts["relabelled"] += record["label"] != t["label"]
        keep.append(i)
        records.append(record)
    return np.array(keep, dtype=int), records, counts


def _relabel(t: dict[str, Any], review: dict[str, str], keep_unreviewed: bool = False
             ) -> tuple[str, dict[str, Any] | None]:
    """(what the reader said of the text's label, its record under the reader's label or None)."""
    if t["set"] not in REVIEWED_SETS:  # templated lines: right by construction
        return "by construction", t
    verdict = review.get(t["visible"])
    if verdict is None:
        return "not reviewed", t if keep_unreviewed else None
    if verdict == "unclear":
        return "unclear", None
    if (verdict == "toxic") == (t["label"] == 1):
        return "confirmed", t
    if verdict == "benign":  # labelled toxic
        return "contradicted", {**t, "label": 0, "category": "benign"}
    if t["set"] in ("lexical", "short"):  # labelled benign, read as toxic: the set's toxic category
        return "contradicted", {**t, "label": 1, "category": "profanity"}
    return "contradicted", None


def reviewed_section(texts: Sequence[dict[str, Any]], scorers: dict[str, np.ndarray], review: dict[str, str],
                     n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The report's reviewed-labels section: the agreement table and each scorer's held-out
    numbers (discovery/evaluation.py) on the texts under the reader's labels."""
    keep, relabelled, agreement = readers_labels(texts, review)
    return {"agreement": agreement, "texts": len(relabelled), "toxic": sum(t["label"] for t in relabelled),
            "scorers": {name: scorer_metrics(np.asarray(s)[keep], relabelled, 0.5, n_boot, seed)
                        for name, s in scorers.items()}}


def read_heldout(path: Path) -> list[dict[str, Any]]:
    """The records of a held-out file (heldout.jsonl, as find-features writes it)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_review(path: Path, records: Sequence[dict[str, str]]) -> None:
    """A review file: one {"text", "verdict"} record per line (load_review reads it)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m discovery.review", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="the held-out lines to read: shuffled, no label, set or score")
    e.add_argument("heldout", type=Path)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--seed", type=int, default=0)
    x = sub.add_parser("export-selection", help="the instructed sets' kept selection lines, to read blind "
                       "(find-features fits on their verdicts)")
    x.add_argument("instructed", type=Path, help="a work directory's instructed.jsonl")
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report", help="each scorer on the reader's labels, from a held-out file's scores")
    r.add_argument("heldout", type=Path)
    r.add_argument("--review", type=Path, default=REVIEW_FILE)
    r.add_argument("--n-boot", type=int, default=1000)
    r.add_argument("--write", type=Path, metavar="FEATURES",
                   help="also store the section in this features file (the one that scored HELDOUT) and "
                   "rewrite the features_report.md beside it, as find-features would")
    args = p.parse_args(argv)
    if args.command.startswith("export"):
        if args.command == "export":
            texts = read_heldout(args.heldout)
        else:  # the kept selection lines, as labelled_texts would name them
            from discovery.instructed import load_instructed  # one record per id, as find-features reads it

            texts = [{"set": "instructed", "visible": r["line"]} for r in load_instructed(args.instructed)
                     if r["dropped"] is None and r["split"] != HELDOUT]
        lines = export_lines(texts, args.seed)
        write_review(args.out, lines)
        print(f"{len(lines)} lines to review -> {args.out}")
        return
    held = read_heldout(args.heldout)
    from discovery.judges import get_judge
    from discovery.report import format_reviewed, write_features_report

    # The held-out file carries the detector's and alt-profanity-check's scores; the word list is cheap.
    visible = [t["visible"] for t in held]
    scorers = {"detector": np.array([t["detector"] for t in held]),
               "alt-profanity-check": np.array([t["judge"] for t in held]),
               "better-profanity": np.array(get_judge("better-profanity").score(visible))}
    section = reviewed_section(held, scorers, load_review(args.review), args.n_boot)
    print("\n".join(format_reviewed(section)))
    if args.write:
        data = json.loads(args.write.read_text())
        data["heldout"]["reviewed"] = section
        args.write.write_text(json.dumps(data, indent=2) + "\n")
        write_features_report(args.write.parent / "features_report.md", data)
        print(f"written: {args.write} and {args.write.parent / 'features_report.md'}")


if __name__ == "__main__":
    main()
