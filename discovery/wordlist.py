"""The `better-profanity` word list: toxic material for the lexical corpus and a judge's lexicon.

One floor below both users (discovery/corpus.py builds prompts from it, discovery/judges.py
matches it), so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["profanity_words"]


def profanity_words() -> list[str]:
    """The alphabetic entries of better-profanity's word list, in file order."""
    import better_profanity

    path = Path(better_profanity.__file__).parent / "profanity_wordlist.txt"
    words = [w.strip() for w in path.read_text().split()]
    return list(dict.fromkeys(w for w in words if w.isalpha()))
