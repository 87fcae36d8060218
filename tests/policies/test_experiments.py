"""Experiments in the policy file: validation with field paths, inheritance, and arm assignment
(sticky, weighted, minimal movement on reweighting, pause, tenant isolation, overrides)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from policies.experiments import assign, choose_arm, labels, unit_key
from policies.loader import PolicyFileError
from policies.overrides import OverrideForbidden
from policies.schema import OVERRIDE_ARM, Experiment
from policies.store import PolicyStore
from tests.policies.builders import build_policy_set, write_policy_file

ROOT = Path(__file__).resolve().parents[2]


def build_experiment(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "strength", "control": "light",
        "arms": [{"name": "light", "tier": "light", "weight": 50},
                 {"name": "medium", "tier": "medium", "weight": 50}],
    }
    return data | overrides


def experiment(**overrides: Any) -> Experiment:
    return Experiment.model_validate(build_experiment(**overrides))


def problems(experiment_data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(PolicyFileError) as info:
        build_policy_set(policies={"default": {"experiment": experiment_data}})
    return dict(info.value.problems)


def binomial_bound(n: int, p: float, z: float = 3.3) -> float:
    """Half-width of a ~99.9% normal interval for a count of n trials at rate p."""
    return z * math.sqrt(n * p * (1 - p))


# ---- validation ------------------------------------------------------------------------------

def test_bad_experiments_are_errors_with_their_field_path() -> None:
    arms = build_experiment()["arms"]
    base = "policies.default.experiment"
    assert "greater than 0" in problems(build_experiment(arms=[arms[0] | {"weight": 0}, arms[1]]))[
        f"{base}.arms.0.weight"]
    assert "greater than 0" in problems(build_experiment(arms=[arms[0], arms[1] | {"weight": -1}]))[
        f"{base}.arms.1.weight"]
    assert "'off', 'light', 'medium' or 'strong'" in problems(build_experiment(
        arms=[arms[0], arms[1] | {"tier": "extreme"}]))[f"{base}.arms.1.tier"]
    assert problems(build_experiment(arms=[arms[0], arms[1] | {"name": "light"}])) == {
        f"{base}.arms.1.name": "duplicate arm 'light'"}
    header = f"{base}.header"
    assert "required when unit is 'header'" in problems(build_experiment(unit="header"))[header]
    assert "only read when unit is 'header'" in problems(build_experiment(header="x-session"))[header]
    assert "unknown arm 'strong'" in problems(build_experiment(control="strong"))[f"{base}.control"]
    assert "reserved" in problems(build_experiment(arms=[arms[0], arms[1] | {"name": OVERRIDE_ARM}]))[
        f"{base}.arms.1.name"]
    both = arms[1] | {"interventions": [{"feature": 3, "mode": "ablate"}]}
    assert "exactly one of" in problems(build_experiment(arms=[arms[0], both]))[f"{base}.arms.1"]
    assert "credentials" in problems(build_experiment(unit="header", header="Authorization"))[header]
    assert "unknown field" in problems(build_experiment(sticky="user"))[f"{base}.sticky"]
    assert f"{base}.arms" in problems(build_experiment(arms=arms[:1]))  # an experiment compares arms


def test_problems_in_per_model_experiments_name_the_model() -> None:
    data = build_experiment(control="nope")
    with pytest.raises(PolicyFileError) as info:
        build_policy_set(policies={"default": {"models": {"m": {"experiment": data}}}})
    assert "policies.default.models.m.experiment.control" in dict(info.value.problems)


def test_an_experiment_is_inherited_whole_and_replaced_whole() -> None:
    other = build_experiment(name="other", arms=[{"name": "light", "tier": "light", "weight": 1},
                                                 {"name": "strong", "tier": "strong", "weight": 3}])
    policies = build_policy_set(policies={
        "base": {"experiment": build_experiment(salt="s1", unit="tenant")},
        "child": {"extends": "base", "steering": {"tier": "strong"}},
        "replaced": {"extends": "base", "experiment": other},
        "none": {"extends": "base", "experiment": None},
        "per-model": {"extends": "base", "models": {"m": {"experiment": None}}},
    }, tenants={"public": {"policy": "base"}}).policies
    assert policies["child"].experiment == policies["base"].experiment
    # Nothing of the parent's experiment (salt, unit) leaks into one written anew.
    replaced = policies["replaced"].experiment
    assert replaced is not None and (replaced.name, replaced.salt, replaced.unit) == ("other", "", "user")
    assert policies["none"].experiment is None
    assert policies["per-model"].for_model("m").experiment is None
    assert policies["per-model"].for_model("n").experiment == policies["base"].experiment


def test_labels_are_the_arms_from_the_file() -> None:
    data = {"default": {"experiment": build_experiment(on_override="record")}}
    policy = build_policy_set(policies=data).policies["default"]
    arms = [("strength", "light"), ("strength", "medium"), ("strength", OVERRIDE_ARM)]
    assert labels(policy) == [("", ""), *arms]


def test_a_hot_reload_of_a_bad_experiment_keeps_the_old_one(tmp_path: Path) -> None:
    path = write_policy_file(tmp_path / "p.yaml", policies={"default": {"experiment": build_experiment()}})
    store = PolicyStore(path)
    kept = store.current
    arms = build_experiment()["arms"]
    bad = build_experiment(arms=[arms[0] | {"weight": 0}, arms[1]])
    write_policy_file(path, policies={"default": {"experiment": bad}})
    assert store.reload() is False
    assert store.current is kept and kept.policies["default"].experiment == experiment()


# ---- assignment -----------------------------------------------------------------------------

UNITS = [f"acme\x00user-{i}" for i in range(20_000)]


def test_weights_are_respected_within_a_binomial_bound() -> None:
    for weights in ((50, 50), (70, 30), (1, 9)):
        e = experiment(arms=[{"name": "light", "tier": "light", "weight": weights[0]},
                             {"name": "medium", "tier": "medium", "weight": weights[1]}])
        got = Counter(choose_arm(e, u).name for u in UNITS)
        p = weights[0] / sum(weights)
        assert abs(got["light"] - p * len(UNITS)) < binomial_bound(len(UNITS), p), (weights, got)


def test_reweighting_50_50_to_70_30_moves_only_units_that_must_move() -> None:
    before, after = experiment(), experiment(arms=[{"name": "light", "tier": "light", "weight": 70},
                                                   {"name": "medium", "tier": "medium", "weight": 30}])
    moves = Counter((choose_arm(before, u).name, choose_arm(after, u).name) for u in UNITS)
    assert moves[("light", "medium")] == 0  # no unit of the arm that grows is reshuffled
    # The units that move are the 20% that must: medium's share goes from 50% to 30%.
    assert abs(moves[("medium", "light")] - 0.2 * len(UNITS)) < binomial_bound(len(UNITS), 0.2)


def test_adding_an_arm_takes_units_only_for_the_new_arm() -> None:
    before = experiment()
    after = experiment(arms=[*build_experiment()["arms"], {"name": "strong", "tier": "strong", "weight": 25}])
    moved = [(choose_arm(before, u).name, choose_arm(after, u).name) for u in UNITS]
    assert all(b == a or a == "strong" for b, a in moved)
    assert abs(sum(a == "strong" for _, a in moved) - 0.2 * len(UNITS)) < binomial_bound(len(UNITS), 0.2)


def test_pause_gives_everyone_the_control_and_resume_gives_back_the_arms() -> None:
    running, paused = experiment(), experiment(paused=True)
    assert {choose_arm(paused, u).name for u in UNITS[:500]} == {"light"}
    assert [choose_arm(running, u).name for u in UNITS[:500]] == [
        choose_arm(experiment(), u).name for u in UNITS[:500]]


def test_salt_reshuffles() -> None:
    a, b = experiment(), experiment(salt="round-2")
    changed = sum(choose_arm(a, u).name != choose_arm(b, u).name for u in UNITS[:2000])
    assert abs(changed - 1000) < binomial_bound(2000, 0.5)


def test_assignment_is_the_same_in_another_process() -> None:
    """No process state (Python's salted hash(), import order) enters an assignment: what another
    ingress replica, or the gateway after a restart, computes is the same."""
    units = UNITS[:300]
    code = ("import json,sys; from policies.experiments import choose_arm;"
            "from policies.schema import Experiment; e=Experiment.model_validate(json.loads(sys.argv[1]));"
            "print(json.dumps([choose_arm(e,u).name for u in json.loads(sys.argv[2])]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(build_experiment()), json.dumps(units)],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert json.loads(out) == [choose_arm(experiment(), u).name for u in units]


def test_units_are_per_tenant_and_a_missing_unit_falls_back_to_the_request_id() -> None:
    e = experiment()
    assert unit_key(e, "acme", {"user": "bob"}, {}, "req-1") == ("acme\x00bob", True)
    assert unit_key(e, "acme", {}, {}, "req-1") == ("acme\x00request\x00req-1", False)
    assert unit_key(e, "acme", {"user": ""}, {}, "req-1")[1] is False
    assert unit_key(e, "acme", {"user": 42}, {}, "req-1")[1] is False  # not a string: not a unit
    header = experiment(unit="header", header="X-Session")
    assert header.header == "x-session"
    assert unit_key(header, "acme", {"user": "bob"}, {"x-session": "s1"}, "r") == ("acme\x00s1", True)
    assert unit_key(experiment(unit="tenant"), "acme", {"user": "bob"}, {}, "r") == ("acme", True)
    # The same user string under two tenants is two independent units.
    users = [f"user-{i}" for i in range(400)]
    same = sum(choose_arm(e, unit_key(e, "acme", {"user": u}, {}, "r")[0]).name
               == choose_arm(e, unit_key(e, "beta", {"user": u}, {}, "r")[0]).name for u in users)
    assert abs(same - 200) < binomial_bound(400, 0.5)


def test_overrides_are_refused_or_recorded_as_their_own_arm() -> None:
    def policy(allow: bool = True, **exp: Any) -> Any:
        data = {"experiment": build_experiment(**exp), "steering": {"allow_override": allow}}
        return build_policy_set(policies={"default": data}).policies["default"]

    refusing = policy()
    a = assign(refusing, "acme", {"user": "bob"}, {}, "r")
    assert a is not None and a.sticky
    own = {"tier": a.arm.tier}
    assert a.steering(refusing, None) == (own, a.arm.name)
    assert a.steering(refusing, own) == (own, a.arm.name)  # asking for your own arm is no override
    with pytest.raises(OverrideForbidden, match="runs experiment 'strength'"):
        a.steering(refusing, {"tier": "strong"})
    recording = policy(on_override="record")
    a = assign(recording, "acme", {"user": "bob"}, {}, "r")
    assert a is not None and a.steering(recording, {"tier": "strong"}) == ({"tier": "strong"}, OVERRIDE_ARM)
    # A recorded override still obeys the policy's own override rules.
    locked = policy(on_override="record", allow=False)
    a = assign(locked, "acme", {"user": "bob"}, {}, "r")
    with pytest.raises(OverrideForbidden, match="does not allow"):
        a.steering(locked, {"tier": "strong"})


def test_an_arm_with_interventions_steers_with_them() -> None:
    arms = [{"name": "light", "tier": "light", "weight": 1},
            {"name": "custom", "weight": 1,
             "interventions": [{"feature": 7, "mode": "clamp", "strength": -2}]}]
    e = experiment(arms=arms)
    assert e.arms[1].steering() == {"interventions": [{"feature": 7, "mode": "clamp", "strength": -2.0}]}
    assert assign(build_policy_set().policies["default"], "t", {}, {}, "r") is None  # no experiment


def test_the_shipped_ab_example_is_the_documented_experiment() -> None:
    from policies.loader import load_policies

    policies = load_policies(ROOT / "deploy" / "ab-example.yaml")
    public = policies.authenticate(None)  # no key: the anonymous tenant
    policy = policies.policy_for(public, "smollm2-135m-instruct")
    e = policy.experiment
    assert e is not None and (e.unit, e.control, e.paused) == ("user", "light", False)
    assert [(a.name, a.tier, a.weight) for a in e.arms] == [("light", "light", 50), ("medium", "medium", 50)]
    assert policy.fluency.sample_rate == 1.0
