"""Read a policy file into a `PolicySet`: validated, inheritance resolved, keys indexed.

Validation runs in two passes: pydantic checks each field's shape (schema.py), then this module
checks what crosses entries (references, inheritance cycles, keys shared by two tenants). Every
problem is collected with its dotted field path and reported together, so an operator fixes a
file in one round instead of one error per attempt.

Inheritance: a policy's settings are its parent's resolved settings deep-merged with what the
policy writes. Per-model settings follow the same rule, layer by layer: for model M, a child is
`parent.for_model(M)`, then the child's own settings, then the child's overrides for M. So what a
child writes always wins over anything its parent writes (a child that tightens a setting gets it
tightened for every model), and within one policy a per-model override wins over the base.
An `experiment` is the exception: written, it replaces what it inherits whole (schema.py says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies.schema import (
    OVERRIDE_ARM,
    Experiment,
    ModelOverrideSpec,
    Policy,
    PolicyFile,
    PolicySettings,
    PolicySpec,
)
from policies.tenants import Tenant, authenticate, stored_key_hash

__all__ = ["PolicyFileError", "PolicySet", "load_policies", "parse_policies", "parse_policy_text"]

Problem = tuple[str, str]  # (dotted field path, or "" for the whole file; message)


class PolicyFileError(Exception):
    """A policy file that cannot be used; `problems` lists every (field path, message) found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}: {m}" if p else f"{source}: {m}" for p, m in problems))


@dataclass(frozen=True)
class PolicySet:
    """Everything one policy file defines, ready for request handling. Immutable: swapped whole on reload."""

    policies: Mapping[str, Policy]
    tenants: Mapping[str, Tenant]
    anonymous_tenant: str | None
    keys: Mapping[str, Tenant]  # key hash ("sha256:<hex>") -> tenant
    source: str = field(default="<memory>", compare=False)

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant for an Authorization header value (None when absent); raises AuthError (401)."""
        anonymous = self.tenants[self.anonymous_tenant] if self.anonymous_tenant is not None else None
        return authenticate(authorization, keys=self.keys, anonymous=anonymous)

    def policy_for(self, tenant: Tenant, model: str | None = None) -> Policy:
        """The tenant's policy, with `model`'s overrides applied when given."""
        policy = self.policies[tenant.policy]
        return policy.for_model(model) if model is not None else policy


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; in a policy file that would silently drop a tenant."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError) -> Problem:
    mark = getattr(err, "problem_mark", None)
    what = getattr(err, "problem", None) or str(err)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return "", f"invalid YAML{where}: {what}"


def _path(loc: tuple[int | str, ...]) -> str:
    # Dict keys that fail validation show up as (..., key, "[key]"): the path is the key itself.
    return ".".join(str(p) for p in loc if p != "[key]")


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling)"
    if error["type"] == "missing":
        return "required field is missing"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _validation_problems(err: ValidationError, prefix: str = "") -> list[Problem]:
    head: tuple[str, ...] = (prefix,) if prefix else ()
    return [(_path(head + tuple(e["loc"])), _message(e)) for e in err.errors()]


def _deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value  # scalars and lists (allowed_tiers) replace
    return merged


def _merge_settings(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Settings sections deep-merged; a written `experiment` (or null) replaces the inherited one."""
    merged = _deep_merge(base, {k: v for k, v in patch.items() if k != "experiment"})
    if "experiment" in patch:
        merged["experiment"] = patch["experiment"]
    return merged


def _experiment_problems(path: str, experiment: Experiment) -> list[Problem]:
    """What pydantic cannot see in one experiment: arms against each other, control, unit header."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, arm in enumerate(experiment.arms):
        if (arm.tier is None) == (arm.interventions is None):
            message = f"arm {arm.name!r} needs exactly one of 'tier' or 'interventions'"
            problems.append((f"{path}.arms.{i}", message))
        if arm.name == OVERRIDE_ARM:
            message = f"{OVERRIDE_ARM!r} is reserved for requests that override their arm's steering"
            problems.append((f"{path}.arms.{i}.name", message))
        elif arm.name in seen:
            problems.append((f"{path}.arms.{i}.name", f"duplicate arm {arm.name!r}"))
        seen.add(arm.name)
    if experiment.control not in seen:
        problems.append((f"{path}.control", f"unknown arm {experiment.control!r} (arms: {', '.join(seen)})"))
    if experiment.unit == "header" and experiment.header is None:
        problems.append((f"{path}.header", "required when unit is 'header': the request header to read"))
    if experiment.unit != "header" and experiment.header is not None:
        problems.append((f"{path}.header", f"only read when unit is 'header' (unit is {experiment.unit!r})"))
    return problems


def _experiments(file: PolicyFile) -> list[Problem]:
    problems: list[Problem] = []
    for name, spec in file.policies.items():
        sections: list[tuple[str, ModelOverrideSpec]] = [(f"policies.{name}", spec)]
        sections += [(f"policies.{name}.models.{m}", o) for m, o in spec.models.items()]
        for path, section in sections:
            if section.experiment is not None:
                problems += _experiment_problems(f"{path}.experiment", section.experiment)
    return problems


def _cycles(specs: Mapping[str, PolicySpec]) -> list[Problem]:
    problems: list[Problem] = []
    reported: set[str] = set()
    for start in specs:
        chain: list[str] = []
        name: str | None = start
        while name is not None and name in specs and name not in chain:
            chain.append(name)
            name = specs[name].extends
        if name is not None and name in chain:
            cycle = chain[chain.index(name):]
            if not reported.intersection(cycle):
                reported.update(cycle)
                path = " -> ".join(cycle + [name])
                problems.append((f"policies.{name}.extends", f"inheritance cycle: {path}"))
    return problems


def _references(file: PolicyFile) -> list[Problem]:
    problems: list[Problem] = []
    for name, spec in file.policies.items():
        if spec.extends is not None and spec.extends not in file.policies:
            problems.append((f"policies.{name}.extends", f"unknown policy {spec.extends!r}"))
    problems += _cycles(file.policies)
    for name, tenant in file.tenants.items():
        if tenant.policy not in file.policies:
            problems.append((f"tenants.{name}.policy", f"unknown policy {tenant.policy!r}"))
    if file.anonymous_tenant is not None and file.anonymous_tenant not in file.tenants:
        problems.append(("anonymous_tenant", f"unknown tenant {file.anonymous_tenant!r}"))
    owners: dict[str, tuple[str, int]] = {}
    for name, tenant in file.tenants.items():
        for i, entry in enumerate(tenant.keys):
            # Compare hashes: the same key may be written plain under one tenant and hashed under another.
            h = stored_key_hash(entry)
            if h in owners:
                other, j = owners[h]
                where = f"keys.{j}" if other == name else f"tenant {other!r}"
                message = f"the same API key is already listed under {where}"
                problems.append((f"tenants.{name}.keys.{i}", message))
            else:
                owners[h] = (name, i)
    if file.anonymous_tenant is None and not owners:
        problems.append(("anonymous_tenant", "null, but no tenant has keys: every request would be refused"))
    return problems + _experiments(file)


def _resolve(specs: Mapping[str, PolicySpec]) -> tuple[dict[str, Policy], list[Problem]]:
    """Resolve inheritance (references and cycles already checked)."""
    # name -> (base settings, {model: settings}) as plain dicts, to merge before validating once.
    done: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}

    def resolve(name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        if name in done:
            return done[name]
        spec = specs[name]
        written = spec.model_dump(exclude_unset=True, exclude={"extends", "models"})
        parent_models: dict[str, dict[str, Any]]
        if spec.extends is None:
            parent_base, parent_models = PolicySettings().model_dump(), {}
        else:
            parent_base, parent_models = resolve(spec.extends)
        base = _merge_settings(parent_base, written)
        models: dict[str, dict[str, Any]] = {}
        for model in {**parent_models, **spec.models}:
            own = spec.models[model].model_dump(exclude_unset=True) if model in spec.models else {}
            inherited = _merge_settings(parent_models.get(model, parent_base), written)
            models[model] = _merge_settings(inherited, own)
        done[name] = (base, models)
        return done[name]

    policies: dict[str, Policy] = {}
    problems: list[Problem] = []
    for name, spec in specs.items():
        base, models = resolve(name)
        try:
            resolved = {**base, "name": name, "extends": spec.extends, "models": models}
            policies[name] = Policy.model_validate(resolved)
        except ValidationError as err:  # only a cross-field rule could fail here; sections were validated
            problems += _validation_problems(err, prefix=f"policies.{name}")
    return policies, problems


def parse_policies(data: Any, source: str) -> PolicySet:
    """A PolicySet from already-parsed YAML/JSON data; raises PolicyFileError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        found = type(data).__name__
        raise PolicyFileError(source, [("", f"expected a mapping at the top level, got {found}")])
    try:
        file = PolicyFile.model_validate(data)
    except ValidationError as err:
        raise PolicyFileError(source, _validation_problems(err)) from None
    problems = _references(file)
    if problems:
        raise PolicyFileError(source, problems)
    policies, problems = _resolve(file.policies)
    if problems:
        raise PolicyFileError(source, problems)
    tenants = {
        name: Tenant(name, spec.policy, frozenset(stored_key_hash(k) for k in spec.keys))
        for name, spec in file.tenants.items()
    }
    keys = {h: tenant for tenant in tenants.values() for h in tenant.key_hashes}
    return PolicySet(policies, tenants, file.anonymous_tenant, keys, source)


def parse_policy_text(text: str, source: str) -> PolicySet:
    """A PolicySet from YAML text; YAML errors become PolicyFileError with their line number."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as err:
        raise PolicyFileError(source, [_yaml_problem(err)]) from None
    return parse_policies(data, source)


def load_policies(path: str | Path) -> PolicySet:
    """Read and validate a policy file; raises PolicyFileError (also for a missing or unreadable file)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise PolicyFileError(str(path), [("", f"cannot read policy file: {reason}")]) from None
    return parse_policy_text(text, str(path))
