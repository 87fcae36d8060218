"""Opt-in stage stamps (STEERGATE_TRACE_TIMINGS): off by default, one JSON line per traced request, and
the model server hands its stamps to the first chunk with content only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.engine.base import SSEChunk
from serving.engine.vllm_engine import VLLMEngine
from serving.timing_trace import TimingTrace, stamp


def test_off_unless_the_variable_names_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STEERGATE_TRACE_TIMINGS", raising=False)
    assert TimingTrace.from_settings() is None
    monkeypatch.setenv("STEERGATE_TRACE_TIMINGS", str(tmp_path / "t.jsonl"))
    trace = TimingTrace.from_settings()
    assert trace is not None and trace.path == tmp_path / "t.jsonl"


def test_stamps_are_written_one_line_per_request(tmp_path: Path) -> None:
    trace = TimingTrace(tmp_path / "t.jsonl")
    stamps: dict[str, float] = {}
    stamp(stamps, "arrived")
    stamp(stamps, "policy_validated")
    stamp(None, "ignored")  # an untraced request: nothing to do
    trace.write(stamps)
    trace.write({"arrived": 1.0})
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines[0].keys() == {"arrived", "policy_validated"}
    assert lines[0]["arrived"] <= lines[0]["policy_validated"]
    assert lines[1] == {"arrived": 1.0}


def test_model_server_stamps_ride_on_the_first_content_chunk() -> None:
    stamps: dict[str, float] | None = {"model_server_entry": 1.0}
    role = SSEChunk("data: {}\n\n", has_content=False)
    first, second = SSEChunk("data: {}\n\n", has_content=True), SSEChunk("data: {}\n\n", has_content=True)
    stamps = VLLMEngine._stamp_chunk(stamps, role)
    assert stamps is not None and role.timings is None
    stamps = VLLMEngine._stamp_chunk(stamps, first)
    assert stamps is None  # tracing of this request is done
    assert first.timings is not None
    assert list(first.timings) == ["model_server_entry", "model_server_first_chunk", "model_server_first_content"]
    assert first.timings["model_server_first_chunk"] <= first.timings["model_server_first_content"]
    assert second.timings is None
