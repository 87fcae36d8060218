"""The policy file's models: what operators write (`PolicyFile`, `PolicySpec`) and what is used (`Policy`).

Strict like serving/config.py (and Ray Serve LLM's `LLMConfig`): every model forbids unknown fields,
so a typo in the policy file is an error with its field path, never a silently ignored setting.

One set of section models (`Detection`, `Actions`, ...) serves both the written and the resolved
form: a section as written is validated by the same model (same constraints, same descriptions),
and `model_dump(exclude_unset=True)` recovers exactly the keys the operator wrote, which is what
inheritance merges. So there is no second "all optional" copy of every field to drift out of sync,
and an explicit `null` for a field that cannot be null is still an error. Section models therefore
must not carry cross-field validators (a partly written section is filled with defaults); such
checks belong in the loader, on the resolved `Policy`.

The one exception is `experiment`: an experiment is one unit (its name and salt decide every
assignment), so a policy that writes one replaces its parent's whole, never merges into it
(loader.py), and its required fields can be required here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from middleware.steering_names import Mode, TierName

__all__ = [
    "NAME_PATTERN",
    "PromptAction",
    "CompletionAction",
    "StrictModel",
    "Detection",
    "Actions",
    "Steering",
    "Stream",
    "Limits",
    "Audit",
    "Fluency",
    "ArmIntervention",
    "Arm",
    "Experiment",
    "ExperimentUnit",
    "OverrideRule",
    "OVERRIDE_ARM",
    "PolicySettings",
    "ModelOverrideSpec",
    "PolicySpec",
    "Policy",
    "TenantSpec",
    "PolicyFile",
    "SHA256_PREFIX",
]

# Tenant and policy names become Prometheus label values and appear in headers: keep them plain.
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAME_RE = re.compile(NAME_PATTERN)
SHA256_PREFIX = "sha256:"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# The arm a request is counted under when its own `steering` replaced its assigned arm's
# (experiment.on_override: record); reserved, so no arm in a file may be named so.
OVERRIDE_ARM = "override"
# HTTP header names a unit may be read from (lowercase is how the ingress sees them).
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")

PromptAction = Literal["annotate", "block"]
ExperimentUnit = Literal["user", "header", "tenant"]
OverrideRule = Literal["refuse", "record"]
CompletionAction = Literal["annotate", "stop"]


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"name {value!r} must match {NAME_PATTERN} (it is used as a metric label value)")
    return value


def _check_key(value: str) -> str:
    # The message never repeats the key: the file may be shared in a bug report.
    if value.startswith(SHA256_PREFIX):
        if not _SHA256_RE.match(value[len(SHA256_PREFIX):]):
            raise ValueError("a 'sha256:' key must be followed by 64 lowercase hex digits")
    elif not value or any(c.isspace() for c in value):
        raise ValueError("a plain key must be non-empty, without whitespace (it is sent as 'Bearer KEY')")
    return value


def _check_header(value: str) -> str:
    if not _HEADER_RE.match(value):
        raise ValueError(f"header {value!r} must be an HTTP header name (letters, digits, '-')")
    if value.lower() in ("authorization", "cookie"):
        raise ValueError(f"header {value!r} carries credentials; use unit: tenant to assign per tenant")
    return value.lower()


Name = Annotated[str, AfterValidator(_check_name)]
HeaderName = Annotated[str, AfterValidator(_check_header)]
ApiKey = Annotated[str, AfterValidator(_check_key)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Detection(StrictModel):
    prompt_threshold: float = Field(
        0.5, ge=0, le=1, description="Toxicity score in [0, 1] at or above which the prompt is flagged."
    )
    completion_threshold: float = Field(
        0.5, ge=0, le=1, description="Toxicity score in [0, 1] at or above which the completion is flagged."
    )

    # The one place that decides "at or above": callers should not re-implement the comparison.
    def prompt_flagged(self, score: float) -> bool:
        return score >= self.prompt_threshold

    def completion_flagged(self, score: float) -> bool:
        return score >= self.completion_threshold


class Actions(StrictModel):
    prompt: PromptAction = Field(
        "annotate",
        description="On a flagged prompt: 'annotate' (report it) or 'block' (HTTP 400 content_filter).",
    )
    completion: CompletionAction = Field(
        "annotate",
        description="On a flagged completion: 'annotate' or 'stop' (end generation: content_filter).",
    )


class Steering(StrictModel):
    # Tier names are any string here: which tiers exist is the model's config, checked by the server.
    tier: str = Field("light", min_length=1, description="Tier applied when the request sends no `steering`.")
    allow_override: bool = Field(True, description="May the request's `steering` field replace the tier?")
    allowed_tiers: list[str] | None = Field(
        None, description="Tiers a request may pick; null means any. The policy's own tier is always allowed."
    )
    allow_interventions: bool = Field(True, description="May a request send explicit `interventions`?")
    max_abs_strength: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="Largest |strength| of an explicit intervention; null means no bound.",
    )
    max_interventions: int = Field(16, ge=1, description="Most explicit interventions in one request.")


class Stream(StrictModel):
    holdback_tokens: int = Field(
        8, ge=0, le=256,
        description="Streaming: tokens held back before sending, so a `stop` cannot leak them (0 = none).",
    )


class Limits(StrictModel):
    requests_per_minute: int | None = Field(
        None, gt=0, description="Requests per minute per tenant; null = unlimited."
    )
    tokens_per_minute: int | None = Field(
        None, gt=0, description="Prompt + completion tokens per minute per tenant; null = unlimited."
    )


class Audit(StrictModel):
    log_prompt_text: bool = Field(False, description="Include prompt and completion text in audit lines.")


class Fluency(StrictModel):
    sample_rate: float = Field(
        0.0, ge=0, le=1,
        description="Fraction of responses whose completion is scored for perplexity under the unsteered "
        "model, off the request path (steergate_fluency_perplexity); 0 = none.",
    )


class ArmIntervention(StrictModel):
    feature: int = Field(ge=0, description="SAE feature index of the model's configured SAE.")
    mode: Mode = Field(description="'add', 'clamp' or 'ablate' (middleware/interventions.py).")
    strength: float = Field(0.0, allow_inf_nan=False, description="Strength of the intervention.")


class Arm(StrictModel):
    """One arm of an experiment: a steering setting and its share of the units. Exactly one of
    `tier` / `interventions` (checked by the loader, which names the arm)."""

    name: Name = Field(description="Arm name: reported in `safety.arm`, `x-steergate-arm` and metric labels.")
    weight: float = Field(gt=0, allow_inf_nan=False, description="Relative share of units (any scale).")
    tier: TierName | None = Field(None, description="Steering tier this arm applies.")
    interventions: list[ArmIntervention] | None = Field(
        None, min_length=1, max_length=16, description="Explicit steering interventions this arm applies."
    )

    def steering(self) -> dict[str, object]:
        """The arm's steering in the request field's form: {"tier": t} or {"interventions": [...]}."""
        if self.tier is not None:
            return {"tier": self.tier}
        return {"interventions": [i.model_dump() for i in self.interventions or []]}


class Experiment(StrictModel):
    """An A/B test of steering settings on a policy's traffic (policies/experiments.py assigns arms)."""

    name: Name = Field(description="Experiment name: reported in `safety.experiment` and metric labels.")
    arms: list[Arm] = Field(min_length=2, description="The arms, in report order.")
    control: Name = Field(description="The arm other arms are compared against, and what everyone gets "
                                      "while the experiment is paused.")
    unit: ExperimentUnit = Field(
        "user", description="What sticks to an arm: the OpenAI `user` field, a request `header`, or the "
        "tenant. A request without it is assigned by its request id (not sticky).",
    )
    header: HeaderName | None = Field(None, description="The header read when unit is 'header'.")
    salt: str = Field("", max_length=128, description="Changing it reshuffles every unit (a new experiment).")
    paused: bool = Field(False, description="Everyone gets the control arm (assignments return on resume).")
    on_override: OverrideRule = Field(
        "refuse", description="A request's own `steering`: 'refuse' (403) or 'record' (served, and counted "
        f"under arm '{OVERRIDE_ARM}', never under its assigned arm).",
    )

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)


class PolicySettings(StrictModel):
    """Every setting of a policy; the defaults are the shipped `default` policy."""

    detection: Detection = Field(default_factory=Detection, description="When text counts as flagged.")
    actions: Actions = Field(default_factory=Actions, description="What happens to flagged text.")
    steering: Steering = Field(default_factory=Steering, description="Steering and its overrides.")
    stream: Stream = Field(default_factory=Stream, description="Streaming behaviour.")
    limits: Limits = Field(default_factory=Limits, description="Per-tenant rate limits.")
    audit: Audit = Field(default_factory=Audit, description="Audit log contents.")
    fluency: Fluency = Field(default_factory=Fluency, description="Live fluency scoring of a sample.")
    experiment: Experiment | None = Field(None, description="A/B experiment over steering settings, or null.")


class ModelOverrideSpec(StrictModel):
    """Per-model overrides as written: any sections, partly; no `extends` or `models`."""

    detection: Detection | None = Field(None, description="Detection overrides.")
    actions: Actions | None = Field(None, description="Action overrides.")
    steering: Steering | None = Field(None, description="Steering overrides.")
    stream: Stream | None = Field(None, description="Streaming overrides.")
    limits: Limits | None = Field(None, description="Rate limit overrides.")
    audit: Audit | None = Field(None, description="Audit overrides.")
    fluency: Fluency | None = Field(None, description="Fluency sampling overrides.")
    experiment: Experiment | None = Field(None, description="Replaces the experiment (null: none).")


class PolicySpec(ModelOverrideSpec):
    """A policy as written. Read it with `model_dump(exclude_unset=True)` to get only what was set."""

    extends: Name | None = Field(None, description="Parent policy: its resolved settings, then these ones.")
    models: dict[str, ModelOverrideSpec] = Field(
        default_factory=dict, description="Per-model overrides, keyed by the served model name."
    )


class Policy(PolicySettings):
    """A resolved policy: every setting present, inheritance applied. Immutable, shared across requests."""

    name: Name = Field(description="The policy's name in the file (reported in `safety.policy` and metrics).")
    extends: str | None = Field(None, description="Parent policy as written (informational).")
    models: dict[str, PolicySettings] = Field(
        default_factory=dict, description="Fully resolved settings per model that has overrides."
    )

    def settings(self) -> PolicySettings:
        return PolicySettings(**{k: getattr(self, k) for k in PolicySettings.model_fields})

    def for_model(self, model: str) -> Policy:
        """This policy as it applies to `model`: that model's overrides merged in (resolved at load time)."""
        settings = self.models.get(model)
        if settings is None:
            return self
        # model_copy skips validation: `settings` was validated when the file was loaded.
        return self.model_copy(update={k: getattr(settings, k) for k in PolicySettings.model_fields})


class TenantSpec(StrictModel):
    policy: Name = Field(description="Name of the policy this tenant's requests follow.")
    keys: list[ApiKey] = Field(
        default_factory=list,
        description="API keys: 'sha256:<64 hex>' (hash of the key, preferred) or the plain key.",
    )


class PolicyFile(StrictModel):
    """The root of a policy file. Cross-references are checked by the loader, which can name every problem."""

    version: Literal[1] = Field(description="File format version.")
    anonymous_tenant: Name | None = Field(
        None, description="Tenant for requests without an Authorization header; null means a key is required."
    )
    policies: dict[Name, PolicySpec] = Field(min_length=1, description="Policies by name.")
    tenants: dict[Name, TenantSpec] = Field(min_length=1, description="Tenants by name.")
