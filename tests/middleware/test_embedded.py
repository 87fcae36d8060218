"""The embedded model is converted from GGUF once; later starts reuse the cached directory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from middleware import embedded


def test_converts_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert", fake_convert)
    first = embedded.embedded_model_dir(tmp_path)
    second = embedded.embedded_model_dir(tmp_path)
    assert first == second == tmp_path / embedded.EMBEDDED_MODEL_NAME
    assert len(calls) == 1 and (first / "config.json").exists()


def test_half_finished_conversion_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / embedded.EMBEDDED_MODEL_NAME
    target.mkdir()
    (target / "model.safetensors").write_text("truncated")  # no done-marker: a crash mid-conversion
    monkeypatch.setattr(embedded, "_convert", lambda gguf, out: (out / "config.json").write_text("{}"))
    embedded.embedded_model_dir(tmp_path)
    assert (target / "config.json").exists() and not (target / "model.safetensors").exists()


def test_two_processes_starting_at_once_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen: `steergate labels` started twice at once; the second conversion replaced the directory
    # while the first process was loading its tokenizer from it. The lock is per open file, so two
    # threads contend as two processes do.
    calls: list[Path] = []

    def slow_convert(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        time.sleep(0.3)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert", slow_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(embedded.embedded_model_dir(tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and len(calls) == 1
    assert all((r / "config.json").exists() for r in results)


def test_gguf_is_found_in_the_installed_package() -> None:
    path = embedded.find_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
