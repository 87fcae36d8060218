"""Audit lines: one JSON object per line, text only when opted in, logger fallback."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from policies.audit import AUDIT_LOGGER, AuditLog, audit_event


def build_event(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "request_id": "req-1", "tenant": "acme", "policy": "strict", "event": "block", "phase": "prompt",
        "action": "block", "model": "m", "prompt_score": 0.9, "prompt_text": "you are awful",
        "completion_text": None,
    }
    return audit_event(**{**args, **overrides})


def test_event_fields_without_text() -> None:
    event = build_event()
    assert set(event) == {
        "time", "request_id", "tenant", "policy", "experiment", "arm", "event", "phase", "scores", "action", "model",
    }
    assert event["scores"] == {"prompt": 0.9, "completion": None}
    assert event["time"].endswith("Z")
    assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")).utcoffset() == timedelta(0)


def test_text_only_when_opted_in() -> None:
    event = build_event(include_text=True, completion_text="done")
    assert event["prompt"] == "you are awful"
    assert event["completion"] == "done"
    assert "completion" not in build_event(include_text=True)  # not given, not added


def test_file_lines_are_whole_json(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(str(path)) as log:
        def writer(i: int) -> None:
            # Lines longer than a pipe buffer: each must still land whole.
            for j in range(20):
                log.write(build_event(request_id=f"{i}-{j}", prompt_text="x" * 5000, include_text=True))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.write({"event": "flag"})  # a record without time gets one
    lines = path.read_text().splitlines()
    assert len(lines) == 161
    records = [json.loads(line) for line in lines]
    assert len({r["request_id"] for r in records[:-1]}) == 160
    assert "time" in records[-1]
    with pytest.raises(ValueError, match="closed"):
        log.write(build_event())


def test_no_path_logs_to_the_audit_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        AuditLog(None).write(build_event())
    [record] = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert json.loads(record.getMessage())["tenant"] == "acme"
    assert "you are awful" not in record.getMessage()
