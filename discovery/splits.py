"""Selection / held-out split by frame AND subject, decided before anything is generated.

Every labelled text comes from a frame (a template: a sentence opener, an instruction, a seed
sentence) filled with a subject (a person, a topic, a word). Frames and subjects are each split
once, seeded: a share `fraction` of each pool is held out. A text is generated only where its
frame and its subject fall on the same side, so a held-out text never shares a frame or a
subject with any selection text, and nothing is generated just to be thrown away. With
fraction f on both axes, held-out texts are f^2 / (f^2 + (1-f)^2) of the generated ones
(31% at f = 0.4).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

__all__ = ["HELDOUT", "SELECTION", "Side", "assign_sides", "combos_by_side"]

Side = Literal["selection", "heldout"]
SELECTION: Side = "selection"
HELDOUT: Side = "heldout"


def assign_sides(items: Sequence[str], fraction: float, seed: int, pool: str) -> dict[str, Side]:
    """Each distinct item -> its side: round(fraction * n) of them held out (at least one of two or more).

    The permutation is seeded by `seed` and the pool's name, so pools split independently and a
    pool's split does not depend on the order other pools are split in.
    """
    unique = sorted(set(items))
    salt = int(hashlib.sha256(f"{seed}:{pool}".encode()).hexdigest()[:12], 16)
    order = random.Random(salt).sample(unique, len(unique))
    n_held = round(len(unique) * fraction)
    if len(unique) >= 2 and fraction > 0:
        n_held = min(max(n_held, 1), len(unique) - 1)
    held = set(order[:n_held])
    return {item: HELDOUT if item in held else SELECTION for item in unique}


def combos_by_side(frames: dict[str, Side], subjects: dict[str, Side]) -> list[tuple[str, str, Side]]:
    """Every (frame, subject, side) whose frame and subject share a side, in a fixed order."""
    return [(f, s, side) for f, side in sorted(frames.items()) for s, s_side in sorted(subjects.items())
            if s_side == side]
