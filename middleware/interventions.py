"""Steering the residual stream with SAE features, per token (pure torch).

Follows "Breaking Bad Tokens: Detoxification of LLMs Using Sparse Autoencoders": at the SAE's
layer, the residual stream h (T, d_in) is moved along decoder directions d_f = W_dec[f]:

    add     h += s * d_f                 (s = strength)
    clamp   h += (c - f_f(h)) * d_f      (c = strength; f_f = the SAE activation of feature f)
    ablate  h -= f_f(h) * d_f            (remove f's contribution where it is active)
    vector  h += s * v                   (a raw vector v (d_in,), no SAE feature)

optionally only at tokens where a gate feature fires (token-level conditional steering).
Several interventions are applied together: every f_f is computed from the ORIGINAL h and the
deltas are summed, so the result does not depend on their order (clamping f twice therefore
moves it twice as far). All three feature modes are one affine rule, delta = (a + b * f_f) * d_f:

    mode    a    b
    add     s    0
    clamp   c   -1
    ablate  0   -1

so a request's list compiles into dense (a, b) vectors (`SteeringPlan`), and requests with
different lists share one encoder pass and one decoder matmul (`PlanBatch`, `apply_steering`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from middleware.hooks import to_device
from middleware.sae import SAE
from middleware.steering_names import MODES, Mode

__all__ = [
    "GATHER_ON",
    "MODES",
    "GateSpec",
    "InterventionSpec",
    "Mode",
    "PlanBatch",
    "SteeringPlan",
    "apply_plan",
    "apply_steering",
    "token_rows_from_counts",
]

# Device types where apply_steering gathers the steerable tokens by default (no device to wait for).
GATHER_ON: tuple[str, ...] = ("cpu",)
# mode -> (a per unit of strength, b) in delta = (a + b * f_f(h)) * d_f.
_AFFINE: dict[str, tuple[float, float]] = {"add": (1.0, 0.0), "clamp": (1.0, -1.0), "ablate": (0.0, -1.0)}


def _check_feature(feature: object, sae: SAE, what: str) -> None:
    if not isinstance(feature, int) or isinstance(feature, bool):
        raise ValueError(f"{what} must be an integer feature index, got {feature!r}")
    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(f"{what} {feature} is out of range: this SAE has features 0..{sae.cfg.d_sae - 1}")


@dataclass
class InterventionSpec:
    """One steering operation. `feature` is an SAE feature index; a raw `vector` (d_in,)
    replaces it for mode "add". `strength` is s for add/vector, the target c for clamp,
    and unused for ablate."""

    feature: int | None
    mode: Mode = "add"
    strength: float = 0.0
    vector: list[float] | None = None

    def validate(self, sae: SAE) -> None:
        """Raise ValueError with a readable message if this spec cannot run on `sae`."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.strength, int | float) or not math.isfinite(self.strength):
            raise ValueError(f"strength must be a finite number, got {self.strength!r}")
        if self.vector is None:
            if self.feature is None:
                raise ValueError("an intervention needs a feature index or a vector")
            _check_feature(self.feature, sae, "feature")
            return
        if self.feature is not None:
            raise ValueError("give either a feature index or a vector, not both")
        if self.mode != "add":
            raise ValueError(f"a raw vector can only be added (mode 'add'), got mode {self.mode!r}")
        if len(self.vector) != sae.cfg.d_in:
            raise ValueError(f"vector has length {len(self.vector)}, but the SAE's d_in is {sae.cfg.d_in}")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in self.vector):
            raise ValueError("vector entries must all be finite numbers")


@dataclass
class GateSpec:
    """Steer a token only if any of `features` has activation > its threshold there (the signed
    activation for abstopk SAEs, so a feature firing in its negative direction does not count).

    `threshold` is one number for every gate feature, or one per feature (m,): features live on
    different scales (one fires at 1 on toxic text, another at 10 on anything), so a gate that
    should open only on toxic tokens needs each feature's own cut.

    With `weights` (m,) the gate is linear instead: open where
        sum_i weights[i] * log1p(max(f_i, 0)) > threshold          (one number)
    the detector's own per-token logit less its bias when the weights are the detector's. On the
    labelled sets (`steergate tier-gates`) it opens on far fewer benign texts than the features'
    own gates at the same share of toxic ones: a context feature ("you are ...") fires on most
    benign answers, and only the negative weights of the others can cancel it.
    """

    features: list[int]
    threshold: float | list[float] = 0.0
    weights: list[float] | None = None

    def thresholds(self) -> list[float]:
        """(m,) the threshold of each gate feature."""
        if isinstance(self.threshold, int | float):
            return [float(self.threshold)] * len(self.features)
        return [float(t) for t in self.threshold]

    def validate(self, sae: SAE) -> None:
        if not self.features:
            raise ValueError("a gate needs at least one feature")
        for f in self.features:
            _check_feature(f, sae, "gate feature")
        scalar = isinstance(self.threshold, int | float) and not isinstance(self.threshold, bool)
        if self.weights is not None:
            if not scalar:
                raise ValueError("a linear gate (with weights) takes one threshold, not a list")
            if not isinstance(self.weights, list | tuple) or len(self.weights) != len(self.features):
                raise ValueError(f"gate has {len(self.features)} features, so weights must be a list of "
                                 f"as many numbers, got {self.weights!r}")
            if len(set(self.features)) != len(self.features):
                raise ValueError("a linear gate's features must be distinct")
            for w in self.weights:
                if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
                    raise ValueError(f"gate weight must be a finite number, got {w!r}")
        values = [self.threshold] if scalar else self.threshold
        if not isinstance(values, list | tuple):
            raise ValueError(f"gate threshold must be a number or a list of numbers, got {self.threshold!r}")
        if not scalar and len(values) != len(self.features):
            raise ValueError(f"gate has {len(self.features)} features but {len(values)} thresholds")
        for t in values:
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                raise ValueError(f"gate threshold must be a finite number, got {t!r}")


@dataclass(frozen=True)
class SteeringPlan:
    """One request's interventions as dense tensors (on CPU; `PlanBatch` moves them)."""

    features: torch.Tensor  # (n,) long
    const: torch.Tensor  # (n,) a
    act_coef: torch.Tensor  # (n,) b
    vector: torch.Tensor | None  # (d_in,) sum of s * v over the raw-vector specs
    gate_features: torch.Tensor  # (g,) long; empty when ungated
    gate_thresholds: torch.Tensor  # (g,) each gate feature's activation cut; (1,) for a linear gate
    gate_weights: torch.Tensor | None  # (g,) a linear gate's weights; None: the gate is per feature

    @classmethod
    def compile(
        cls, specs: Sequence[InterventionSpec], sae: SAE, gate: GateSpec | None = None
    ) -> SteeringPlan:
        """Validate `specs` (and `gate`) against `sae` and turn them into a plan."""
        for spec in specs:
            spec.validate(sae)
        if gate is not None:
            gate.validate(sae)
        on_features = [s for s in specs if s.vector is None]
        vectors = [
            torch.tensor(s.vector, dtype=torch.float64) * s.strength for s in specs if s.vector is not None
        ]
        return cls(
            features=torch.tensor([s.feature for s in on_features], dtype=torch.long),
            const=torch.tensor([_AFFINE[s.mode][0] * s.strength for s in on_features], dtype=torch.float64),
            act_coef=torch.tensor([_AFFINE[s.mode][1] for s in on_features], dtype=torch.float64),
            vector=torch.stack(vectors).sum(dim=0) if vectors else None,
            gate_features=torch.tensor(gate.features if gate else [], dtype=torch.long),
            gate_thresholds=torch.tensor(
                (gate.thresholds()[:1] if gate.weights is not None else gate.thresholds()) if gate else [],
                dtype=torch.float64),
            gate_weights=None if gate is None or gate.weights is None
            else torch.tensor(gate.weights, dtype=torch.float64),
        )

    @property
    def is_empty(self) -> bool:
        """True when the plan steers nothing (a gate alone changes no token)."""
        return self.features.numel() == 0 and self.vector is None


def token_rows_from_counts(num_tokens: Sequence[int]) -> torch.Tensor:
    """(T,) long request index of each token when request i owns the next num_tokens[i] tokens."""
    counts = torch.as_tensor(list(num_tokens), dtype=torch.long)
    return torch.repeat_interleave(torch.arange(len(counts)), counts)


@dataclass(frozen=True)
class PlanBatch:
    """The plans of R requests whose tokens share one flattened (T, d_in) tensor.

    Features are the union U over all plans and gates; per-request coefficients are rows of
    (R + 1, U) matrices, the extra last row being an all-zero, disabled one for tokens of no
    request (padding). `rows` (T,) picks each token's row. A token's result depends only on
    its own h and its own request's row (other requests' features get coefficient 0).
    Rebuild the batch when the batch composition or token layout changes.
    """

    features: torch.Tensor  # (U,) long, sorted
    # What one unit of each feature adds (U, d_in): gathered once per batch, not per step, since a
    # batch is reused while its requests stay (py-spy: ~2% of the engine's samples at one stream).
    directions: torch.Tensor
    const: torch.Tensor  # (R + 1, U)
    act_coef: torch.Tensor  # (R + 1, U)
    vector: torch.Tensor | None  # (R + 1, d_in)
    gate_thresholds: torch.Tensor  # (R + 1, U), +inf where the feature is not in the row's gate
    # Linear gates: a row's weights over U (0 off its gate) and its cut; None when no row has one.
    gate_weights: torch.Tensor | None  # (R + 1, U)
    gate_cut: torch.Tensor | None  # (R + 1,), +inf on rows without a linear gate
    gated: torch.Tensor  # (R + 1,) bool
    enabled: torch.Tensor  # (R + 1,) bool, False for requests without steering
    rows: torch.Tensor  # (T,) long in [0, R]
    # Whether any row clamps, ablates or gates, i.e. the SAE encoder must run; decided on the
    # CPU while building, so applying the batch does not wait on the device to find out.
    needs_activations: bool

    @classmethod
    def from_plans(
        cls, plans: Sequence[SteeringPlan | None], token_rows: torch.Tensor, sae: SAE
    ) -> PlanBatch:
        """`plans[r]` steers the tokens t with token_rows[t] == r (T,); -1 marks padding.

        A None plan leaves its request's tokens untouched.
        """
        n_rows, d_in, device, dtype = len(plans), sae.cfg.d_in, sae.device, sae.dtype
        token_rows = torch.as_tensor(token_rows, dtype=torch.long)
        # Checked on the host only: reading a device tensor's max back would make the host wait.
        if token_rows.device.type == "cpu" and token_rows.numel() and int(token_rows.max()) >= n_rows:
            raise ValueError(f"token_rows refers to request {int(token_rows.max())}, but got {n_rows} plans")
        live = [(i, p) for i, p in enumerate(plans) if p is not None and not p.is_empty]
        for _, p in live:
            used = torch.cat([p.features, p.gate_features])
            if used.numel() and int(used.max()) >= sae.cfg.d_sae:
                raise ValueError(
                    f"plan uses feature {int(used.max())}, but this SAE has d_sae={sae.cfg.d_sae}"
                )
            if p.vector is not None and p.vector.shape != (d_in,):
                raise ValueError(f"plan vector has shape {tuple(p.vector.shape)}, expected ({d_in},)")
        parts = [t for _, p in live for t in (p.features, p.gate_features)]
        features = torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.long)
        shape = (n_rows + 1, features.numel())
        const = torch.zeros(shape, dtype=torch.float64)
        act_coef = torch.zeros(shape, dtype=torch.float64)
        gate_thresholds = torch.full(shape, math.inf, dtype=torch.float64)
        linear = any(p.gate_weights is not None for _, p in live)
        gate_weights = torch.zeros(shape, dtype=torch.float64) if linear else None
        gate_cut = torch.full((n_rows + 1,), math.inf, dtype=torch.float64) if linear else None
        gated = torch.zeros(n_rows + 1, dtype=torch.bool)
        enabled = torch.zeros(n_rows + 1, dtype=torch.bool)
        has_vector = any(p.vector is not None for _, p in live)
        vector = torch.zeros(n_rows + 1, d_in, dtype=torch.float64) if has_vector else None
        for i, p in live:
            enabled[i] = True
            pos = torch.searchsorted(features, p.features)  # (n,)
            # index_add_ sums repeated features, matching "deltas are summed".
            const[i].index_add_(0, pos, p.const)
            act_coef[i].index_add_(0, pos, p.act_coef)
            if p.gate_features.numel():
                gated[i] = True
                gate_pos = torch.searchsorted(features, p.gate_features)  # (g,)
                if p.gate_weights is None:
                    gate_thresholds[i, gate_pos] = p.gate_thresholds
                else:
                    gate_weights[i, gate_pos] = p.gate_weights  # type: ignore[index]
                    gate_cut[i] = p.gate_thresholds[0]  # type: ignore[index]
            if vector is not None and p.vector is not None:
                vector[i] = p.vector
        features = to_device(features, device)
        return cls(
            features=features,
            directions=sae.decoder_directions(features).detach(),  # (0, d_in) for no features
            const=to_device(const.to(dtype), device),
            act_coef=to_device(act_coef.to(dtype), device),
            vector=None if vector is None else to_device(vector.to(dtype), device),
            gate_thresholds=to_device(gate_thresholds.to(dtype), device),
            gate_weights=None if gate_weights is None else to_device(gate_weights.to(dtype), device),
            gate_cut=None if gate_cut is None else to_device(gate_cut.to(dtype), device),
            gated=to_device(gated, device),
            enabled=to_device(enabled, device),
            rows=to_device(torch.where(token_rows < 0, n_rows, token_rows), device),
            needs_activations=bool(act_coef.any()) or bool(gated.any()),
        )


def apply_steering(
    h: torch.Tensor, sae: SAE, batch: PlanBatch, token_mask: torch.Tensor | None = None, *, dense: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steer the residual stream h (T, d_in) of a batch of requests.

    `token_mask` (T,) bool marks the tokens that may be steered (e.g. generated, non-special);
    default all. Returns the new h (T, d_in), a new tensor in h's dtype, and changed (T,) bool:
    the tokens whose h actually moved (steerable, gate open, non-zero delta).

    `dense` computes the edit for every token and masks it, with shapes that do not depend on the
    data: no host synchronisation (a `nonzero` would wait for the device, and a CUDA graph cannot
    capture a data-dependent shape). Gathered (dense=False) encodes only the steerable tokens first,
    less work where few are steerable (a long prompt whose generated tokens alone are steered), and on
    a CPU there is no device to wait for. Default: gathered on CPU, dense elsewhere; both give the same
    result (tests/middleware/test_interventions.py), and bench/steering_sync.py measures both on CPU.
    The default follows `GATHER_ON`.
    """
    n_tokens = h.shape[0]
    if batch.rows.shape != (n_tokens,):
        raise ValueError(f"plan batch covers {batch.rows.numel()} tokens, h has {n_tokens}")
    allowed = batch.enabled[batch.rows]  # (T,)
    if token_mask is not None:
        allowed = allowed & token_mask.to(allowed.device, torch.bool)
    if dense if dense is not None else h.device.type not in GATHER_ON:
        h_all = h.to(sae.dtype)  # (T, d_in)
        delta, open_gate = _deltas(h_all, batch.rows, sae, batch)
        moved = allowed & open_gate & (delta != 0).any(dim=-1)  # (T,)
        # Untouched tokens keep their exact original values (no round trip through the SAE dtype).
        return torch.where(moved[:, None], (h_all + delta).to(h.dtype), h), moved
    sel = allowed.nonzero().squeeze(-1)  # (S,) only these tokens are encoded and changed
    changed = torch.zeros(n_tokens, dtype=torch.bool, device=h.device)
    if sel.numel() == 0:
        return h.clone(), changed
    h_sel = h[sel].to(sae.dtype)  # (S, d_in)
    delta, open_gate = _deltas(h_sel, batch.rows[sel], sae, batch)
    moved = open_gate & (delta != 0).any(dim=-1)  # (S,)
    h_new = h.clone()
    h_new[sel] = torch.where(moved[:, None], (h_sel + delta).to(h.dtype), h[sel])
    changed[sel] = moved
    return h_new, changed


def _deltas(x: torch.Tensor, rows: torch.Tensor, sae: SAE, batch: PlanBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's edit and whether its gate is open: x (N, d_in) in the SAE dtype, rows (N,) the
    token's plan row -> delta (N, d_in), open_gate (N,) bool."""
    delta = torch.zeros_like(x)  # (N, d_in)
    open_gate = torch.ones_like(rows, dtype=torch.bool)  # (N,)
    if batch.features.numel():
        coef = batch.const[rows]  # (N, U)
        if batch.needs_activations:
            acts = sae.encode_features(x, batch.features)  # (N, U), all from the original h
            coef = coef + batch.act_coef[rows] * acts
            fires = (acts > batch.gate_thresholds[rows]).any(dim=-1)  # (N,)
            if batch.gate_weights is not None and batch.gate_cut is not None:
                logit = (torch.log1p(acts.clamp_min(0)) * batch.gate_weights[rows]).sum(dim=-1)  # (N,)
                # A linear row's per-feature thresholds are all +inf, so `fires` is False there.
                fires = fires | (logit > batch.gate_cut[rows])
            open_gate = ~batch.gated[rows] | fires
        delta = coef @ batch.directions  # (N, U) @ (U, d_in)
    if batch.vector is not None:
        delta = delta + batch.vector[rows]
    return delta, open_gate


def apply_plan(
    h: torch.Tensor, sae: SAE, plan: SteeringPlan | None, token_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`apply_steering` for one request owning all of h (T, d_in)."""
    rows = torch.zeros(h.shape[0], dtype=torch.long)
    return apply_steering(h, sae, PlanBatch.from_plans([plan], rows, sae), token_mask)
