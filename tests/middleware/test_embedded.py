"""The embedded model is converted from GGUF once; later starts reuse the cached directory."""

from __future__ import annotations

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


def test_gguf_is_found_in_the_installed_package() -> None:
    path = embedded.find_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
