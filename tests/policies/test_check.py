"""`steergate policy check`: exit codes and output."""

from __future__ import annotations

import io
from pathlib import Path

from policies.check import main
from tests.policies.builders import write_policy_file

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_valid_file(tmp_path: Path) -> None:
    path = write_policy_file(
        tmp_path / "p.yaml",
        policies={"default": {"models": {"big": {"actions": {"completion": "stop"}}}},
                  "strict": {"extends": "default", "steering": {"tier": "strong"}}},
        tenants={"public": {"policy": "default"}, "acme": {"policy": "strict", "keys": ["k1", "k2"]}},
    )
    code, out, err = run(str(path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "OK: 2 policies, 2 tenants"
    assert "  public -> default (anonymous, 0 keys)" in lines
    assert "  acme -> strict (2 keys)" in lines
    assert any(line.split()[:5] == ["model", "big", "-", "annotate", "stop"] for line in lines)
    assert "k1" not in out


def test_explain_lists_resolved_settings(tmp_path: Path) -> None:
    path = write_policy_file(tmp_path / "p.yaml", policies={
        "default": {"models": {"big": {"stream": {"holdback_tokens": 0}}}}})
    code, out, _ = run(str(path), "--explain")
    assert code == 0
    assert "policy default" in out
    assert "  steering.tier = light" in out
    assert "  for model big:\n    stream.holdback_tokens = 0" in out


def test_invalid_file(tmp_path: Path) -> None:
    path = write_policy_file(tmp_path / "p.yaml", policies={"default": {"actions": {"prompt": "deny"}}})
    code, out, err = run(str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}: policies.default.actions.prompt: ")


def test_shipped_files_and_usage() -> None:
    assert run(str(ROOT / "deploy" / "policies.yaml"))[0] == 0
    assert run(str(ROOT / "policies" / "default.yaml"))[0] == 0
    assert run()[0] == 2
    assert run("missing-file.yaml")[0] == 1
