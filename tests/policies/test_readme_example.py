"""The README's worked policy example is a valid policy file that means what the README says."""

from __future__ import annotations

import re
from pathlib import Path

from policies import hash_key, parse_policy_text

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_worked_example_validates_and_inherits() -> None:
    text = README.read_text()
    section = text[text.index("A worked example"):]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    ps = parse_policy_text(example, "README.md")
    kids = ps.policies["kids-app"]
    assert (kids.actions.prompt, kids.actions.completion, kids.steering.tier) == ("block", "stop", "medium")
    assert kids.limits.tokens_per_minute == 200000  # inherited from base
    assert kids.for_model("smollm2-135m-instruct").detection.completion_threshold == 0.4
    assert ps.authenticate("Bearer sk-acme-example").name == "acme"
    assert hash_key("sk-acme-example") in ps.tenants["acme"].key_hashes
