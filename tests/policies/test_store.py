"""The live policy store: reloads, keeping the old set on a bad file, and the file watcher."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.loader import PolicyFileError
from policies.store import PolicyStore
from tests.policies.builders import atomic_write, write_policy_file


def strict(threshold: float) -> dict[str, object]:
    return {"default": {"detection": {"prompt_threshold": threshold}}}


class Calls(list[tuple[bool, str | None]]):
    def __call__(self, ok: bool, message: str | None) -> None:
        self.append((ok, message))


def test_builtin_default() -> None:
    store = PolicyStore(None)
    assert store.current.anonymous_tenant == "public"
    assert store.reload() is True
    store.start_watching()  # nothing to watch: a no-op
    store.stop()


def test_invalid_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\n")
    with pytest.raises(PolicyFileError):
        PolicyStore(path)
    with pytest.raises(PolicyFileError, match="cannot read"):
        PolicyStore(tmp_path / "missing.yaml")


def test_reload_success_and_failure(tmp_path: Path) -> None:
    path = write_policy_file(tmp_path / "p.yaml", policies=strict(0.3))
    calls = Calls()
    store = PolicyStore(path, on_reload=calls)
    first = store.current
    write_policy_file(path, policies=strict(0.7))
    assert store.reload() is True
    assert calls == [(True, None)]
    assert store.current.policies["default"].detection.prompt_threshold == 0.7
    assert first.policies["default"].detection.prompt_threshold == 0.3  # a held set never changes

    kept = store.current
    path.write_text("version: 1\npolicies: {default: {detection: {prompt_threshold: 3}}}\ntenants: {}\n")
    assert store.reload() is False
    assert store.current is kept
    ok, message = calls[-1]
    assert not ok and message is not None and "policies.default.detection.prompt_threshold" in message


def test_callback_errors_do_not_break_reload(tmp_path: Path) -> None:
    def broken(ok: bool, message: str | None) -> None:
        raise RuntimeError("boom")

    store = PolicyStore(write_policy_file(tmp_path / "p.yaml"), on_reload=broken)
    assert store.reload() is True


def wait_for(condition: Callable[[], object], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_watcher_picks_up_changes(tmp_path: Path) -> None:
    path = write_policy_file(tmp_path / "p.yaml", policies=strict(0.3))
    calls = Calls()
    store = PolicyStore(path, on_reload=calls)
    store.start_watching(interval_s=0.05)
    try:
        write_policy_file(path, policies=strict(0.8))
        assert wait_for(lambda: store.current.policies["default"].detection.prompt_threshold == 0.8)

        atomic_write(path, "not: [valid")
        assert wait_for(lambda: calls and calls[-1][0] is False)
        time.sleep(0.3)
        assert [ok for ok, _ in calls] == [True, False]  # a bad file is reported once, not every poll
        assert store.current.policies["default"].detection.prompt_threshold == 0.8

        path.unlink()
        assert wait_for(lambda: len(calls) == 3)  # a missing file is reported (once) too
        write_policy_file(path, policies=strict(0.1))
        assert wait_for(lambda: store.current.policies["default"].detection.prompt_threshold == 0.1)
    finally:
        store.stop()
    assert [ok for ok, _ in calls] == [True, False, False, True]
