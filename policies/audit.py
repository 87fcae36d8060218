"""The audit log: one JSON line per flagged, blocked or stopped request, for later review.

Lines are written with a single `os.write` on a file opened with O_APPEND, so a line is never
interleaved with another, even with several ingress processes appending to the same file.
Prompt and completion text are left out unless the policy opts in (`audit.log_prompt_text`):
an audit log is often kept longer and read more widely than the traffic it describes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = ["AUDIT_LOGGER", "AuditEvent", "AuditPhase", "AuditLog", "audit_event"]

AUDIT_LOGGER = "steergate.audit"

AuditEvent = Literal["flag", "block", "stop"]
AuditPhase = Literal["prompt", "completion"]


def _utc_now() -> str:
    now = datetime.now(timezone.utc)  # noqa: UP017 - datetime.UTC needs 3.11; pyproject allows 3.10
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_event(
    *,
    request_id: str,
    tenant: str,
    policy: str,
    event: AuditEvent,
    phase: AuditPhase,
    action: str,
    model: str,
    prompt_score: float | None,
    completion_score: float | None = None,
    experiment: str | None = None,
    arm: str | None = None,
    prompt_text: str | None = None,
    completion_text: str | None = None,
    include_text: bool = False,
    time: str | None = None,
) -> dict[str, Any]:
    """One audit record. Text fields are added only with `include_text` (policy `audit.log_prompt_text`)."""
    record: dict[str, Any] = {
        "time": time or _utc_now(),
        "request_id": request_id,
        "tenant": tenant,
        "policy": policy,
        "experiment": experiment,
        "arm": arm,
        "event": event,
        "phase": phase,
        "scores": {"prompt": prompt_score, "completion": completion_score},
        "action": action,
        "model": model,
    }
    if include_text:
        if prompt_text is not None:
            record["prompt"] = prompt_text
        if completion_text is not None:
            record["completion"] = completion_text
    return record


class AuditLog:
    """Appends audit records as JSON lines to `path`, or to the "steergate.audit" logger when path is None."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._logger = logging.getLogger(AUDIT_LOGGER)
        # Opened once, at start-up: an unwritable audit path should stop the server, not fail per request.
        self._fd: int | None = (
            os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if path is not None else None
        )

    def write(self, event: dict[str, Any]) -> None:
        record = event if "time" in event else {"time": _utc_now(), **event}
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        if self.path is None:
            self._logger.info(line)
            return
        data = (line + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise ValueError("audit log is closed")
            # One write call per line: O_APPEND makes each write land whole at the end of the file.
            os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
