"""Policy file loading: inheritance, per-model overrides, strictness and error reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.loader import PolicyFileError, load_policies, parse_policies, parse_policy_text
from policies.schema import PolicySettings
from policies.store import default_policy_bytes
from policies.tenants import hash_key
from tests.policies.builders import build_policy_data, build_policy_set

ROOT = Path(__file__).resolve().parents[2]


def problems_of(**overrides: object) -> dict[str, str]:
    with pytest.raises(PolicyFileError) as info:
        build_policy_set(**overrides)
    return dict(info.value.problems)


def test_shipped_default_matches_deploy_copy() -> None:
    deployed = load_policies(ROOT / "deploy" / "policies.yaml")
    packaged = parse_policy_text(default_policy_bytes().decode(), "<package>")
    assert deployed == packaged
    default = packaged.policies["default"]
    # The written `default` spells out the built-in defaults: no surprise between the two.
    assert default.settings() == PolicySettings()
    assert packaged.anonymous_tenant == "public"
    assert packaged.authenticate(None).policy == "default"
    assert packaged.policies["strict"].actions.prompt == "block"


def test_three_levels_of_inheritance() -> None:
    policies = build_policy_set(policies={
        "base": {"detection": {"prompt_threshold": 0.3}, "limits": {"requests_per_minute": 60}},
        "mid": {"extends": "base", "detection": {"completion_threshold": 0.7},
                "steering": {"tier": "medium"}},
        "leaf": {"extends": "mid", "detection": {"prompt_threshold": 0.9},
                 "limits": {"requests_per_minute": None}},
    }, tenants={"public": {"policy": "leaf"}}).policies
    leaf = policies["leaf"]
    assert leaf.detection.prompt_threshold == 0.9  # the child's value wins
    assert leaf.detection.completion_threshold == 0.7  # sibling field from the parent survives the deep merge
    assert leaf.steering.tier == "medium"
    assert leaf.steering.allow_override is True  # built-in default at the root
    assert leaf.limits.requests_per_minute is None  # an explicit null overrides too
    assert policies["mid"].limits.requests_per_minute == 60
    assert policies["base"].steering.tier == "light"
    assert leaf.extends == "mid"


def test_per_model_overrides_inherit_and_layer() -> None:
    policies = build_policy_set(policies={
        "parent": {
            "stream": {"holdback_tokens": 4},
            "models": {"big": {"stream": {"holdback_tokens": 32}, "detection": {"prompt_threshold": 0.2}}},
        },
        "child": {
            "extends": "parent",
            "detection": {"prompt_threshold": 0.6},
            "models": {"big": {"actions": {"prompt": "block"}}, "small": {"steering": {"tier": "off"}}},
        },
    }, tenants={"public": {"policy": "child"}}).policies
    parent, child = policies["parent"], policies["child"]
    assert parent.for_model("big").stream.holdback_tokens == 32
    assert parent.for_model("other") is parent
    big = child.for_model("big")
    assert big.stream.holdback_tokens == 32  # inherited from the parent's per-model override
    assert big.actions.prompt == "block"  # the child's own per-model override
    assert big.detection.prompt_threshold == 0.6  # what the child writes beats the parent's model override
    assert big.name == "child"
    assert child.for_model("small").steering.tier == "off"
    assert child.for_model("small").stream.holdback_tokens == 4
    assert child.for_model("none").actions.prompt == "annotate"
    assert big.for_model("big") == big  # applying twice changes nothing


@pytest.mark.parametrize("chain, cycle", [
    ({"a": "b", "b": "c", "c": "a"}, "a -> b -> c -> a"),
    ({"a": "a"}, "a -> a"),
])
def test_inheritance_cycle_is_named(chain: dict[str, str], cycle: str) -> None:
    problems = problems_of(policies={"default": {}, **{k: {"extends": v} for k, v in chain.items()}})
    assert list(problems.values()) == [f"inheritance cycle: {cycle}"]
    assert next(iter(problems)).endswith(".extends")


def test_unknown_references() -> None:
    problems = problems_of(
        policies={"default": {}, "child": {"extends": "nope"}},
        tenants={"public": {"policy": "missing"}},
        anonymous_tenant="ghost",
    )
    assert problems == {
        "policies.child.extends": "unknown policy 'nope'",
        "tenants.public.policy": "unknown policy 'missing'",
        "anonymous_tenant": "unknown tenant 'ghost'",
    }


@pytest.mark.parametrize("policy, path", [
    ({"actoins": {}}, "policies.default.actoins"),
    ({"steering": {"teir": "light"}}, "policies.default.steering.teir"),
    ({"models": {"m": {"stream": {"holdbak_tokens": 1}}}}, "policies.default.models.m.stream.holdbak_tokens"),
    ({"models": {"m": {"extends": "default"}}}, "policies.default.models.m.extends"),
])
def test_typo_is_an_error_with_its_path(policy: dict[str, object], path: str) -> None:
    assert problems_of(policies={"default": policy}) == {path: "unknown field (check the spelling)"}


def test_every_problem_is_listed_with_its_path() -> None:
    data = build_policy_data(policies={"default": {
        "detection": {"prompt_threshold": 1.5, "completion_threshold": -0.1},
        "actions": {"prompt": "deny", "completion": "block"},
        "stream": {"holdback_tokens": 300},
        "limits": {"requests_per_minute": 0, "tokens_per_minute": -5},
        "steering": {"tier": None, "max_abs_strength": -1},
    }}, typo=1)
    with pytest.raises(PolicyFileError) as info:
        parse_policies(data, "p.yaml")
    problems = dict(info.value.problems)
    assert set(problems) == {
        "policies.default.detection.prompt_threshold", "policies.default.detection.completion_threshold",
        "policies.default.actions.prompt", "policies.default.actions.completion",
        "policies.default.stream.holdback_tokens",
        "policies.default.limits.requests_per_minute", "policies.default.limits.tokens_per_minute",
        "policies.default.steering.tier", "policies.default.steering.max_abs_strength", "typo",
    }
    assert "'annotate' or 'block'" in problems["policies.default.actions.prompt"]
    lines = str(info.value).splitlines()
    assert len(lines) == len(problems)
    assert "p.yaml: policies.default.actions.prompt: " in str(info.value)
    assert all(line.startswith("p.yaml: ") for line in lines)


@pytest.mark.parametrize("overrides, path", [
    ({"tenants": {"bad name": {"policy": "default"}}, "anonymous_tenant": None}, "tenants.bad name"),
    ({"policies": {"default": {}, "a/b": {}}}, "policies.a/b"),
    ({"version": 2}, "version"),
    ({"tenants": {}}, "tenants"),
])
def test_structural_errors(overrides: dict[str, object], path: str) -> None:
    assert path in problems_of(**overrides)


def test_missing_required_fields() -> None:
    with pytest.raises(PolicyFileError) as info:
        parse_policies({}, "empty.yaml")
    missing = "required field is missing"
    assert dict(info.value.problems) == {"version": missing, "policies": missing, "tenants": missing}


def test_keys_are_validated_and_never_echoed() -> None:
    secret = "s3cret-key"
    problems = problems_of(tenants={
        "public": {"policy": "default", "keys": [secret, "sha256:" + "A" * 64, "sha256:abc", "two words"]},
        "acme": {"policy": "default", "keys": [hash_key(secret)]},
    })
    assert set(problems) == {"tenants.public.keys.1", "tenants.public.keys.2", "tenants.public.keys.3"}
    # Shape errors come first; once they are fixed, the shared key is found (plain vs hashed compare equal).
    problems = problems_of(tenants={
        "public": {"policy": "default", "keys": [secret]},
        "acme": {"policy": "default", "keys": ["other", hash_key(secret), "other"]},
    })
    assert problems == {
        "tenants.acme.keys.1": "the same API key is already listed under tenant 'public'",
        "tenants.acme.keys.2": "the same API key is already listed under keys.0",
    }
    assert secret not in str(problems)


def test_no_anonymous_tenant_needs_some_key() -> None:
    assert "anonymous_tenant" in problems_of(anonymous_tenant=None)
    policies = build_policy_set(anonymous_tenant=None, tenants={"acme": {"policy": "default", "keys": ["k"]}})
    assert policies.anonymous_tenant is None
    assert policies.keys == {hash_key("k"): policies.tenants["acme"]}


def test_yaml_errors_have_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\npolicies:\n  default: {}\n tenants: [\n")
    with pytest.raises(PolicyFileError) as info:
        load_policies(path)
    assert info.value.source == str(path)
    assert "invalid YAML at line 4" in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_duplicate_yaml_keys_are_errors() -> None:
    text = "version: 1\npolicies: {default: {}}\ntenants:\n  a: {policy: default}\n  a: {policy: default}\n"
    with pytest.raises(PolicyFileError, match="line 5.*duplicate key 'a'"):
        parse_policy_text(text, "dup.yaml")


def test_missing_file_and_bad_top_level(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read policy file"):
        load_policies(tmp_path / "nope.yaml")
    with pytest.raises(PolicyFileError, match="expected a mapping"):
        parse_policy_text("- 1\n- 2\n", "list.yaml")


def test_flagged_is_at_or_above_the_threshold() -> None:
    detection = build_policy_set(policies={"default": {"detection": {"prompt_threshold": 0.4}}}).policies[
        "default"].detection
    assert detection.prompt_flagged(0.4) and not detection.prompt_flagged(0.39)
    assert detection.completion_flagged(0.5) and not detection.completion_flagged(0.49)
