"""Per-request stage timestamps for the TTFT breakdown (opt-in: STEERGATE_TRACE_TIMINGS, see
middleware/settings.py), written by the ingress as one JSON line per streamed request.

Stamps are wall-clock seconds (time.time()), so stamps taken in the ingress and in the model server
(another process on the same machine) compare. The stages, in the order a request passes them:
  arrived                     the ingress' handler starts (after the HTTP front and Serve's routing)
  policy_validated            tenant, policy, rate limit, body validation done; next: the handle call
  model_server_entry          the model server's engine starts on the request (after the handle hop)
  vllm_prompt_ready           vLLM's serving layer has templated and tokenized the prompt
  model_server_first_chunk    the first stream chunk leaves the postprocessor (the engine's first output:
                              queue + prefill + first decode + side channel)
  model_server_first_content  the first chunk with generated text leaves it
  ingress_first_content       the ingress hands that chunk to the HTTP response
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from middleware.settings import trace_timings_file

__all__ = ["STAGES", "TimingTrace", "stamp"]

# The stages after `arrived`, in the order a request passes them (the docstring above says what each is).
STAGES = ["policy_validated", "model_server_entry", "vllm_prompt_ready", "model_server_first_chunk",
          "model_server_first_content", "ingress_first_content"]


def stamp(stamps: dict[str, float] | None, stage: str) -> None:
    """Record `stage` now, when this request is traced."""
    if stamps is not None:
        stamps[stage] = time.time()


class TimingTrace:
    """Appends traced requests' stamps to the file STEERGATE_TRACE_TIMINGS names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_settings(cls) -> TimingTrace | None:
        path = trace_timings_file()
        return cls(path) if path else None

    def write(self, stamps: dict[str, float]) -> None:
        # One short line per write on a file opened for appending: lines from several ingress
        # replicas do not interleave.
        with self.path.open("a") as f:
            f.write(json.dumps(stamps) + "\n")
