"""Independent toxicity judges: the labellers of the discovery corpus and the peers in reports.

A judge never is the product's detector: it scores plain text from outside the model. Two ship:
- `alt-profanity-check` (default labeller): a linear classifier trained on human-labelled comments.
- `better-profanity`: its word list; 1.0 when a listed word occurs as a word, else 0.0.
Both install from PyPI and run offline. Add another by registering a `Judge` under a name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["Judge", "JUDGES", "TOXIC_AT", "get_judge"]

# Where the reports call a text toxic: the classifier's decision boundary (and any word-list hit).
# The discovery corpus labels with a stricter cut of its own (discovery/corpus.py).
TOXIC_AT = 0.5


class Judge(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[float]:
        """Toxicity of each text in [0, 1]; higher means more toxic."""
        ...


class AltProfanityCheck:
    name = "alt-profanity-check"

    def score(self, texts: Sequence[str]) -> list[float]:
        from profanity_check import predict_prob

        return [float(p) for p in predict_prob(list(texts))] if texts else []


class BetterProfanity:
    """better-profanity's word list, matched as whole words (case-insensitive).

    The package's own `contains_profanity` also expands every entry into character variants,
    which takes ~35 ms per text; the list already spells out the variants it cares about.
    """

    name = "better-profanity"

    def __init__(self) -> None:
        from discovery.wordlist import profanity_words

        self._words = frozenset(w.lower() for w in profanity_words())

    def score(self, texts: Sequence[str]) -> list[float]:
        return [1.0 if any(w in self._words for w in _WORD.findall(t.lower())) else 0.0 for t in texts]


_WORD = re.compile(r"[a-z]+")


JUDGES: dict[str, Callable[[], Judge]] = {
    AltProfanityCheck.name: AltProfanityCheck,
    BetterProfanity.name: BetterProfanity,
}


def get_judge(name: str) -> Judge:
    try:
        return JUDGES[name]()
    except KeyError:
        raise ValueError(f"unknown judge {name!r}; known: {sorted(JUDGES)}") from None
