"""`steergate policy check FILE [--explain]`: validate a policy file and show what it resolves to.

Meant for CI and for operators before a reload: exit 0 and a summary when the file is valid, exit 1
and every problem as `FILE: path: message` when not. `--explain` prints every resolved setting, so
the effect of inheritance and per-model overrides can be read without running the gateway.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from policies.loader import PolicyFileError, PolicySet, load_policies
from policies.schema import Experiment, Policy, PolicySettings

__all__ = ["main", "summary"]

_COLUMNS = (
    "policy", "extends", "prompt", "completion", "thresholds", "tier", "override", "holdback",
    "rpm", "tpm", "text", "fluency", "experiment",
)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "[]"
    return str(value)


def _row(label: str, extends: str | None, s: PolicySettings) -> list[str]:
    return [
        label, _show(extends), s.actions.prompt, s.actions.completion,
        f"{s.detection.prompt_threshold:g}/{s.detection.completion_threshold:g}",
        s.steering.tier, _show(s.steering.allow_override), str(s.stream.holdback_tokens),
        _show(s.limits.requests_per_minute), _show(s.limits.tokens_per_minute),
        _show(s.audit.log_prompt_text), f"{s.fluency.sample_rate:g}",
        "-" if (e := s.experiment) is None else f"{e.name}: {'/'.join(a.name for a in e.arms)}",
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _flat(settings: PolicySettings) -> dict[str, Any]:
    return {
        f"{section}.{key}": value
        for section, fields in settings.model_dump(exclude={"experiment"}).items()
        for key, value in fields.items()
    }


def _experiment(experiment: Experiment | None, indent: str) -> list[str]:
    """An experiment as its arms' shares, so what each unit may get reads at a glance."""
    if experiment is None:
        return [f"{indent}experiment = -"]
    e = experiment
    state = " PAUSED: everyone gets the control arm" if e.paused else ""
    unit = f"header {e.header}" if e.unit == "header" else e.unit
    lines = [f"{indent}experiment = {e.name} (unit {unit}, control {e.control}, on_override {e.on_override}, "
             f"salt {e.salt!r}){state}"]
    total = sum(a.weight for a in e.arms)
    for arm in e.arms:
        n = len(arm.interventions or [])
        steering = f"tier {arm.tier}" if arm.tier is not None else f"{n} interventions"
        share = f"{100 * arm.weight / total:.1f}% ({arm.weight:g})"
        lines.append(f"{indent}  arm {arm.name}: {share}, {steering}")
    return lines


def _explain(policy: Policy) -> list[str]:
    base = _flat(policy.settings())
    lines = [f"policy {policy.name}" + (f" (extends {policy.extends})" if policy.extends else "")]
    lines += [f"  {key} = {_show(value)}" for key, value in base.items()]
    lines += _experiment(policy.experiment, "  ")
    for model, settings in policy.models.items():
        changed = {k: v for k, v in _flat(settings).items() if v != base[k]}
        other = settings.experiment != policy.experiment
        lines.append(f"  for model {model}:" + ("" if changed or other else " (no differences)"))
        lines += [f"    {key} = {_show(value)}" for key, value in changed.items()]
        lines += _experiment(settings.experiment, "    ") if other else []
    return lines


def summary(policies: PolicySet, *, explain: bool = False) -> str:
    """The report printed for a valid file."""
    lines = [f"OK: {len(policies.policies)} policies, {len(policies.tenants)} tenants", "tenants:"]
    for tenant in policies.tenants.values():
        notes = [f"{len(tenant.key_hashes)} key{'s' if len(tenant.key_hashes) != 1 else ''}"]
        if tenant.name == policies.anonymous_tenant:
            notes.insert(0, "anonymous")
        lines.append(f"  {tenant.name} -> {tenant.policy} ({', '.join(notes)})")
    rows = [list(_COLUMNS)]
    for policy in policies.policies.values():
        rows.append(_row(policy.name, policy.extends, policy))
        rows += [_row(f"  model {model}", None, s) for model, s in policy.models.items()]
    lines += ["policies:", *_table(rows)]
    if explain:
        for policy in policies.policies.values():
            lines += ["", *_explain(policy)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Exit status: 0 valid, 1 invalid file, 2 bad usage."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(prog="steergate policy check", description="Validate a policy file.")
    parser.add_argument("file", help="policy file (YAML)")
    parser.add_argument("--explain", action="store_true", help="print every resolved setting of every policy")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        policies = load_policies(args.file)
    except PolicyFileError as error:
        print(error, file=err)
        return 1
    print(summary(policies, explain=args.explain), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
