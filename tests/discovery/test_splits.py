"""Frame-and-subject splits: sizes, determinism, independence of pools, diagonal combos only."""

from __future__ import annotations

from discovery.splits import HELDOUT, SELECTION, assign_sides, combos_by_side


def test_assign_sides_holds_out_the_share_and_is_seeded() -> None:
    items = [f"frame {i}" for i in range(10)]
    sides = assign_sides(items, 0.4, seed=0, pool="frames")
    assert sum(s == HELDOUT for s in sides.values()) == 4
    assert sides == assign_sides(list(reversed(items)), 0.4, seed=0, pool="frames")  # order does not matter
    assert sides != assign_sides(items, 0.4, seed=0, pool="other pool")  # pools split independently
    assert set(assign_sides(["a", "b"], 0.01, 0, "p").values()) == {SELECTION, HELDOUT}  # both sides when >= 2


def test_combos_never_mix_sides() -> None:
    frames = assign_sides([f"f{i}" for i in range(6)], 0.5, 1, "f")
    subjects = assign_sides([f"s{i}" for i in range(8)], 0.5, 1, "s")
    combos = combos_by_side(frames, subjects)
    assert combos and all(frames[f] == side == subjects[s] for f, s, side in combos)
    assert len(combos) == 3 * 4 + 3 * 4
    held_frames = {f for f, _, side in combos if side == HELDOUT}
    assert held_frames.isdisjoint({f for f, _, side in combos if side == SELECTION})
