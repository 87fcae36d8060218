"""SAE steering as a residual-stream middleware: each request steered by its own tier or spec.

Follows "Breaking Bad Tokens: Detoxification of LLMs Using Sparse Autoencoders": after the SAE's
layer, the stream is moved along SAE decoder directions (add / clamp / ablate, optionally gated
per token; see middleware/interventions.py). Which request gets what is read each step from
`BatchLayout.request_args[r]["steering"]`: {"tier": name} selects a preset from the configured
`tiers` (middleware/tiers.py), {"interventions": [...]} is a client's explicit list.

A request may also say which of its tokens are steered ("steer_positions": "prompt", "generated" or
"both"), overriding the tier's or the middleware's default.

Isolation: a request's tokens depend only on its own spec (a `PlanBatch` row per request), and
tokens of requests without steering are returned with their exact original values. A bad spec
never raises here (the API layer validates with `validate_steering`): it leaves that request
unsteered and is logged once.

Side output `steered` (T,) float: 1.0 where the token's stream moved. `annotate` turns it into
safety["prompt"|"completion"]["steered_tokens"]; safety["tier"] is the server's to set (it knows
the request; see `tier_label`), since annotate sees only per-token records.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from middleware.hooks import BatchLayout, HookResult, ResidualMiddleware, to_device
from middleware.interventions import PlanBatch, SteeringPlan, apply_steering
from middleware.sae import SAE, load_sae, load_sae_config
from middleware.tiers import (
    STEER_POSITIONS,
    default_tiers,
    parse_interventions,
    parse_preset,
    tier_label,
    validate_steering,
)

__all__ = [
    "STEERED",
    "SAESteeringMiddleware",
    "default_tiers",
    "steering_validator",
    "tier_label",
    "validate_steering",
]

logger = logging.getLogger(__name__)

# Name of the per-token side output.
STEERED = "steered"
# Position-mode codes, indexable per token: which tokens of a request may be steered.
_PROMPT, _GENERATED, _BOTH = 0, 1, 2
_POSITION_CODE = {"prompt": _PROMPT, "generated": _GENERATED, "both": _BOTH}
# Compiled explicit-intervention plans kept; clients can send arbitrarily many distinct specs.
PLAN_CACHE_SIZE = 1024

# What one request resolves to: a cache key (None = no steering), its plan, its position code.
_Resolved = tuple[Any, SteeringPlan | None, int]
_UNSTEERED: _Resolved = (None, None, _GENERATED)


class SAESteeringMiddleware(ResidualMiddleware):
    """Steer each request's residual stream after `layer` with the SAE at `sae_path`.

    tiers: {name: {"interventions": [...], "gate": {...} | None, "steer_positions"?: ...}}, e.g.
        `default_tiers(features)`; checked against the SAE here, so a config error fails at start.
    steer_positions: which tokens may be steered ("prompt", "generated" or "both"), unless a
        tier overrides it. Note that "generated" leaves the last prompt token, and so the first
        completion token's distribution, unsteered.
    skip_token_ids: token ids never steered (chat-template and other special tokens). Used only
        when the layout carries `token_ids` (T,), as vLLM's runtime and the offline path do.
    max_interventions: the longest explicit list accepted (longer ones are not steered).
    sae_dtype: dtype the SAE computes in (an fp16 file is upcast: fp16 matmuls are slow on CPU);
        None keeps the file's dtype.
    """

    handles_steering = True

    def __init__(
        self,
        layer: int,
        d_model: int,
        sae_path: str,
        tiers: Mapping[str, Any],
        steer_positions: str = "generated",
        skip_token_ids: Sequence[int] | None = None,
        max_interventions: int = 16,
        sae_dtype: str | None = "float32",
    ) -> None:
        super().__init__(layer, d_model)
        if steer_positions not in STEER_POSITIONS:
            raise ValueError(f"steer_positions must be one of {STEER_POSITIONS}, got {steer_positions!r}")
        self.sae: SAE = load_sae(sae_path, dtype=sae_dtype)
        cfg = self.sae.cfg
        if cfg.d_in != d_model:
            raise ValueError(f"SAE at {sae_path} has d_in={cfg.d_in}, but the model's d_model is {d_model}")
        # A resid_pre SAE of layer L reads the output of layer L - 1.
        sae_layer = None if cfg.hook_layer is None else cfg.hook_layer - ("resid_pre" in cfg.hook_name)
        if sae_layer is not None and sae_layer != layer:
            logger.warning(
                "SAE %s was trained on %r (layer %d) but hooks layer %d",
                sae_path,
                cfg.hook_name,
                sae_layer,
                layer,
            )
        self.steer_positions = steer_positions
        self.max_interventions = int(max_interventions)
        skip = sorted(set(skip_token_ids or []))
        self.skip_token_ids = torch.tensor(skip, dtype=torch.long, device=self.sae.device)  # (k,)
        self._tiers: dict[str, _Resolved] = {}
        for name, raw in tiers.items():
            preset = parse_preset(name, raw)
            try:
                plan = SteeringPlan.compile(preset.interventions, self.sae, preset.gate)
            except ValueError as e:
                raise ValueError(f"tier {name!r}: {e}") from None
            code = _POSITION_CODE[preset.steer_positions or steer_positions]
            self._tiers[name] = (("tier", name), None if plan.is_empty else plan, code)
        self._custom: OrderedDict[Any, SteeringPlan | None] = OrderedDict()
        # The last step's PlanBatch, keyed by its requests' plan keys: decode steps usually
        # repeat the batch composition, and then only the token rows change.
        self._last_batch: tuple[tuple[Any, ...], PlanBatch] | None = None

    @property
    def tiers(self) -> list[str]:
        return list(self._tiers)

    def __call__(self, stream: torch.Tensor, layout: BatchLayout) -> HookResult:
        """stream (T, d_model) -> HookResult(edited stream (T, d_model) or None, {"steered": (T,)})."""
        resolved = [self._resolve(args) for args in layout.request_args]  # (R,)
        if all(plan is None for _, plan, _ in resolved):
            return HookResult(None, {STEERED: torch.zeros(stream.shape[0], device=stream.device)})
        self._ensure_device(stream.device)
        batch = self._plan_batch(resolved, layout.token_request)
        mask = self._token_mask(layout, batch.rows, [code for _, _, code in resolved])  # (T,)
        edited, changed = apply_steering(stream, self.sae, batch, mask)
        return HookResult(edited, {STEERED: changed.to(torch.float32)})

    def _ensure_device(self, device: torch.device) -> None:
        """Move the SAE and the skip ids to the stream's device, once (a copy per step would make a
        GPU's host wait); the cached PlanBatch lives on the old one."""
        if self.sae.device != device:
            self.sae.to(device)
            self.skip_token_ids = self.skip_token_ids.to(device)
            self._last_batch = None

    def _resolve(self, args: Any) -> _Resolved:
        """One request's (cache key, plan or None, position code) from its request args."""
        steering = args.get("steering") if isinstance(args, Mapping) else None
        if not isinstance(steering, Mapping) or ("tier" in steering) == ("interventions" in steering):
            return _UNSTEERED
        resolved = self._resolve_spec(steering)
        positions = steering.get("steer_positions")
        if resolved[1] is None or not isinstance(positions, str) or positions not in _POSITION_CODE:
            return resolved
        # The request chose its own positions: a different plan row, so a different cache key.
        return ((*resolved[0], positions), resolved[1], _POSITION_CODE[positions])

    def _resolve_spec(self, steering: Mapping[str, Any]) -> _Resolved:
        """A tier's or an explicit list's (cache key, plan or None, position code)."""
        if "tier" in steering:
            tier = steering["tier"]
            return self._tiers.get(tier, _UNSTEERED) if isinstance(tier, str) else _UNSTEERED
        items = steering["interventions"]
        # repr is exact for the JSON values a request carries, cheap, and always hashable; a
        # failed spec is cached too, so it is logged once rather than at every step.
        key = ("custom", repr(items))
        if key in self._custom:
            self._custom.move_to_end(key)
            plan = self._custom[key]
        else:
            plan = self._compile_custom(items)
            self._custom[key] = plan
            if len(self._custom) > PLAN_CACHE_SIZE:
                self._custom.popitem(last=False)
        return (key, plan, _POSITION_CODE[self.steer_positions]) if plan is not None else _UNSTEERED

    def _compile_custom(self, items: Any) -> SteeringPlan | None:
        """A request's explicit interventions as a plan; None (and a warning) if they cannot run."""
        try:
            plan = SteeringPlan.compile(parse_interventions(items, self.max_interventions), self.sae)
        except (ValueError, TypeError) as e:
            logger.warning("request not steered: %s", e)
            return None
        return None if plan.is_empty else plan

    def _plan_batch(self, resolved: list[_Resolved], token_request: torch.Tensor) -> PlanBatch:
        keys = tuple(key for key, _, _ in resolved)
        if self._last_batch is not None and self._last_batch[0] == keys:
            batch = self._last_batch[1]
            n_rows = len(resolved)
            rows = to_device(torch.where(token_request < 0, n_rows, token_request), self.sae.device)  # (T,)
            return dataclasses.replace(batch, rows=rows)
        batch = PlanBatch.from_plans([plan for _, plan, _ in resolved], token_request, self.sae)
        self._last_batch = (keys, batch)
        return batch

    def _token_mask(self, layout: BatchLayout, rows: torch.Tensor, codes: list[int]) -> torch.Tensor:
        """(T,) bool: tokens whose request's position mode allows steering, minus skipped ids.

        rows (T,) in [0, R], R for padding (masked anyway by the plan batch).
        """
        device = rows.device
        code = to_device(torch.tensor([*codes, _GENERATED], dtype=torch.long), device)[rows]  # (T,)
        is_prompt = to_device(layout.is_prompt, device)  # (T,)
        mask = (code == _BOTH) | ((code == _PROMPT) & is_prompt) | ((code == _GENERATED) & ~is_prompt)
        return mask & ~self._skipped(layout, device)

    def _skipped(self, layout: BatchLayout, device: torch.device) -> torch.Tensor:
        """(T,) bool: tokens whose id is in skip_token_ids (none when the layout has no ids)."""
        token_ids = layout.token_ids  # (T,) long, None when the caller could not provide them
        if token_ids is None or not self.skip_token_ids.numel():
            return torch.zeros(layout.num_tokens, dtype=torch.bool, device=device)
        return torch.isin(to_device(token_ids, device), self.skip_token_ids)

    @classmethod
    def annotate(
        cls,
        args: dict[str, Any],
        request_args: dict[str, Any],
        tokens: list[dict[str, Any]],
        safety: dict[str, Any],
    ) -> None:
        """safety["tier"]: the requested tier ("custom" for explicit interventions, "off" for none);
        safety["prompt"|"completion"]["steered_tokens"]: how many tokens of each phase moved.

        Counts token records of all choices (a prompt steered for n choices counts n times).
        """
        safety["tier"] = tier_label(request_args.get("steering"))
        counts = {True: 0, False: 0}
        for tok in tokens:
            if tok.get(STEERED):
                counts[bool(tok.get("is_prompt"))] += 1
        safety.setdefault("prompt", {})["steered_tokens"] = counts[True]
        safety.setdefault("completion", {})["steered_tokens"] = counts[False]


    @classmethod
    def request_validator(cls, args: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        validate = steering_validator(args)

        def check(request_args: dict[str, Any]) -> None:
            if request_args.get("steering") is not None:
                validate(request_args["steering"])

        return check


def steering_validator(args: Mapping[str, Any]) -> Callable[[Any], None]:
    """`validate_steering` bound to one middleware config (its `args`), for the API layer.

    Reads only the SAE's cfg.json (for d_sae), once.
    """
    d_sae = load_sae_config(args["sae_path"]).d_sae
    tiers = dict(args.get("tiers") or {})
    max_interventions = int(args.get("max_interventions", 16))

    def validate(steering: Any) -> None:
        validate_steering(steering, d_sae, tiers, max_interventions)

    return validate
