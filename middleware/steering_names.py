"""The steering vocabulary: tier names and intervention modes, without torch.

The policy file (policies/, pure python) and the request protocol name tiers and modes too; they
import them from here so that checking a policy file does not load torch.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["MODES", "Mode", "OFF_TIER", "TIER_NAMES", "TierName"]

Mode = Literal["add", "clamp", "ablate"]
MODES: tuple[str, ...] = get_args(Mode)
# The tiers `middleware.tiers.default_tiers` builds: the names a request's `steering.tier` may use.
TierName = Literal["off", "light", "medium", "strong"]
TIER_NAMES: tuple[str, ...] = get_args(TierName)
OFF_TIER = "off"
