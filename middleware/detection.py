"""Toxicity detection from the model's own residual stream: SAE features -> a toxicity score.

A features file (JSON, written by `steergate find-features`) names an SAE and the toxicity
features found in it, with a calibrated detector over them. For a text (a prompt, or a
completion so far) with tokens 1..t:

    score(1..t) = sigmoid(bias + sum_i weights[i] * log1p(max_{s <= t} a_i(s)))    in [0, 1]

where a_i(s) is feature i's SAE activation at token s. Each feature counts with its strongest
occurrence, and evidence from different features adds up ("Breaking Bad Tokens" reads toxic
features by activation strength). A positive weight is toxic evidence; a negative one (a signed
detector, discovery/features.py) is benign evidence: "you are" followed by "thoughtful" rather
than "worthless". The first token that takes the score of the completion so far over a threshold
is where a `stop` policy ends the output (serving/safety_gate.py): with weights >= 0 the score can
only grow as generation goes; with signed weights it can fall again once benign evidence arrives,
so a `stop` gate judges each prefix as it comes and a prefix that reads toxic stops the output even
if what would have followed reads benign. Only the toxic features are steered (FeatureSet.tiers).
The first token of a sequence (the attention sink) and special tokens are not scored.

Short texts: a text of at most `short_words` words gets `short_shift` added inside the sigmoid.
The max over tokens has fewer chances to climb on a six-word line than on a paragraph, so with
one threshold for every length short toxic lines score low as a class ("You {word}!" flagged
far less often than a corpus text holding the same word); `find-features` chooses the shift where
the selection split's short benign texts score, if it holds across frames, else 0
(discovery/thresholds.py). It is the same as a lower threshold for short texts at any policy
threshold. A prompt's length is known before it is scored (request_args["prompt_words"]); a
completion's only once it has ended (request_args["completion_words"], and the `stop` gate's
check at the end, serving/safety_gate.py): a stream still going is not judged as short, since
every stream starts as a short text.

Inside the engine the middleware only reports each token's activations of the m detector
features (side output "toxicity_features", (T, m)); the server combines a request's tokens.

`SafetyMiddleware` runs the detector inside the engine (and offline) as a residual middleware,
and steers with the same SAE: one hook, one SAE, both jobs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from middleware.hooks import BatchLayout, HookResult
from middleware.sae import SAE
from middleware.steering import SAESteeringMiddleware
from middleware.tier_recipes import TierRecipe, load_tier_recipes, recipe_presets, steerable, tiers_path_for
from middleware.tiers import default_tiers

__all__ = ["FEATURES_FORMAT", "TOXICITY_FEATURES", "DetectorParams", "FeatureSet", "RunningScore",
           "SafetyMiddleware", "ToxicityDetector"]

FEATURES_FORMAT = "steergate-features/2"
# Name of the per-token side output: (T, m) detector-feature activations; NaN rows for tokens
# that are not scored.
TOXICITY_FEATURES = "toxicity_features"


@dataclass
class FeatureSet:
    """The contents of a features file (see module docstring); paths resolved against its directory."""

    model_name: str
    sae_path: str  # absolute once loaded
    sae_id: str
    features: list[int]  # the detector's features, most toxic first
    weights: list[float]  # (m,) per unit of log activation; > 0 toxic evidence, < 0 benign
    bias: float
    threshold: float = 0.5  # the score at which a text counts as flagged (a policy may override it)
    gate_thresholds: list[float] = field(default_factory=list)  # (m,) per-feature activation cut
    typical_activation: list[float] = field(default_factory=list)  # (m,) mean max activation on toxic texts
    short_words: int = 0  # texts of at most this many words are "short" (0: no short-text shift)
    short_shift: float = 0.0  # added to a short text's logit (>= 0)
    extra: dict[str, Any] = field(default_factory=dict)  # stats, selection and held-out reports
    # Calibrated tiers (middleware/tier_recipes.py), from the tiers file beside the features file.
    tier_recipes: dict[str, TierRecipe] | None = None

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        path = Path(path)
        raw = json.loads(path.read_text())
        if raw.get("format") != FEATURES_FORMAT:
            raise ValueError(f"{path}: not a steergate features file (format {raw.get('format')!r}, "
                             f"expected {FEATURES_FORMAT!r})")
        det, sae = raw["detector"], raw["sae"]
        sae_path = Path(sae["path"])
        if not sae_path.is_absolute():
            sae_path = path.parent / sae_path
        m = len(det["features"])
        if len(det["weights"]) != m:
            raise ValueError(f"{path}: detector has {m} features but {len(det['weights'])} weights")
        return cls(
            model_name=raw.get("model_name", ""), sae_path=str(sae_path.resolve()), sae_id=sae.get("id", ""),
            features=[int(f) for f in det["features"]], weights=[float(w) for w in det["weights"]],
            bias=float(det["bias"]), threshold=float(det.get("threshold", 0.5)),
            gate_thresholds=[float(x) for x in det.get("gate_thresholds", [])],
            typical_activation=[float(x) for x in det.get("typical_activation", [])],
            short_words=int(det.get("short_words", 0)), short_shift=float(det.get("short_shift", 0.0)),
            extra={k: v for k, v in raw.items() if k not in ("format", "model_name", "sae", "detector")},
            tier_recipes=load_tier_recipes(tiers_path)[0] if (tiers_path := tiers_path_for(path)).exists() else None,
        )

    def to_dict(self, sae_path: str) -> dict[str, Any]:
        """The file contents, with `sae_path` as written (relative to the file, usually)."""
        return {
            "format": FEATURES_FORMAT, "model_name": self.model_name,
            "sae": {"id": self.sae_id, "path": sae_path},
            "detector": {"features": self.features, "weights": self.weights, "bias": self.bias,
                         "threshold": self.threshold, "combine": "sigmoid(bias + w . log1p(max over tokens))",
                         "skip_first_token": True,
                         "short_words": self.short_words, "short_shift": self.short_shift,
                         "gate_thresholds": self.gate_thresholds, "typical_activation": self.typical_activation},
            **self.extra,
        }

    def params(self) -> DetectorParams:
        """The detector's weights, bias and short-text shift, for scoring side outputs without the SAE."""
        return DetectorParams(tuple(self.weights), self.bias, self.short_words, self.short_shift)

    def tiers(self) -> dict[str, dict[str, Any]]:
        """The steering tiers over the detector's features: the calibrated recipes of the tiers file
        beside the features file (`steergate calibrate`), else paper-style starting points.

        The starting points (middleware/tiers.py) take gate thresholds and strengths from the
        features' own statistics, so they are in the units of this SAE: light ablates where a
        feature fires above its median gate threshold, medium clamps to minus the typical activation
        where it fires at half that, strong subtracts twice the typical activation at every steered token.
        """
        if self.tier_recipes is not None:
            return recipe_presets(self.tier_recipes, self.features, self.weights, self.gate_thresholds,
                                  self.typical_activation, self.bias)
        toxic = steerable(self.weights)
        gates = [self.gate_thresholds[i] for i in toxic] if self.gate_thresholds else []
        typicals = [self.typical_activation[i] for i in toxic] if self.typical_activation else []
        gate, typical = _median(gates) or 1.0, _median(typicals) or 1.0
        return default_tiers([self.features[i] for i in toxic], light_threshold=gate,
                             medium_threshold=gate / 2, medium_clamp=-typical, strong_add=-2 * typical)


def _median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[len(s) // 2]


@dataclass(frozen=True)
class DetectorParams:
    """The detector's combination, without the SAE: what the server needs to score side outputs."""

    weights: tuple[float, ...]  # (m,) > 0 toxic evidence, < 0 benign
    bias: float
    short_words: int = 0
    short_shift: float = 0.0

    def score(self, rows: Sequence[Sequence[float]], words: int | None = None) -> float:
        """Score of a text from its tokens' feature activations rows (n, m); 0.0 for no rows.
        `words`: the text's length in words, where known (a short text's logit gets the shift)."""
        if not rows:
            return 0.0
        running = RunningScore(self)
        for row in rows:
            running.add(row)
        return _sigmoid(running.logit + self.shift_for(words))

    def shift_for(self, words: int | None) -> float:
        """The logit shift for a text of `words` words (0.0 when unknown or not short)."""
        return self.short_shift if words is not None and 0 < words <= self.short_words else 0.0

    def threshold_for(self, threshold: float, words: int | None) -> float:
        """The unshifted score at which a text of `words` words reaches `threshold` (lower for a
        short text; `threshold` itself otherwise)."""
        shift = self.shift_for(words)
        if not shift or threshold <= 0 or threshold >= 1:
            return threshold
        return _sigmoid(math.log(threshold / (1 - threshold)) - shift)

    def running(self, rows: Sequence[Sequence[float] | None]) -> list[float]:
        """(n,) score of each prefix 1..t of the text (non-decreasing where weights >= 0). A row that
        is None or has NaNs (a token that is not scored) leaves the score where it was."""
        score = RunningScore(self)
        return [score.add(row) for row in rows]


class RunningScore:
    """The score of a text that grows one token at a time (a stream being generated)."""

    def __init__(self, params: DetectorParams) -> None:
        self.params = params
        self._peak = [0.0] * len(params.weights)  # (m,) max activation so far
        self._log_peak = [0.0] * len(params.weights)  # (m,) log1p of it
        self.logit = params.bias  # no evidence yet
        self.value = _sigmoid(self.logit)

    def add(self, row: Sequence[float] | None) -> float:
        """Take the next token's activations (m,) (None or NaNs: not scored); the text's score so far."""
        # sum() is NaN if any activation is (they are finite and >= 0 otherwise): one C-level pass.
        if row is None or math.isnan(sum(row)):
            return self.value
        if len(row) != len(self._peak):
            raise ValueError(f"a row of {len(row)} activations for a detector of {len(self._peak)} features")
        # Only the features whose peak moved change the logit: a token raises a few of the m peaks, so
        # this costs O(m) comparisons and O(moved) logs, not a whole recomputation per token.
        peak, log_peak, weights = self._peak, self._log_peak, self.params.weights
        moved = False
        for i, a in enumerate(row):
            if a > peak[i]:
                log_a = math.log1p(a)
                self.logit += weights[i] * (log_a - log_peak[i])
                peak[i], log_peak[i] = a, log_a
                moved = True
        if moved:
            self.value = _sigmoid(self.logit)
        return self.value


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


class ToxicityDetector:
    """The features file's detector over an SAE: residual stream (n, d) -> scores."""

    def __init__(self, sae: SAE, features: FeatureSet) -> None:
        self.sae = sae
        self.features = features
        if max(features.features, default=-1) >= sae.cfg.d_sae:
            raise ValueError(f"features file names feature {max(features.features)}, but the SAE has "
                             f"{sae.cfg.d_sae}")
        self.index = torch.tensor(features.features, dtype=torch.long)  # (m,)
        self.params = features.params()

    def feature_acts(self, stream: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, m) activations of the detector's features (negative ones count as 0)."""
        if self.index.device != self.sae.device:
            self.index = self.index.to(self.sae.device)  # once: a copy per step would make the host wait
        return self.sae.encode_features(stream, self.index).float().clamp_min(0)

    def text_score(self, stream: torch.Tensor, words: int | None = None) -> float:
        """(n, d) counted tokens of one text -> its score (`words`: the text's length, where known)."""
        return self.params.score(self.feature_acts(stream).tolist(), words)


class SafetyMiddleware(SAESteeringMiddleware):
    """Detect toxicity (side output "toxicity_features", per token) and steer, with one SAE.

    features_path: a features file; the SAE it names is used unless `sae_path` is given, and its
        tiers (FeatureSet.tiers) unless `tiers` is given.
    threshold: toxicity at which `annotate` marks a phase flagged (default: the features file's).
    Scores are computed on the stream as it arrives, before this request's steering edits it:
    they say what the model was about to write.
    """

    def __init__(self, layer: int, d_model: int, features_path: str, threshold: float | None = None,
                 **kwargs: Any) -> None:
        # `threshold` is only read by `annotate`, from the config args (serving side).
        self.feature_set = FeatureSet.load(features_path)
        kwargs.setdefault("sae_path", self.feature_set.sae_path)
        kwargs.setdefault("tiers", self.feature_set.tiers())
        super().__init__(layer, d_model, **kwargs)
        self.detector = ToxicityDetector(self.sae, self.feature_set)

    def __call__(self, stream: torch.Tensor, layout: BatchLayout) -> HookResult:
        self._ensure_device(stream.device)
        acts = self.detector.feature_acts(stream)  # (T, m)
        unscored = (layout.positions.to(stream.device) == 0) | self._skipped(layout, stream.device)  # (T,)
        acts = acts.masked_fill(unscored[:, None], math.nan)
        result = super().__call__(stream, layout)
        result.side_outputs[TOXICITY_FEATURES] = acts
        return result

    @classmethod
    def resolved_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        """Config args with the SAE path and tiers the features file implies filled in."""
        out = dict(args)
        fs = FeatureSet.load(out["features_path"])
        out.setdefault("sae_path", fs.sae_path)
        out.setdefault("tiers", fs.tiers())
        out.setdefault("threshold", fs.threshold)
        out["detector"] = fs.params()
        return out

    @staticmethod
    def phase_rows(tokens: list[dict[str, Any]], prompt: bool) -> list[list[float]]:
        """One phase's scored tokens' activation rows, in position order."""
        rows = []
        for t in sorted(tokens, key=lambda t: t["position"]):
            row = t.get(TOXICITY_FEATURES)
            if bool(t.get("is_prompt")) == prompt and row is not None and not any(math.isnan(v) for v in row):
                rows.append(row)
        return rows

    @classmethod
    def annotate(cls, args: dict[str, Any], request_args: dict[str, Any], tokens: list[dict[str, Any]],
                 safety: dict[str, Any]) -> None:
        """Adds safety["prompt"|"completion"]["toxicity"] (the detector's score of that phase's
        tokens) and "flagged" (toxicity >= the features file's threshold; a policy may re-decide it).

        args must be `resolved_args` (they carry the detector's weights). With n > 1 choices the
        completion score is the most toxic choice's. A phase's length in words, where known
        (request_args["prompt_words"], ["completion_words"] once the response has ended), gives a
        short text the short-text shift."""
        super().annotate(args, request_args, tokens, safety)
        params: DetectorParams = args["detector"]
        threshold = float(args.get("threshold", 0.5))
        by_request: dict[Any, list[dict[str, Any]]] = {}
        for t in tokens:
            by_request.setdefault(t.get("request", 0), []).append(t)
        words = {phase: request_args.get(f"{phase}_words") for phase in ("prompt", "completion")}
        for phase, is_prompt in (("prompt", True), ("completion", False)):
            score = max((params.score(cls.phase_rows(ts, is_prompt), words[phase])
                         for ts in by_request.values()), default=0.0)
            section = safety.setdefault(phase, {})
            section["toxicity"] = round(score, 6)
            section["flagged"] = score >= threshold
