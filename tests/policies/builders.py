"""Small policy files for unit tests: a valid base to change one thing in."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from policies.loader import PolicySet, parse_policies

__all__ = ["atomic_write", "build_policy_data", "build_policy_set", "write_policy_file"]


def build_policy_data(**overrides: Any) -> dict[str, Any]:
    """A minimal valid file: a `default` policy, an anonymous `public` tenant; overrides replace keys."""
    data: dict[str, Any] = {
        "version": 1,
        "anonymous_tenant": "public",
        "policies": {"default": {}},
        "tenants": {"public": {"policy": "default"}},
    }
    data.update(copy.deepcopy(overrides))
    return data


def build_policy_set(**overrides: Any) -> PolicySet:
    return parse_policies(build_policy_data(**overrides), "test.yaml")


def atomic_write(path: Path, text: str) -> None:
    # Replace, not rewrite in place: a watcher polling mid-write would see a truncated file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_policy_file(path: Path, **overrides: Any) -> Path:
    atomic_write(path, yaml.safe_dump(build_policy_data(**overrides), sort_keys=False))
    return path
